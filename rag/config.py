"""One frozen configuration, built once: defaults < config file < environment < flags.

The config file is TOML (`$RAG_CONFIG`, else `<user config dir>/rag/config.toml`)
with the same keys as the dataclass fields. Environment variables are the field
names upper-cased with a `RAG_` prefix (`RAG_GENERATOR`, `RAG_DB`, ...).

`db` is a folder (a `Path`) or an object-store URI kept as a string
(`s3://bucket/prefix`, `gs://...`, `az://...`; `file:///x` is the folder /x).
`storage_options` (a TOML table, or a JSON object in `RAG_STORAGE_OPTIONS`)
goes to LanceDB with the URI: credentials and endpoint when the usual
environment variables (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...) are not used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib
from platformdirs import user_cache_dir, user_config_dir, user_data_dir

DEFAULT_GENERATOR = "mlx-community/Meta-Llama-3.1-8B-Instruct-4bit"
DEFAULT_EMBEDDER = "mlx-community/multilingual-e5-base-mlx"


# Object stores LanceDB opens (lance's object_store: S3 and compatible servers, S3 with a
# DynamoDB commit lock, Google Cloud Storage, Azure Blob Storage).
STORE_SCHEMES = ("s3", "s3+ddb", "gs", "az", "abfs", "abfss")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://(.*)$")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and its source."""


def store_location(value: str | Path) -> Path | str:
    """`db` as given: a folder (Path, `~` expanded; `file://` URIs too) or an object-store
    URI (kept as a string, without a trailing slash). ValueError says what is wrong."""
    if isinstance(value, Path):
        return value.expanduser()
    text = str(value).strip()
    found = _URI.match(text)
    if not found:
        if not text:
            raise ValueError("empty")
        path = Path(text).expanduser()
        if path.is_file():
            raise ValueError("a file, not a folder")
        return path
    scheme, rest = found.group(1).lower(), found.group(2).rstrip("/")
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError("a file:// URI needs an absolute path (file:///path/to/store)")
        return Path(rest)
    if scheme not in STORE_SCHEMES:
        raise ValueError(f"unknown storage scheme {scheme}:// (use a folder, file://,"
                         f" {', '.join(s + '://' for s in STORE_SCHEMES)})")
    if not rest.split("/", 1)[0]:
        raise ValueError(f"{scheme}:// needs a bucket: {scheme}://BUCKET/PREFIX")
    return f"{scheme}://{rest}"


def is_object_store(db: Path | str) -> bool:
    """True for an object-store URI (the store is then shared, not a local folder)."""
    return isinstance(db, str) and _URI.match(db) is not None


def _storage_options(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, Mapping):
        raise ValueError("must be a table of names and values (in the environment: a JSON"
                         " object)")
    return {str(k): (str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in value.items()}


@dataclass(frozen=True)
class Config:
    generator: str = DEFAULT_GENERATOR
    embedder: str = DEFAULT_EMBEDDER
    # A folder or an object-store URI (store_location); storage_options go to LanceDB.
    db: Path | str = Path(user_data_dir("rag")) / "db"
    storage_options: dict[str, str] = field(default_factory=dict)
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
    # OCR of PDF pages without a text layer (ingest/ocr.py): "auto" (the installed Tesseract
    # pack of each document's script), "off", or Tesseract's language codes ("eng+deu").
    ocr_languages: str = "auto"
    # Replicas sharing a store (web/jobs.py): a job's claim lasts job_lease_s unless its
    # replica renews it (every third of that); an idle replica looks for queued jobs,
    # and for claims that ran out, every job_poll_s.
    job_lease_s: float = 60.0
    job_poll_s: float = 5.0
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
    # Sentence-piece search past piece_table_chunks chunks (rag/store/pieces.py): an IVF-PQ
    # index searched in piece_nprobes partitions, the best piece_refine x limit candidates
    # re-ranked exactly. Measured by `rag bench scale` (README, "Search at scale").
    piece_table_chunks: int = 50_000
    piece_nprobes: int = 80
    piece_refine: int = 5


def config_path(env: Mapping[str, str] | None = None) -> Path:
    explicit = (os.environ if env is None else env).get("RAG_CONFIG")
    return Path(explicit) if explicit else Path(user_config_dir("rag")) / "config.toml"


def _coerce(name: str, kind: Any, value: Any, source: str) -> Any:
    if value is None:
        return None
    try:
        if name == "db":
            return store_location(value)
        if name == "storage_options":
            return _storage_options(value)
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
        shown = "(not shown)" if name == "storage_options" else repr(value)  # may hold keys
        raise ConfigError(f"{name}: invalid value {shown} in {source} ({exc})") from exc


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
    if config.job_lease_s <= 0 or config.job_poll_s <= 0:
        name = "job_lease_s" if config.job_lease_s <= 0 else "job_poll_s"
        raise ConfigError(f"{name}: must be a positive number of seconds")
    return config


def replace(config: Config, **changes: Any) -> Config:
    return dataclasses.replace(config, **changes)
