"""`rag bench ...`: benchmarks that print figures (never timed tests)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from rag.cli.common import config_options


@click.group()
def bench() -> None:
    """Benchmarks: BLAS and embeddings, the offline generator, ingestion."""


def _pack(config):
    from rag import pack

    return pack.pull(config.cache_dir, quiet=True)


@bench.command("models")
@config_options
def bench_models(config) -> None:
    """Matmul and MiniLM with the bundled BLAS vs the project's set-up; generator speed."""
    from rag.cli.bench import blas as b

    paths = _pack(config)
    table = Table(title="BLAS: bundled vs project set-up", show_edge=False)
    for column in ("measure", "bundled BLAS", "project set-up"):
        table.add_column(column)
    for row in b.blas_table(str(paths.embedder)):
        table.add_row(*row)
    Console().print(table)
    from rag.cli.bench import generator

    generator.main(["--cache", str(config.cache_dir)])


@bench.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--limit", type=int, help="Only the first N files (sorted by name).")
@config_options
def bench_ingest(paths, limit, config) -> None:
    """Ingest PATHS into a fresh temporary store and print rates and the time split."""
    from rag.cli.bench.ingest import run

    run(list(paths), config, limit=limit)
