"""One frozen configuration, built once: defaults < config file < environment < flags.

The config file is TOML (`$RAG_CONFIG`, else `<user config dir>/rag/config.toml`)
with the same keys as the dataclass fields. Environment variables are the field
names upper-cased with a `RAG_` prefix (`RAG_GENERATOR`, `RAG_DB`, ...).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import tomllib
from platformdirs import user_cache_dir, user_config_dir, user_data_dir

DEFAULT_GENERATOR = "mlx-community/Meta-Llama-3.1-8B-Instruct-4bit"
DEFAULT_EMBEDDER = "mlx-community/multilingual-e5-base-mlx"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and its source."""


@dataclass(frozen=True)
class Config:
    generator: str = DEFAULT_GENERATOR
    embedder: str = DEFAULT_EMBEDDER
    db: Path = Path(user_data_dir("rag")) / "db"
    cache_dir: Path = Path(user_cache_dir("rag")) / "models"
    # "auto": use the hub if reachable, else the offline pack; "pack": always the pack.
    models: str = "auto"
    hub_timeout: float = 3.0
    # 256 tokens: the offline MiniLM's trained length. Against 160 (overlap 24), with the
    # same retrieval, dev hit@5: covidqa 0.801 -> 0.818, xquad en 0.992 -> 0.997,
    # zh 0.977 -> 0.987, hi 0.940 -> 0.947, th 0.967 -> 0.964, ar 0.907 -> 0.905.
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    k: int = 6
    max_tokens: int = 512
    temperature: float = 0.0
    context_tokens: int = 6144
    min_relevance: float = 0.0
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str = ""
    # Uploads (web/jobs.py): one file, files per request, unfinished jobs, their bytes,
    # and the free disk the store keeps (past these: 413, 413, 429, 507, 507 per file).
    max_upload_mb: int = 100
    max_request_files: int = 100
    max_queued_jobs: int = 1000
    max_pending_mb: int = 4096
    min_free_mb: int = 256
    parse_timeout: float = 120.0
    # Generation engine (rag/engine.py): sequences decoding together, requests waiting
    # beyond them (past both: 503 with Retry-After), a time limit per answer, and the
    # longest prefill step (tokens) so that a long prompt does not stall the decoders.
    max_running: int = 8
    max_waiting: int = 32
    answer_time_limit: float = 600.0
    prefill_step: int = 256
    # A remote OpenAI-compatible chat endpoint instead of the local model (rag/remote.py):
    # its base URL (".../v1"), a key for it, and a tokenizer (hub id or folder) to count
    # the prompt's tokens with; without one the budget is counted from characters.
    generator_url: str = ""
    generator_api_key: str = ""
    generator_tokenizer: str = ""


def config_path(env: Mapping[str, str] | None = None) -> Path:
    explicit = (os.environ if env is None else env).get("RAG_CONFIG")
    return Path(explicit) if explicit else Path(user_config_dir("rag")) / "config.toml"


def _coerce(name: str, kind: Any, value: Any, source: str) -> Any:
    if value is None:
        return None
    try:
        if kind is Path or kind == "Path":
            return Path(value).expanduser()
        if kind is bool or kind == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: invalid value {value!r} in {source} ({exc})") from exc


def _layer(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    known = {f.name: f.type for f in fields(Config)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if key not in known:
            raise ConfigError(f"{key}: unknown setting in {source}")
        if value is not None:
            out[key] = _coerce(key, known[key], value, source)
    return out


def load_config(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                file: Path | None = None) -> Config:
    """Build the configuration; later layers override earlier ones."""
    env = os.environ if env is None else env
    file = config_path(env) if file is None else file
    merged: dict[str, Any] = {}
    if file.is_file():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML ({exc})") from exc
        merged.update(_layer(data, str(file)))
    names = {f.name for f in fields(Config)}
    from_env = {n: env[f"RAG_{n.upper()}"] for n in names if f"RAG_{n.upper()}" in env}
    merged.update(_layer(from_env, "environment"))
    merged.update(_layer(dict(flags or {}), "command-line flags"))
    config = Config(**merged)
    if config.models not in ("auto", "pack", "hub"):
        raise ConfigError(f"models: must be auto, pack or hub, not {config.models!r}")
    return config


def replace(config: Config, **changes: Any) -> Config:
    return dataclasses.replace(config, **changes)
