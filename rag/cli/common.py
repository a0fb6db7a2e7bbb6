"""Options shared by the subcommands, and the one place CLI errors become click errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from rag import Config, ConfigError, load_config


def config_options(func: Callable) -> Callable:
    """Add --db, --generator, --embedder and --offline; pass `config` to the command."""

    @click.option("--db", metavar="DIR|URI",
                  help="Store: a folder, or object storage (s3://BUCKET/PREFIX, gs://, az://;"
                       " credentials from AWS_* variables or storage_options in config.toml).")
    @click.option("--generator", help="Generator: mlx-lm hub id or local folder.")
    @click.option("--generator-url", metavar="URL",
                  help="Answer with a remote OpenAI-compatible endpoint (base URL, .../v1).")
    @click.option("--embedder", help="Embedder: mlx-embeddings hub id or local folder.")
    @click.option("--offline", is_flag=True, help="Use the offline model pack, never the hub.")
    @functools.wraps(func)
    def wrapper(*args: Any, db, generator, generator_url, embedder, offline, **kwargs: Any):
        flags = {"db": db, "generator": generator, "generator_url": generator_url,
                 "embedder": embedder, "models": "pack" if offline else None}
        kwargs["config"] = build_config(flags)
        return func(*args, **kwargs)

    return wrapper


def build_config(flags: dict[str, Any]) -> Config:
    try:
        return load_config({k: v for k, v in flags.items() if v is not None})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
