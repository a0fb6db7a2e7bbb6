"""Background ingestion: uploads become durable jobs and one worker thread ingests them in order.

One worker is enough: parsing already runs in a worker process per file and
embedding uses every core, so two files at once would only contend.

A job's life: queued -> running (progress: stage, done, total) -> done | failed (reason)
| cancelled. Its record and its bytes live in the store (rag/store/jobs.py), so
a restart (kill -9 or SIGTERM) resumes every job that had not finished, and
finished jobs keep answering by id. Files whose content is not PDF, HTML or
text fail at once (ingest/filetypes.py decides).

Names: an upload never replaces another document unless asked to. A file
whose bytes are already stored is that document ("unchanged", nothing else
touched); a new file under a name the library already has gets the first free
"name (2).ext", "name (3).ext", ...; with `replace`, it takes the name and
the documents that had it are removed once it is stored.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

from ingest.filetypes import SNIFF_BYTES
from rag.store.jobs import FINISHED, JobRecord, JobTable, write_upload
from web.errors import storage_error_text
from web.uploads import Limits, Refusal, RejectedUpload, check_upload, numbered, safe_filename

log = logging.getLogger("web.jobs")

OK_RESULTS = ("ingested", "unchanged", "replaced")
# The pipeline's progress stages, as the page names them.
STAGES = {"pages": "embedding", "chunks": "storing", "files": "indexing"}
DISPLAY_PREFIX = "upload/"  # uploads are recorded as upload/<name>, never a real path
MAINTAIN_EVERY = 300.0  # seconds between store upkeep runs while the worker is idle


def ascii_filename(name: str) -> str:
    """A filename safe in a Content-Disposition header: ASCII letters, digits, . _ - only."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", safe_filename(name)).strip("._") or "document"
    return cleaned[:120]


class JobCancelled(Exception):
    """Raised inside the worker when the running job is cancelled."""


class Finished(ValueError):
    """The job has already finished; it cannot be cancelled."""


@dataclass
class _Live:
    """What only the serving process knows of a running job: its progress."""
    stage: str = "queued"
    done: int = 0
    total: int = 0
    cancel: bool = False


def job_json(record: JobRecord, live: _Live | None = None) -> dict:
    stage = live.stage if live else record.stage
    return {"id": record.id, "filename": record.filename, "status": record.status,
            "size": record.size, "kind": record.kind, "replace": record.replace,
            "reason": record.reason, "result": record.result_json(),
            "created_at": record.created_at, "finished_at": record.finished_at or None,
            "progress": {"stage": stage, "done": live.done if live else 0,
                         "total": live.total if live else 0}}


class JobQueue:
    """Jobs stored in the store's `jobs` table and the worker thread that runs them."""

    def __init__(self, runtime, limits: Limits):
        self.runtime = runtime
        self.limits = limits
        self.table: JobTable | None = None
        self._live: dict[str, _Live] = {}
        self._records: dict[str, JobRecord] = {}  # unfinished jobs of this process
        self._unsaved: dict[str, JobRecord] = {}  # ended, but the store refused the record
        self._order: deque[str] = deque()
        self._lock = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> JobQueue:
        """Open the jobs table (accepting works from here; nothing runs until start)."""
        store = self.runtime.store
        self.table = JobTable(store.db, store.root / "uploads")
        return self

    def start(self) -> None:
        if self.table is None:
            self.open()
        self.table.prune()
        for record in self.table.unfinished():  # accepted before a crash or a stop
            self._enqueue(record)
        if self._order:
            log.info("resuming %d unfinished upload jobs", len(self._order))
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ingest-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the file in hand; jobs not started stay queued in the store and the
        next start resumes them (so does a job cut short by the timeout)."""
        if self._thread is None:
            return
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._thread.join(timeout)
        self._thread = None

    # -- accepting -------------------------------------------------------------
    def accept(self, files: list[tuple[str | None, object, int]], replace: bool = False
               ) -> tuple[list[dict], list[Refusal]]:
        """Store uploads (name, binary stream, size) as queued jobs, each on its own: a
        file past a limit is refused with its reason while the others are accepted."""
        accepted: list[JobRecord] = []
        refused: list[Refusal] = []
        queued = self.count_unfinished()
        pending = self.table.pending_bytes()
        for index, (name, stream, size) in enumerate(files):
            filename = safe_filename(name)
            refusal = self._over_limit(filename, size, index, queued, pending)
            if refusal is not None:
                refused.append(refusal)
                continue
            try:
                record = self._store_upload(filename, stream, replace)
            except OSError as exc:
                refused.append(Refusal(filename, 507, f"{filename}: {storage_error_text(exc)}"))
                continue
            if record is None:
                refused.append(Refusal(filename, 413, self._too_large(filename)))
                continue
            accepted.append(record)
            if record.status == "queued":
                queued += 1
                pending += record.size
        try:
            self.table.add(accepted)
        except Exception as exc:  # noqa: BLE001 - the store refused: nothing was accepted
            for record in accepted:
                self.table.remove_upload(record.upload)
            refused.extend(Refusal(r.filename, 507, f"{r.filename}: {storage_error_text(exc)}")
                           for r in accepted)
            return [], refused
        for record in accepted:
            if record.status == "queued":
                self._enqueue(record)
        return [job_json(r, self._live.get(r.id)) for r in accepted], refused

    def _over_limit(self, filename: str, size: int, index: int, queued: int,
                    pending: int) -> Refusal | None:
        limits = self.limits
        if index >= limits.request_files:
            return Refusal(filename, 413, f"{filename}: more than {limits.request_files} files"
                           " in one request; send the rest in another")
        if size > limits.file_bytes:
            return Refusal(filename, 413, self._too_large(filename))
        if queued >= limits.queued_jobs:
            return Refusal(filename, 429, f"{filename}: {queued} uploads are waiting (limit"
                           f" {limits.queued_jobs}); try again when some have finished")
        if pending + size > limits.pending_bytes:
            return Refusal(filename, 507, f"{filename}: waiting uploads would exceed"
                           f" {limits.pending_bytes // (1024 * 1024)} MB; try again when some"
                           " have finished")
        free = shutil.disk_usage(self.table.folder).free
        if free - size < limits.min_free_bytes:
            return Refusal(filename, 507, f"{filename}: storage full ({free // (1024 * 1024)} MB"
                           " free); delete documents or free disk space")
        return None

    def _too_large(self, filename: str) -> str:
        return f"{filename}: larger than {self.limits.file_bytes // (1024 * 1024)} MB"

    def _store_upload(self, filename: str, stream, replace: bool) -> JobRecord | None:
        job_id = uuid.uuid4().hex
        record = JobRecord(id=job_id, filename=filename, status="queued", replace=replace,
                           created_at=time.time())
        head = stream.read(SNIFF_BYTES)
        try:
            kind = check_upload(head, filename)
        except RejectedUpload as exc:
            record.status, record.stage, record.reason = "failed", "rejected", str(exc)
            record.finished_at = time.time()
            return record
        record.kind = kind.kind
        record.upload = f"{job_id}{kind.ext}"  # our name, never the client's
        stream.seek(0)
        size = write_upload(stream, self.table.upload_path(record.upload),
                            self.table.part_path(job_id), self.limits.file_bytes)
        if size < 0:
            return None
        record.size = size
        return record

    def _enqueue(self, record: JobRecord) -> None:
        with self._lock:
            self._records[record.id] = record
            self._live[record.id] = _Live()
            self._order.append(record.id)
            self._lock.notify_all()

    # -- reading and cancelling ------------------------------------------------
    def get(self, job_id: str) -> dict | None:
        with self._lock:
            record, live = self._records.get(job_id), self._live.get(job_id)
            record = record or self._unsaved.get(job_id)
        if record is None:
            record = self.table.get(job_id)
        return job_json(record, live) if record is not None else None

    def recent(self, limit: int = 500) -> list[dict]:
        with self._lock:
            live = dict(self._live)
            mine = dict(self._records)
        return [job_json(mine.get(r.id, r), live.get(r.id)) for r in self.table.recent(limit)]

    def count_unfinished(self) -> int:
        return self.table.count_unfinished() if self.table is not None else 0

    def pending(self) -> int:
        with self._lock:
            return len(self._records)

    def cancel(self, job_id: str) -> dict | None:
        """Cancel a queued job at once, a running one at its next progress step."""
        with self._lock:
            record = self._records.get(job_id)
            if record is not None and record.status == "running":
                self._live[job_id].cancel = True
                return job_json(record, self._live[job_id])
            if record is not None:
                self._order.remove(job_id)
                del self._records[job_id]
                self._live.pop(job_id, None)
        if record is None:
            stored = self.table.get(job_id)
            if stored is None:
                return None
            if stored.status in FINISHED:
                raise Finished(f"job {job_id} has already {stored.status}")
            record = stored  # another process's job: mark it; its worker skips it
        self._finish(record, "cancelled", "cancelled", "cancelled before it started")
        return job_json(record)

    # -- the worker ------------------------------------------------------------
    def _run(self) -> None:
        self._upkeep()  # first: orphans a crash left, before they crowd out search results
        last_upkeep = time.monotonic()
        while True:
            with self._lock:
                while not self._order and not self._stopping:
                    if time.monotonic() - last_upkeep >= MAINTAIN_EVERY:
                        break
                    self._lock.wait(timeout=MAINTAIN_EVERY)
                if self._stopping:
                    return
                job_id = self._order.popleft() if self._order else None
                record = self._records.get(job_id) if job_id else None
            if record is None:
                self._upkeep()
                last_upkeep = time.monotonic()
                continue
            try:
                self._ingest(record)
            except Exception as exc:  # noqa: BLE001 - the store refused the job's record
                log.exception("job %s: recording its state failed", record.id)
                # Shown until a restart, which finds the job unfinished and runs it again.
                record.status, record.stage = "failed", "failed"
                record.reason = storage_error_text(exc)
                with self._lock:
                    self._unsaved[record.id] = record
            with self._lock:
                self._records.pop(record.id, None)
                self._live.pop(record.id, None)
            self._maintain()

    def _maintain(self) -> None:
        """After each job: compaction and cleanup when due (a millisecond when not;
        rag/store/maintenance.py has the schedule)."""
        try:
            self.runtime.store.maintain()
        except Exception as exc:  # noqa: BLE001 - retried after the next job
            log.warning("store maintenance failed: %s", storage_error_text(exc))

    def _upkeep(self) -> None:
        """At start and when idle: orphans of interrupted writes, old job records."""
        try:
            self.runtime.store.sweep_orphans()
            self.table.prune()
        except Exception as exc:  # noqa: BLE001 - upkeep is retried on the next idle turn
            log.warning("store upkeep failed: %s", storage_error_text(exc))
        self._maintain()

    def _ingest(self, record: JobRecord) -> None:
        from ingest import file_sha256, ingest_file

        live = self._live[record.id]
        path = self.table.upload_path(record.upload)
        if not path.is_file():
            self._finish(record, "failed", "failed", "the uploaded file was lost from the store")
            return
        record.status, live.stage = "running", "parsing"
        self.table.update(record.id, status="running", stage="parsing")
        doc_id = file_sha256(path)
        existing = self.runtime.store.documents.get(doc_id)
        display = existing.path if existing else self._library_name(record)

        def progress(stage: str, done: int, total: int) -> None:
            if live.cancel:
                raise JobCancelled
            live.stage, live.done, live.total = STAGES.get(stage, stage), done, total

        try:
            result = ingest_file(path, self.runtime, display_path=display,
                                 on_progress=progress, replace=record.replace)
        except JobCancelled:
            self._end_unfinished(record, doc_id, "cancelled", "cancelled while ingesting")
            return
        except Exception as exc:  # noqa: BLE001 - a bug or a store failure: report it
            log.exception("ingesting %s (job %s) failed", record.filename, record.id)
            self._end_unfinished(record, doc_id, "failed", storage_error_text(exc))
            return
        ok = result.status in OK_RESULTS
        record.result = _result_json(result)
        self._finish(record, "done" if ok else "failed", "done" if ok else "failed",
                     result.reason)

    def _library_name(self, record: JobRecord) -> str:
        name = DISPLAY_PREFIX + record.filename
        if record.replace:
            return name
        return numbered(name, {r.path for r in self.runtime.store.documents.list()})

    def _end_unfinished(self, record: JobRecord, doc_id: str, status: str, reason: str) -> None:
        """A job that stopped early: if its document landed anyway, it is done."""
        stored = self.runtime.store.documents.get(doc_id)
        if stored is not None:
            record.result = _result_json(stored, status="ingested")
            note = "" if status == "cancelled" else f"stored; then {reason}"
            self._finish(record, "done", "done", note)
        else:
            self._finish(record, status, status, reason)

    def _finish(self, record: JobRecord, status: str, stage: str, reason: str) -> None:
        record.status, record.stage, record.reason = status, stage, reason[:300]
        record.finished_at = time.time()
        # The upload goes only once the record says the job is over: if the store refuses
        # the update (a full disk), the next start finds the job unfinished and runs it again.
        self.table.update(record.id, status=status, stage=stage, reason=record.reason,
                          result=record.result, finished_at=record.finished_at)
        self.table.remove_upload(record.upload)


def _result_json(result, status: str | None = None) -> str:
    """The job's `result`: from an ingestion's FileResult or a stored DocRecord."""
    import json

    if hasattr(result, "status"):
        data = {"status": result.status, "doc_id": result.doc_id, "path": result.path,
                "pages": result.pages, "chunks": result.chunks,
                "empty_pages": result.empty_pages}
    else:
        data = {"status": status, "doc_id": result.id, "path": result.path,
                "pages": result.pages, "chunks": result.chunks,
                "empty_pages": result.empty_pages}
    return json.dumps(data)
