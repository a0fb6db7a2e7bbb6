"""`rag ingest --ray`: parse, chunk and embed on a Ray cluster; this process writes.

This process (the driver) decides what to ingest as the local path does
(ingest/pipeline.py: files whose bytes are stored are "unchanged" before any work
is shipped) and hands the rest to `RayIngest`, a pipeline `Process`: a worker actor
per node (per 8 CPUs; ingest/ray_worker.py) loads the embedder once and runs the
local path's own `process_files` on batches of files. What comes back (documents, chunks, vectors,
or a file's reason) is written and reported by the pipeline's shared code, so
statuses, reasons, the report and exit codes are the local path's.

- Files travel as bytes; a worker parses a temporary copy under the same name
  (titles and reasons match), so nodes need no shared file system.
- Parsers keep their limits: a worker runs `iter_load` (ingest/loaders.py), not
  the loaders directly, so a file that hangs, crashes or bloats a parser fails
  alone with the local path's reason and never takes the loaded embedder with
  it. Starting the parser processes costs about a second per batch in a Ray
  worker, so a batch is about a quarter of a worker's share of the bytes.
- A worker takes its node's CPUs (at most 8; a bigger node gets several) and runs
  its encoder with a thread per CPU, as `rag ingest` does on one machine. Workers
  not up START_GRACE_S after the first (their CPUs busy) are not waited for.
- Each worker has two batches queued, so it never waits for the driver. A worker
  that dies (its node lost) has its batch retried once on another; with none
  left, the remaining files fail with the reason.
- Workers end with `ray.kill`: no interpreter teardown, so the MLX streams of
  the embedder's thread (rag/owner.py) cannot abort it, and Ctrl-C does not wait.
- Every node needs this project and the embedder (a hub id it can fetch, or the
  offline pack in the configured cache folder); a worker whose embedder differs
  from the store's is refused.

Ray is an optional extra (`pip install 'rag-local[cluster]'`), imported only
inside these functions: nothing else needs it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest.errors import LoadError
from ingest.pipeline import Outcome, Timings
from ingest.ray_worker import BatchResult, NodeWorker
from rag.runtime import Runtime

INSTALL = "pip install 'rag-local[cluster]'"
LOCAL = "local"  # --ray without an address: a new cluster on this machine's cores
BATCHES_PER_WORKER = 4  # batches a worker's share is cut into (balance vs parser starts)
MIN_BATCH_BYTES = 1 << 20  # below this a batch is mostly its parser processes' start-up
MAX_BATCH_FILES = 64
IN_FLIGHT = 2  # batches queued per worker
START_TIMEOUT_S = 600.0  # for the first worker to load its embedder (it may download it)
START_GRACE_S = 30.0  # then for the others
RETRIES = 1  # a batch whose worker died goes to another worker this many times
CONNECT_TIMEOUT_S = 10.0
WORKER_MAX_CPUS = 8  # rag/fast_encoder.py runs at most 8 threads unless told otherwise


class ClusterError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or no worker could start."""


def require_ray():
    """The `ray` module, or ClusterError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(f"--ray needs Ray, an optional extra: {INSTALL}") from exc
    return ray


@dataclass
class WorkerStats:
    """What one worker did, for reports and benchmarks."""

    node: str
    cpus: int
    load_s: float  # loading its embedder
    files: int = 0
    chunks: int = 0
    tokens: int = 0
    busy_s: float = 0.0  # processing batches (one at a time)
    cpu_s: float = 0.0  # CPU time of the worker and its parser processes meanwhile


@dataclass
class _Batch:
    files: list[Path]
    tries: int = 0


@dataclass
class RayIngest:
    """A pipeline `Process` that runs on a Ray cluster (see the module docstring).

    `address`: None or "local" starts a cluster on this machine's cores; "auto",
    "host:6379" or "ray://host:10001" connects to one. Ray starts on the first call
    with files to process (or `start()`); `close()` stops the workers and, if it
    was started here, the cluster. Usable as a context manager.
    """

    runtime: Runtime
    address: str | None = None
    workers: list[WorkerStats] = field(default_factory=list)
    start_s: float = 0.0  # cluster start and workers ready
    wait_s: float = 0.0  # this process waiting for workers' results
    _actors: list = field(default_factory=list)
    _owns_ray: bool = False

    def __enter__(self) -> RayIngest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> float:
        """Start or reach the cluster and wait for the workers; the seconds it took."""
        if self._actors:
            return self.start_s
        ray = require_ray()
        started = time.perf_counter()
        self._init(ray)
        self._start_workers(ray)
        self.start_s = time.perf_counter() - started
        return self.start_s

    def _init(self, ray) -> None:
        if ray.is_initialized():
            return  # the caller's connection: used, never shut down here
        address = self.address or LOCAL
        why = _unreachable(address)
        if why:
            raise ClusterError(f"--ray {address}: cannot reach the cluster: {why}")
        options = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address == LOCAL:
            options.update(num_cpus=os.cpu_count() or 1, include_dashboard=False)
        # Ray nices its workers (15): on a machine shared with other work they would get a
        # fraction of the CPU `rag ingest` gets. A cluster started here keeps our priority.
        ours = "RAY_worker_niceness" not in os.environ
        os.environ.setdefault("RAY_worker_niceness", "0")
        try:
            with warnings.catch_warnings():
                # Ray starts its processes with fork + exec: lancedb's after-fork reset (and
                # its warning) runs in children that exec at once, never using it.
                warnings.filterwarnings("ignore", "lancedb fork support", RuntimeWarning)
                ray.init(address=address, **options)
        except Exception as exc:  # noqa: BLE001 - Ray raises many types; the reason is what counts
            raise ClusterError(f"--ray {address}: cannot start or reach the cluster:"
                               f" {_one_line(exc)}") from exc
        finally:
            if ours:
                os.environ.pop("RAY_worker_niceness", None)
        self._owns_ray = True

    def _start_workers(self, ray) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor_class = ray.remote(NodeWorker)
        pending = {}
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            for cpus in worker_cpus(int(node.get("Resources", {}).get("CPU", 0))):
                actor = actor_class.options(num_cpus=cpus, max_concurrency=1,
                                            scheduling_strategy=NodeAffinitySchedulingStrategy(
                                                node["NodeID"], soft=False)
                                            ).remote(self.runtime.config, cpus)
                pending[actor.describe.remote()] = actor
        if not pending:
            raise ClusterError("--ray: the cluster has no node with a CPU")
        ready, rest = ray.wait(list(pending), num_returns=1, timeout=START_TIMEOUT_S)
        if rest and ready:
            more, rest = ray.wait(rest, num_returns=len(rest), timeout=START_GRACE_S)
            ready += more
        reasons = []
        for ref in rest:  # still waiting for CPUs or loading: not waited for
            ray.kill(pending[ref])
        for ref in ready:
            try:
                info = ray.get(ref)
            except ray.exceptions.RayError as exc:
                reasons.append(_one_line(exc))
                continue
            embedder = self.runtime.embedder
            if (info["name"], info["dim"]) != (embedder.name, embedder.dim):
                ray.kill(pending[ref])
                reasons.append(f"the worker on {info['node']} loaded {info['name']}"
                               f" ({info['dim']} dimensions), the store needs {embedder.name}"
                               f" ({embedder.dim})")
                continue
            self._actors.append(pending[ref])
            self.workers.append(WorkerStats(info["node"], info["cpus"], info["load_s"]))
        if not self._actors:
            why = reasons[0] if reasons else f"none was ready within {START_TIMEOUT_S:.0f} s"
            raise ClusterError(f"--ray: no worker could start: {why}")

    def __call__(self, todo: list[Path], passwords: Sequence[str],
                 timings: Timings) -> Iterator[Outcome]:
        """The pipeline's Process: an Outcome per file of `todo`, as batches come back."""
        if not todo:
            return
        self.start()
        ray = require_ray()
        queue = deque(_Batch(b) for b in batches(todo, len(self._actors)))
        queued = {id(a): 0 for a in self._actors}
        inflight: dict = {}  # ref -> (actor, its index in workers, batch)
        while queue or inflight:
            for _ in range(IN_FLIGHT):  # round robin: every worker gets one before any two
                for index, actor in enumerate(self._actors):
                    if actor is not None and queue and queued[id(actor)] < IN_FLIGHT:
                        batch = queue.popleft()
                        payload, unreadable = _read(batch.files)
                        yield from unreadable
                        batch.files = [p for p, _ in payload]
                        if payload:
                            ref = actor.process.remote(payload, list(passwords))
                            inflight[ref] = (actor, index, batch)
                            queued[id(actor)] += 1
            if not inflight:
                if queue:  # every worker is gone
                    yield from _lost([p for b in queue for p in b.files], "no Ray worker left")
                return
            waiting = time.perf_counter()
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            self.wait_s += time.perf_counter() - waiting
            actor, index, batch = inflight.pop(ref)
            queued[id(actor)] -= 1
            try:
                result: BatchResult = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                self._actors[index] = None
                if batch.tries < RETRIES and any(a is not None for a in self._actors):
                    batch.tries += 1
                    queue.appendleft(batch)
                else:
                    yield from _lost(batch.files, f"Ray worker lost: {_one_line(exc)}")
                continue
            self._account(index, result, timings)
            yield from result.outcomes

    def _account(self, index: int, result: BatchResult, timings: Timings) -> None:
        for name in ("parse", "chunk", "embed"):
            setattr(timings, name, getattr(timings, name) + getattr(result.timings, name))
        stats = self.workers[index]
        stats.files += len(result.outcomes)
        stats.chunks += sum(len(o.chunks) for o in result.outcomes)
        stats.tokens += result.tokens
        stats.busy_s += result.seconds
        stats.cpu_s += result.cpu_s

    def close(self) -> None:
        """Stop the workers, and the cluster if it was started here.

        `ray.kill` ends a worker without interpreter teardown, so the MLX streams of its
        embedder's thread never reach the teardown that can abort (rag/owner.py), and
        an interrupted run does not wait for the batches in hand."""
        if not self._actors and not self._owns_ray:
            return
        ray = require_ray()
        for actor in self._actors:
            if actor is not None:
                ray.kill(actor)
        self._actors = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False


def worker_cpus(cpus: int) -> list[int]:
    """How a node's CPUs are split between workers: as few as keep each within
    WORKER_MAX_CPUS (the encoder's own thread cap), as evenly as possible."""
    if cpus < 1:
        return []
    count = -(-cpus // WORKER_MAX_CPUS)
    return [cpus // count + (i < cpus % count) for i in range(count)]


def batches(files: Sequence[Path], workers: int) -> list[list[Path]]:
    """`files` in order, cut into batches of about a BATCHES_PER_WORKER-th of a worker's
    share of the bytes (at least MIN_BATCH_BYTES, at most MAX_BATCH_FILES files)."""
    sizes = [_size(p) for p in files]
    target = max(sum(sizes) / (max(workers, 1) * BATCHES_PER_WORKER), MIN_BATCH_BYTES)
    out: list[list[Path]] = []
    current: list[Path] = []
    total = 0
    for path, size in zip(files, sizes):
        current.append(path)
        total += size
        if total >= target or len(current) >= MAX_BATCH_FILES:
            out.append(current)
            current, total = [], 0
    if current:
        out.append(current)
    return out


def _unreachable(address: str) -> str | None:
    """Why nothing answers at an address that names a port (Ray itself would keep retrying
    for minutes), or None."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not port.isdigit():
        return None  # "local", "auto": Ray finds (or starts) the cluster itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or exc})"
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read(files: list[Path]) -> tuple[list[tuple[Path, bytes]], list[Outcome]]:
    """The files' bytes, and an Outcome for each that cannot be read (as `load` says it)."""
    payload, unreadable = [], []
    for path in files:
        try:
            payload.append((path, path.read_bytes()))
        except OSError as exc:
            unreadable.append(Outcome(path, error=LoadError(f"cannot read: {exc.strerror or exc}")))
    return payload, unreadable


def _lost(files: Sequence[Path], reason: str) -> Iterator[Outcome]:
    for path in files:
        yield Outcome(path, error=LoadError(reason))


def _one_line(exc: BaseException) -> str:
    """The last line of a (possibly remote, multi-line) error: where its reason is."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
