"""Background ingestion: uploads queue up as jobs and one worker thread ingests them in order.

One worker is enough: parsing already runs in a worker process per file and
embedding uses every core, so two files at once would only contend. Questions
never wait for it: they run on their own threads, and the store makes a
document visible only once all its chunks are written.

A job's life: queued -> running (progress: stage, done, total) -> done | failed (reason).
Files whose content is not PDF, HTML or text fail at once (ingest/filetypes.py decides).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ingest.filetypes import SNIFF_BYTES
from web.uploads import RejectedUpload, check_upload, safe_filename

log = logging.getLogger("web.jobs")

KEEP_FINISHED = 500  # finished jobs remembered for polling
OK_RESULTS = ("ingested", "unchanged", "replaced")
# The pipeline's progress stages, as the page names them.
STAGES = {"pages": "embedding", "chunks": "storing", "files": "indexing"}
DISPLAY_PREFIX = "upload/"  # uploads are recorded as upload/<name>, never a real path


def ascii_filename(name: str) -> str:
    """A filename safe in a Content-Disposition header: ASCII letters, digits, . _ - only."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", safe_filename(name)).strip("._") or "document"
    return cleaned[:120]


@dataclass
class Job:
    id: str
    filename: str
    status: str = "queued"  # queued, running, done, failed
    size: int = 0
    kind: str = ""
    stage: str = "queued"
    done: int = 0
    total: int = 0
    reason: str = ""
    result: dict | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "filename": self.filename, "status": self.status,
                "size": self.size, "kind": self.kind, "reason": self.reason,
                "result": self.result, "created_at": self.created_at,
                "finished_at": self.finished_at,
                "progress": {"stage": self.stage, "done": self.done, "total": self.total}}


class JobQueue:
    """Jobs by id and the worker thread that runs them."""

    def __init__(self, runtime, folder: Path):
        self.runtime = runtime
        self.folder = Path(folder)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[Job, Path] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.iterdir():  # copies left by a previous run; their jobs died
            if stale.is_file():
                stale.unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._run, name="ingest-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the file in hand, then stop (a half-ingested file would be swept anyway)."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    # -- submitting and reading ---------------------------------------------
    def submit(self, name: str | None, data: bytes) -> Job:
        """Queue one upload; a file of the wrong type is a failed job at once."""
        filename = safe_filename(name)
        job = Job(id=uuid.uuid4().hex, filename=filename, size=len(data))
        try:
            kind = check_upload(data[:SNIFF_BYTES], filename)
        except RejectedUpload as exc:
            job.status, job.stage, job.reason = "failed", "rejected", str(exc)
            job.finished_at = time.time()
            self._remember(job)
            return job
        job.kind = kind.kind
        path = self.folder / f"{job.id}{kind.ext}"  # our name, never the client's
        path.write_bytes(data)
        self._remember(job)
        self._queue.put((job, path))
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def recent(self) -> list[Job]:
        with self._lock:
            return list(reversed(self._jobs.values()))

    def pending(self) -> int:
        with self._lock:
            return sum(job.status in ("queued", "running") for job in self._jobs.values())

    def _remember(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job
            finished = [j.id for j in self._jobs.values() if j.finished_at is not None]
            for old in finished[: max(0, len(finished) - KEEP_FINISHED)]:
                del self._jobs[old]

    def _update(self, job: Job, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)

    # -- the worker ------------------------------------------------------------
    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            job, path = work
            try:
                self._ingest(job, path)
            finally:
                path.unlink(missing_ok=True)

    def _ingest(self, job: Job, path: Path) -> None:
        from ingest import ingest_file

        self._update(job, status="running", stage="parsing")

        def progress(stage: str, done: int, total: int) -> None:
            self._update(job, stage=STAGES.get(stage, stage), done=done, total=total)

        try:
            result = ingest_file(path, self.runtime, display_path=DISPLAY_PREFIX + job.filename,
                                 on_progress=progress)
        except Exception as exc:  # a bug or a store failure: report it, keep the worker alive
            log.exception("ingesting %s failed", job.filename)
            self._update(job, status="failed", stage="failed",
                         reason=f"{type(exc).__name__}: {exc}"[:300], finished_at=time.time())
            return
        ok = result.status in OK_RESULTS
        self._update(job, status="done" if ok else "failed", stage="done" if ok else "failed",
                     reason=result.reason,
                     result={"status": result.status, "doc_id": result.doc_id,
                             "pages": result.pages, "chunks": result.chunks,
                             "empty_pages": result.empty_pages},
                     finished_at=time.time())
