"""`rag bench storage`: bytes on disk and upload time as small documents arrive one by one.

Every document takes the web upload's path: `ingest_file(path, runtime,
display_path="upload/...")`, then `store.maintain()`, as the server's worker
runs it between jobs (the cleanup of old versions runs inside it, with its
real two-minute rule). Every `--every` documents a row is printed:

  live MB   the live data (rag/store/maintenance.py: Arrow size of the latest
            rows, index sizes, the originals documents refer to)
  latest MB `stats().total_bytes` of every table plus the originals on disk
  disk MB   every file under the store folder (du, less block rounding)
  upload ms median wall time of the last 10 uploads; `first` is that of the
            first 10 (after a warm-up on a throwaway store)
  cpu ms    the same in this process's CPU time (embedding threads included,
            the parser's worker process not): steadier on a busy machine
  store ms  the same for the store's share (writes, reads of the documents
            table, index refresh; for the baseline, its optimize too)
  maint ms  the slowest maintenance among the last `--every` documents

The baseline is the old behaviour: the chunks table optimized after every
upload with LanceDB's default cleanup (7 days), into a second store, for the
first `--baseline` documents, interleaved with the new one so both see the
same machine. The goal: after 1,000 uploads, disk at most 3x live data and the
latest upload at most 2x as slow as the first.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rag.config import Config, replace

WINDOW = 10  # uploads per median
SYLLABLES = ["ka", "lo", "mi", "ren", "tas", "vu", "dor", "pel", "sin", "gar", "mo", "tri",
             "ban", "chu", "fel", "ist", "or", "ule", "wen", "zor"]


@dataclass
class Row:
    store: str  # "maintained" or "baseline"
    docs: int
    live_mb: float
    latest_mb: float
    disk_mb: float
    ratio: float
    upload_ms: float
    first_ms: float
    slowdown: float
    cpu_ms: float
    first_cpu_ms: float
    store_ms: float
    first_store_ms: float
    maint_ms: float


def document(i: int, rng: random.Random) -> str:
    """A small text (about 90 words, one chunk) that shares no sentence with any other."""
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(90)]
    sentences = [" ".join(words[k:k + 15]).capitalize() + "." for k in range(0, 90, 15)]
    return f"Record {i}.\n\n" + " ".join(sentences) + f" Its code is doc{i:05d}.\n"


class Run:
    """One store and its timings."""

    def __init__(self, name: str, runtime, optimize_each: bool):
        self.name, self.runtime, self.optimize_each = name, runtime, optimize_each
        self.uploads: list[float] = []
        self.cpu: list[float] = []
        self.store: list[float] = []
        self.maintenance: list[float] = []
        self._store_s = 0.0
        store = runtime.store
        # Time the store's share of an upload: wrap the calls the pipeline makes.
        for owner, name in ((store, "add_documents"), (store.chunks, "refresh_indexes"),
                            (store.documents, "list"), (store.documents, "at_path")):
            setattr(owner, name, self._timed(getattr(owner, name)))

    def _timed(self, call):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self._store_s += time.perf_counter() - start
        return timed

    def upload(self, path: Path, shown: str) -> None:
        from ingest import ingest_file

        self._store_s = 0.0
        start, cpu = time.perf_counter(), time.process_time()
        result = ingest_file(path, self.runtime, display_path=shown)
        if result.status != "ingested":
            raise RuntimeError(f"{path}: {result.status} {result.reason}")
        if self.optimize_each:  # the old Chunks.refresh_indexes()
            self._timed(self.runtime.store.chunks.table.optimize)()
        self.uploads.append(time.perf_counter() - start)
        self.cpu.append(time.process_time() - cpu)
        self.store.append(self._store_s)
        start = time.perf_counter()
        if not self.optimize_each:
            self.runtime.store.maintain()
        self.maintenance.append(time.perf_counter() - start)

    def row(self, every: int) -> Row:
        store = self.runtime.store
        live = store.live_bytes()
        latest = store.latest_bytes()
        disk = store.disk_bytes()
        def ms(times: list[float]) -> tuple[float, float]:
            return (1000 * statistics.median(times[-WINDOW:]),
                    1000 * statistics.median(times[:WINDOW]))

        (last, first), cpu, store_ms = ms(self.uploads), ms(self.cpu), ms(self.store)
        return Row(self.name, len(self.uploads), live / 1e6, latest / 1e6, disk / 1e6,
                   disk / live, last, first, last / first, *cpu, *store_ms,
                   1000 * max(self.maintenance[-every:]))


def run(config: Config, *, docs: int, baseline: int, every: int,
        report: Path | None = None) -> list[Row]:
    from rag.runtime import open_runtime

    console = Console()
    rows: list[Row] = []
    table = Table(title=f"storage: {docs} small uploads one by one", show_edge=False)
    for column in ("store", "docs", "live MB", "latest MB", "disk MB", "disk/live",
                   "upload ms (first)", "cpu ms (first)", "store ms (first)", "maint ms"):
        table.add_column(column, justify="right")
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="rag-bench-storage-") as tmp:
        tmp = Path(tmp)
        runtime = open_runtime(replace(config, models="pack", db=tmp / "maintained"))
        runs = [Run("maintained", runtime, optimize_each=False)]
        if baseline:
            runs.append(Run("baseline", _runtime(runtime, tmp / "baseline"), optimize_each=True))
        sources = tmp / "uploads"
        sources.mkdir()
        # Warm the embedder and the parser workers on a throwaway store, so `first`
        # times uploads, not the first calls' set-up.
        warm = Run("warm-up", _runtime(runtime, tmp / "warm-up"), optimize_each=False)
        for i in range(WINDOW):
            path = sources / f"warm{i}.txt"
            path.write_text(document(-1 - i, rng))
            warm.upload(path, f"upload/{path.name}")
        started = time.perf_counter()
        for i in range(1, docs + 1):
            path = sources / f"doc{i:05d}.txt"
            path.write_text(document(i, rng))
            for one in runs:
                if one.name == "maintained" or i <= baseline:
                    one.upload(path, f"upload/{path.name}")
            if i % every == 0 or i == docs or i == WINDOW:
                for one in runs:
                    if len(one.uploads) == i:
                        rows.append(one.row(every))
                        _print(console, rows[-1], time.perf_counter() - started)
        for one in runs:
            one.runtime.close()
    for row in rows:
        table.add_row(row.store, str(row.docs), f"{row.live_mb:.1f}", f"{row.latest_mb:.1f}",
                      f"{row.disk_mb:.1f}", f"{row.ratio:.2f}",
                      f"{row.upload_ms:.0f} ({row.first_ms:.0f})",
                      f"{row.cpu_ms:.0f} ({row.first_cpu_ms:.0f})",
                      f"{row.store_ms:.0f} ({row.first_store_ms:.0f})", f"{row.maint_ms:.0f}")
    console.print(table)
    if report:
        report.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return rows


def _runtime(like, db: Path):
    """A runtime on a fresh store at `db`, sharing `like`'s embedder."""
    from rag.runtime import Runtime
    from rag.store import Store

    return Runtime(config=replace(like.config, db=db), embedder=like.embedder,
                   store=Store(db, like.embedder.dim, like.embedder.name))


def _print(console: Console, row: Row, elapsed: float) -> None:
    console.print(f"[dim]{elapsed:5.0f} s[/dim] {row.store:>10} {row.docs:5d} docs"
                  f"  live {row.live_mb:6.1f} MB  disk {row.disk_mb:6.1f} MB"
                  f" ({row.ratio:5.2f}x)  upload {row.upload_ms:4.0f} ms"
                  f" ({row.slowdown:.2f}x first)  cpu {row.cpu_ms:4.0f}/{row.first_cpu_ms:.0f}"
                  f"  store {row.store_ms:3.0f}/{row.first_store_ms:.0f}"
                  f"  maint max {row.maint_ms:4.0f} ms", soft_wrap=True)
