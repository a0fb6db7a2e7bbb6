"""What runs on each Ray node for `rag ingest --ray` (ingest/distributed.py drives it).

`NodeWorker` is the actor: it loads the embedder once, then takes batches of files
as bytes, writes each to a temporary copy under its own name (so titles and
reasons match the local path's), and runs the local path's `process_files` on
them: parsers in time- and memory-limited processes, chunking, embedding in
shared groups. The Outcomes go back with the driver's paths. Copies left by a
worker killed mid-batch are removed when the next worker starts on the node.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace as with_changes
from pathlib import Path

from ingest.pipeline import Outcome, Timings, process_files

COPIES = "rag-ray-"  # temporary folders of batch copies: rag-ray-<worker pid>-<random>


@dataclass
class BatchResult:
    outcomes: list[Outcome]
    timings: Timings
    tokens: int
    seconds: float
    cpu_s: float


class NodeWorker:
    """The Ray actor: one per node (per 8 CPUs), its embedder loaded once."""

    def __init__(self, config, cpus: int):
        # One encoder thread per CPU Ray gave this worker (unless the node says otherwise).
        os.environ.setdefault("RAG_EMBED_THREADS", str(cpus))
        from rag.embed import load_embedder

        sweep_copies()
        start = time.perf_counter()
        self.embedder = load_embedder(config)
        self.load_s = time.perf_counter() - start
        self.config = config
        self.cpus = cpus

    def describe(self) -> dict:
        import ray

        return {"name": self.embedder.name, "dim": self.embedder.dim, "cpus": self.cpus,
                "node": ray.util.get_node_ip_address(), "load_s": self.load_s}

    def process(self, files: list[tuple[Path, bytes]], passwords: Sequence[str]) -> BatchResult:
        start, cpu = time.perf_counter(), cpu_seconds()
        tokens = self.embedder.tokens_embedded
        timings = Timings()
        outcomes = []
        with tempfile.TemporaryDirectory(prefix=f"{COPIES}{os.getpid()}-") as tmp:
            copies = {}
            for i, (path, data) in enumerate(files):
                copy = Path(tmp) / str(i) / path.name
                copy.parent.mkdir()
                copy.write_bytes(data)
                copies[copy] = path
            workers = min(2, self.cpus)
            for outcome in process_files(list(copies), self.embedder, self.config,
                                         passwords=passwords, workers=workers, timings=timings):
                original = copies[outcome.path]
                outcome.path = original
                if outcome.doc is not None:
                    outcome.doc = with_changes(outcome.doc, path=str(original))
                outcomes.append(outcome)
        return BatchResult(outcomes, timings, self.embedder.tokens_embedded - tokens,
                           time.perf_counter() - start, cpu_seconds() - cpu)


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (parser processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime


def sweep_copies() -> None:
    """Remove the batch copies of workers that died mid-batch (`ray.kill` skips cleanup)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{COPIES}*-*"):
        pid = folder.name[len(COPIES):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
