"""`rag bench ray`: the same files ingested on this process's path and on a Ray cluster.

Both runs write a fresh temporary store through `ingest_paths`; the figures compared
are its wall time (decide, parse, chunk, embed, write, index) and the CPU time each
path spent (on a shared machine wall time depends on how the scheduler splits the
cores: with autogroups Ray's workers, in their own session, get a share of their own).
The Ray run's cluster start (Ray itself, the workers loading their embedders) comes
before it and is reported apart. Per worker it prints the rate it processed batches
at; the projection for more nodes multiplies a node's rate (its workers' together)
and caps it at the rate this process received and wrote results at (the driver is
one process): a projection, not a measurement.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rag.config import Config, replace

PROJECTED_NODES = (1, 2, 4, 8, 16)


def run(paths: list[Path], config: Config, *, address: str | None = None,
        limit: int | None = None) -> dict:
    from ingest.distributed import RayIngest
    from ingest.pipeline import discover, ingest_paths
    from ingest.ray_worker import cpu_seconds
    from rag.runtime import Runtime, open_runtime
    from rag.store import Store

    files = discover(paths)
    if limit:
        files = sorted(files, key=lambda p: p.name)[:limit]
    console = Console()
    with tempfile.TemporaryDirectory(prefix="rag-bench-ray-") as tmp:
        runtime = open_runtime(replace(config, db=Path(tmp) / "local"))
        load, cpu = [os.getloadavg()[0]], [cpu_seconds()]
        local = ingest_paths(files, runtime)
        load.append(os.getloadavg()[0])
        cpu.append(cpu_seconds())
        # The driver's own embedder only names the store's model: share the loaded one.
        store = Store(Path(tmp) / "ray", runtime.embedder.dim, runtime.embedder.name)
        ray_runtime = Runtime(config=runtime.config, embedder=runtime.embedder, store=store)
        with RayIngest(ray_runtime, address) as cluster:
            start_s = cluster.start()
            load.append(os.getloadavg()[0])
            cpu.append(cpu_seconds())
            distributed = ingest_paths(files, ray_runtime, process=cluster)
            load.append(os.getloadavg()[0])
            cpu.append(cpu_seconds())
            workers = list(cluster.workers)
            waited = cluster.wait_s
    cpu_s = (cpu[1] - cpu[0], cpu[3] - cpu[2] + sum(w.cpu_s for w in workers))
    figures = _figures(local, distributed, start_s, workers, waited, load, cpu_s)
    _print(console, files, figures, workers)
    return figures


def _done(report) -> tuple[int, int]:
    stored = [f for f in report.files if f.status in ("ingested", "replaced")]
    return len(stored), sum(f.chunks for f in stored)


def _figures(local, distributed, start_s, workers, waited, load, cpu_s) -> dict:
    files, chunks = _done(local)
    ray_files, ray_chunks = _done(distributed)
    # The driver's busy time: everything but waiting for workers (receiving, writing, index).
    driver_s = max(distributed.timings.total - waited, 1e-9)
    per_worker = [w.chunks / w.busy_s if w.busy_s else 0.0 for w in workers]
    by_node: dict[str, float] = {}  # a node with more than 8 CPUs runs several workers
    for w, rate in zip(workers, per_worker):
        by_node[w.node] = by_node.get(w.node, 0.0) + rate
    node_rate = sum(by_node.values()) / len(by_node) if by_node else 0.0
    ceiling = ray_chunks / driver_s
    return {
        "files": files, "chunks": chunks, "ray_files": ray_files, "ray_chunks": ray_chunks,
        "local_s": local.timings.total, "ray_s": distributed.timings.total,
        "ratio": distributed.timings.total / local.timings.total,
        "cluster_start_s": start_s, "driver_busy_s": driver_s, "driver_chunks_per_s": ceiling,
        "local_cpu_s": cpu_s[0], "ray_cpu_s": cpu_s[1],
        "local_split": asdict(local.timings), "ray_split": asdict(distributed.timings),
        "worker_chunks_per_s": per_worker, "node_chunks_per_s": node_rate, "load_average": load,
        "projection": {n: min(n * node_rate, ceiling) for n in PROJECTED_NODES},
    }


def _print(console: Console, files, f: dict, workers) -> None:
    table = Table(title=f"ingestion of {len(files)} files: this process vs a Ray cluster",
                  show_edge=False)
    for column in ("measure", "local path", "Ray path"):
        table.add_column(column, justify="right")
    table.add_row("documents stored", str(f["files"]), str(f["ray_files"]))
    table.add_row("chunks", str(f["chunks"]), str(f["ray_chunks"]))
    table.add_row("ingest s (wall)", f"{f['local_s']:.1f}",
                  f"{f['ray_s']:.1f} ({f['ratio']:.2f}x)")
    table.add_row("chunks/s", f"{f['chunks'] / f['local_s']:.1f}",
                  f"{f['ray_chunks'] / f['ray_s']:.1f}")
    table.add_row("CPU s (processes, parsers)", f"{f['local_cpu_s']:.1f}",
                  f"{f['ray_cpu_s']:.1f} ({f['ray_cpu_s'] / f['local_cpu_s']:.2f}x)")
    for stage in ("parse", "chunk", "embed", "write"):
        table.add_row(f"  {stage} s" + (" (wait)" if stage == "parse" else ""),
                      f"{f['local_split'][stage]:.1f}", f"{f['ray_split'][stage]:.1f}")
    table.add_row("cluster start s (not above)", "-", f"{f['cluster_start_s']:.1f}")
    load = f["load_average"]
    table.add_row("1-min load average (start, end)", f"{load[0]:.1f}, {load[1]:.1f}",
                  f"{load[2]:.1f}, {load[3]:.1f}")
    console.print(table)

    side = Table(title="Ray workers (one per node, per 8 CPUs), measured", show_edge=False)
    for column in ("node", "CPUs", "embedder load s", "files", "chunks", "busy s", "chunks/s",
                   "tokens/s"):
        side.add_column(column, justify="right")
    for w, rate in zip(workers, f["worker_chunks_per_s"]):
        side.add_row(w.node, str(w.cpus), f"{w.load_s:.1f}", str(w.files), str(w.chunks),
                     f"{w.busy_s:.1f}", f"{rate:.1f}",
                     f"{w.tokens / w.busy_s:.0f}" if w.busy_s else "-")
    side.add_row("driver", "", "", "", "", f"{f['driver_busy_s']:.1f}",
                 f"{f['driver_chunks_per_s']:.1f}", "")
    console.print(side)
    console.print("driver: this process receiving, writing and indexing (its time not spent"
                  " waiting for workers). CPU s: the local path's process and parsers; the Ray"
                  " path's driver, workers and their parsers (Ray's own daemons not counted)."
                  " Ray's parse, chunk and embed seconds are the workers', summed.")

    console.print(f"PROJECTION, not measured: N worker nodes like this one, each at the"
                  f" measured rate of a node ({f['node_chunks_per_s']:.1f} chunks/s),"
                  f" capped at the driver's ({f['driver_chunks_per_s']:.0f} chunks/s)")
    projection = Table(show_edge=False)
    projection.add_column("worker nodes", justify="right")
    projection.add_column("projected chunks/s", justify="right")
    for n, rate in f["projection"].items():
        projection.add_row(str(n), f"{rate:.1f}")
    console.print(projection)
    console.print(f"wall clock {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs here")
