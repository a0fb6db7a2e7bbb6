"""`rag ingest PATH...`: progress bars, a summary table, a JSON report, meaningful exit codes."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from rag.cli.common import config_options


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--recursive/--no-recursive", default=True, show_default=True,
              help="Descend into sub-folders.")
@click.option("--include", multiple=True, metavar="GLOB", help="Only files matching (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files matching (repeatable).")
@click.option("--prune", is_flag=True, help="Remove stored documents whose files are gone.")
@click.option("--password", "passwords", multiple=True, metavar="P",
              help="Password for encrypted PDFs (repeatable; each is tried).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a JSON report with a row per file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              metavar="[ADDRESS]", callback=lambda ctx, param, value: _ray_address(value),
              help="Parse and embed on a Ray cluster: alone, a new one on this machine's cores;"
                   " or its address (auto, host:6379, ray://host:10001). Needs the cluster"
                   " extra. Put it after PATHS, or write --ray=ADDRESS.")
@config_options
def ingest(paths, recursive, include, exclude, prune, passwords, report, quiet, ray_address,
           config):
    """Ingest PDF, Markdown, HTML and text files from PATHS into the store."""
    from ingest import ingest_paths
    from rag import open_runtime

    for path in paths:
        if not path.exists():
            raise click.UsageError(f"{path}: no such file or folder")
    if ray_address:
        from ingest.distributed import require_ray

        with _cluster_errors():
            require_ray()  # before any model loads
    console = Console(stderr=True)
    runtime = open_runtime(config)
    columns = (TextColumn("{task.description:>6}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("[dim]{task.fields[rate]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=quiet, transient=False) as bars, \
            _fan_out(ray_address, runtime) as process:
        tasks = {name: bars.add_task(name, total=None, rate="") for name in
                 ("files", "pages", "chunks")}

        def progress(stage: str, done: int, total: int) -> None:
            task = tasks[stage]
            elapsed = bars.tasks[task].elapsed or 0.0
            rate = f"{done / elapsed:.1f}/s" if elapsed > 0.5 else ""
            bars.update(task, completed=done, total=total or None, rate=rate)

        result = ingest_paths(list(paths), runtime, recursive=recursive, include=include,
                              exclude=exclude, prune=prune, passwords=passwords,
                              progress=progress, process=process)
    _summary(console, result)
    if report:
        report.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        console.print(f"report written to {report}")
    sys.exit(0 if result.ok else 1)


def _ray_address(value: str | None) -> str | None:
    if value not in (None, "local", "auto") and Path(value).exists():  # `--ray PATH...`
        raise click.BadParameter(f"{value!r} is a path, not an address: put --ray after the"
                                 " paths, or write --ray=ADDRESS", param_hint="--ray")
    return value


@contextmanager
def _fan_out(address: str | None, runtime):
    """Where parse + chunk + embed run: this process (None) or a Ray cluster."""
    if address is None:
        yield None
        return
    from ingest.distributed import RayIngest

    with _cluster_errors(), RayIngest(runtime, address) as cluster:
        yield cluster


@contextmanager
def _cluster_errors():
    """Ray missing or unreachable, or no worker: one line, exit status 2 (nothing ingested)."""
    from ingest.distributed import ClusterError

    try:
        yield
    except ClusterError as exc:
        error = click.ClickException(str(exc))
        error.exit_code = 2
        raise error from exc


def _summary(console: Console, result) -> None:
    counts = result.counts()
    table = Table(title="ingestion summary", show_edge=False)
    for name in counts:
        table.add_column(name, justify="right")
    table.add_row(*(str(v) for v in counts.values()))
    console.print(table)
    if result.pruned:
        console.print(f"pruned {len(result.pruned)} documents whose files are gone")
    problems = [f for f in result.files if f.status in ("failed", "skipped")]
    if problems:
        issues = Table(show_edge=False, title="not ingested")
        issues.add_column("status")
        issues.add_column("file", overflow="fold")
        issues.add_column("reason", overflow="fold")
        for f in problems:
            issues.add_row(f.status, f.path, f.reason)
        console.print(issues)
    t = result.timings
    pages = sum(f.pages for f in result.files if f.status in ("ingested", "replaced"))
    chunks = sum(f.chunks for f in result.files if f.status in ("ingested", "replaced"))
    console.print(f"{pages} pages, {chunks} chunks in {t.total:.1f} s "
                  f"(parse wait {t.parse:.1f}, chunk {t.chunk:.1f}, embed {t.embed:.1f}, "
                  f"write {t.write:.1f}, index {t.index:.1f})")
