"""Background ingestion: uploads become durable jobs, and one worker thread per server
claims them from the store and ingests them, oldest first.

One worker is enough: parsing already runs in a worker process per file and
embedding uses every core, so two files at once would only contend.

A job's life: queued -> running (progress: stage, done, total) -> done | failed (reason)
| cancelled. Its record and its bytes live in the store (rag/store/jobs.py), so
any server on the store answers for it, a restart (kill -9 or SIGTERM) loses
nothing, and finished jobs keep answering by id. Files whose content is not
PDF, HTML or text fail at once (ingest/filetypes.py decides).

Replicas. Several servers may share one store and nothing else. A server runs
a job only after claiming it (rag/store/jobs.py: a conditional update with a
lease of `lease_s`), as `identity()` (rag/store/writers.py: host, pid
namespace, pid, start time; a restarted server is a new one). It renews the
lease every third of `lease_s`; a job whose owner stopped renewing is claimed
again once the lease runs out, by any server, or at once by one on the same
machine that can prove the owner dead. A server that finds its job taken over
stops it and records nothing. Jobs accepted here are claimed at once; an idle
server looks for others' every `poll_s` seconds.

Names: an upload never replaces another document unless asked to. A file
whose bytes are already stored is that document ("unchanged", nothing else
touched); a new file under a name the library already has gets the first free
"name (2).ext", "name (3).ext", ...; with `replace`, it takes the name and
the documents that had it are removed once it is stored.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass

from rag.store.jobs import FINISHED, JobRecord, JobTable
from rag.store.writers import identity
from web.errors import is_storage_full, storage_error_text
from web.uploads import Limits, Refusal, numbered, safe_filename, store_uploads

log = logging.getLogger("web.jobs")

OK_RESULTS = ("ingested", "unchanged", "replaced")
# The pipeline's progress stages, as the page names them.
STAGES = {"pages": "embedding", "chunks": "storing", "files": "indexing"}
DISPLAY_PREFIX = "upload/"  # uploads are recorded as upload/<name>, never a real path
MAINTAIN_EVERY = 300.0  # seconds between store upkeep runs while the worker is idle
LEASE_S = 60.0  # a claim lasts this long unless renewed (config: job_lease_s)
POLL_S = 5.0  # an idle worker looks for queued jobs this often (config: job_poll_s)


def ascii_filename(name: str) -> str:
    """A filename safe in a Content-Disposition header: ASCII letters, digits, . _ - only."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", safe_filename(name)).strip("._") or "document"
    return cleaned[:120]


class JobCancelled(Exception):
    """Raised inside the worker when the running job is cancelled (or taken over)."""


class Finished(ValueError):
    """The job has already finished; it cannot be cancelled."""


@dataclass
class _Live:
    """What only the process running a job knows of it: its progress."""
    stage: str = "parsing"
    done: int = 0
    total: int = 0
    cancel: bool = False
    lost: bool = False  # another replica took the job over: record nothing


def job_json(record: JobRecord, live: _Live | None = None) -> dict:
    stage = live.stage if live else record.stage
    return {"id": record.id, "filename": record.filename, "status": record.status,
            "size": record.size, "kind": record.kind, "replace": record.replace,
            "reason": record.reason, "result": record.result_json(),
            "created_at": record.created_at, "finished_at": record.finished_at or None,
            "progress": {"stage": stage, "done": live.done if live else 0,
                         "total": live.total if live else 0}}


class JobQueue:
    """Jobs stored in the store's `jobs` table and the worker thread that claims and runs
    them."""

    def __init__(self, runtime, limits: Limits, lease_s: float = LEASE_S,
                 poll_s: float = POLL_S):
        self.runtime = runtime
        self.limits = limits
        self.lease_s, self.poll_s = lease_s, poll_s
        self.owner = identity()  # this server, as the claims in the store name it
        self.table: JobTable | None = None
        self._running: dict[str, tuple[JobRecord, _Live]] = {}  # the job in hand
        self._unsaved: dict[str, JobRecord] = {}  # ended, but the store refused the record
        self._lock = threading.Condition()
        self._wake = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> JobQueue:
        """Open the jobs table (accepting works from here; nothing runs until start)."""
        store = self.runtime.store
        self.table = JobTable(store.db, store.uploads)
        return self

    def start(self) -> None:
        if self.table is None:
            self.open()
        self.table.prune()
        waiting = len(self.table.claimable())
        if waiting:
            log.info("%d upload jobs waiting in the store", waiting)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ingest-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the file in hand; jobs not started stay queued in the store for any
        server (so does a job cut short by the timeout, once its lease runs out)."""
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
        accepted, refused = store_uploads(self.table, self.limits, files, replace)
        try:
            self.table.add(accepted)
        except Exception as exc:  # noqa: BLE001 - the store refused: nothing was accepted
            for record in accepted:
                self.table.remove_upload(record.upload)
            refused.extend(Refusal(r.filename, 507, f"{r.filename}: {storage_error_text(exc)}")
                           for r in accepted)
            return [], refused
        if any(r.status == "queued" for r in accepted):
            self._notify()
        return [job_json(r) for r in accepted], refused

    def _notify(self) -> None:
        with self._lock:
            self._wake = True
            self._lock.notify_all()

    # -- reading and cancelling ------------------------------------------------
    def get(self, job_id: str) -> dict | None:
        with self._lock:
            running = self._running.get(job_id)
            unsaved = self._unsaved.get(job_id)
        if running is not None:
            return job_json(*running)
        record = self.table.get(job_id)
        if unsaved is not None and (record is None or record.status not in FINISHED):
            record = unsaved  # until a server runs it again, once its lease runs out
        return job_json(record) if record is not None else None

    def recent(self, limit: int = 500) -> list[dict]:
        with self._lock:
            running = dict(self._running)
        return [job_json(*running[r.id]) if r.id in running else job_json(r)
                for r in self.table.recent(limit)]

    def count_unfinished(self) -> int:
        return self.table.count_unfinished() if self.table is not None else 0

    def pending(self) -> int:
        """Unfinished jobs in the store (the same number on every replica)."""
        return self.count_unfinished()

    def cancel(self, job_id: str) -> dict | None:
        """Cancel a queued job at once, a running one at its next progress step (on another
        replica: once that one sees the mark, at its next lease renewal)."""
        with self._lock:
            running = self._running.get(job_id)
            if running is not None:
                running[1].cancel = True
                return job_json(*running)
        if self.table.cancel_queued(job_id, "cancelled before it started"):
            record = self.table.get(job_id)
            self.table.remove_upload(record.upload)
            return job_json(record)
        stored = self.table.get(job_id)
        if stored is None:
            return None
        if stored.status in FINISHED:
            raise Finished(f"job {job_id} has already {stored.status}")
        self.table.cancel_running(job_id, "cancelled while ingesting")
        return job_json(self.table.get(job_id) or stored)

    # -- the worker ------------------------------------------------------------
    def _run(self) -> None:
        self._upkeep()  # first: orphans a crash left, before they crowd out search results
        last_upkeep = time.monotonic()
        while True:
            with self._lock:
                if self._stopping:
                    return
                self._wake = False
            claimed = self._claim_next()
            if claimed is not None:
                self._work(claimed)
                self._maintain()
                continue
            if time.monotonic() - last_upkeep >= MAINTAIN_EVERY:
                self._upkeep()
                last_upkeep = time.monotonic()
            with self._lock:
                if not self._wake and not self._stopping:
                    self._lock.wait(timeout=self.poll_s)

    def _claim_next(self) -> JobRecord | None:
        """The oldest job nobody holds, claimed for this server; None when there is none
        (or the store cannot be read: tried again at the next poll).

        A claim the store refuses for lack of space fails that job here (shown until a
        restart or another server runs it: its record still says queued), as any job
        whose record cannot be written."""
        try:
            for record in self.table.claimable():
                if record.id in self._unsaved:
                    continue
                try:
                    claimed = self.table.claim(record, self.owner, self.lease_s)
                except Exception as exc:
                    if not is_storage_full(exc):
                        raise
                    record.status, record.stage = "failed", "failed"
                    record.reason = storage_error_text(exc)
                    with self._lock:
                        self._unsaved[record.id] = record
                    continue
                if claimed:
                    if record.owner:
                        log.info("job %s: taking over from %s", record.id, record.owner)
                    record.owner, record.status, record.stage = self.owner, "running", "parsing"
                    return record
        except Exception as exc:  # noqa: BLE001 - the store is unreachable for now
            log.warning("looking for upload jobs failed: %s", storage_error_text(exc))
        return None

    def _work(self, record: JobRecord) -> None:
        live = _Live()
        with self._lock:
            self._running[record.id] = (record, live)
            self._unsaved.pop(record.id, None)
        done = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(record, live, done),
                                   name="job-lease", daemon=True)
        renewer.start()
        try:
            self._ingest(record, live)
        except Exception as exc:  # noqa: BLE001 - the store refused the job's record
            log.exception("job %s: recording its state failed", record.id)
            # Shown until its lease runs out; then a server claims the job and runs it again.
            record.status, record.stage = "failed", "failed"
            record.reason = storage_error_text(exc)
            with self._lock:
                self._unsaved[record.id] = record
        finally:
            done.set()
            renewer.join()
            with self._lock:
                self._running.pop(record.id, None)

    def _renew(self, record: JobRecord, live: _Live, done: threading.Event) -> None:
        """Keep the claim while the job runs; stop the job when it was cancelled elsewhere
        or another server took it over (this one was cut off past its lease)."""
        while not done.wait(self.lease_s / 3):
            try:
                if self.table.renew(record.id, self.owner, self.lease_s, live.stage):
                    continue
                now = self.table.get(record.id)
            except Exception as exc:  # noqa: BLE001 - unreachable: try again, the lease runs
                log.warning("job %s: renewing its lease failed: %s", record.id,
                            storage_error_text(exc))
                continue
            live.lost = now is None or now.owner != self.owner
            if live.lost:
                log.warning("job %s: taken over by %s; stopping here", record.id,
                            now.owner if now else "nobody (record gone)")
            live.cancel = True
            return

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

    def _ingest(self, record: JobRecord, live: _Live) -> None:
        with self.table.upload_copy(record.upload) as path:
            if path is None:
                self._finish(record, live, "failed", "failed",
                             "the uploaded file was lost from the store")
                return
            self._ingest_file(record, live, path)

    def _ingest_file(self, record: JobRecord, live: _Live, path) -> None:
        from ingest import file_sha256, ingest_file

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
            self._end_unfinished(record, live, doc_id, "cancelled", "cancelled while ingesting")
            return
        except Exception as exc:  # noqa: BLE001 - a bug or a store failure: report it
            log.exception("ingesting %s (job %s) failed", record.filename, record.id)
            self._end_unfinished(record, live, doc_id, "failed", storage_error_text(exc))
            return
        ok = result.status in OK_RESULTS
        record.result = _result_json(result)
        self._finish(record, live, "done" if ok else "failed", "done" if ok else "failed",
                     result.reason)

    def _library_name(self, record: JobRecord) -> str:
        name = DISPLAY_PREFIX + record.filename
        if record.replace:
            return name
        return numbered(name, {r.path for r in self.runtime.store.documents.list()})

    def _end_unfinished(self, record: JobRecord, live: _Live, doc_id: str, status: str,
                        reason: str) -> None:
        """A job that stopped early: if its document landed anyway, it is done."""
        stored = self.runtime.store.documents.get(doc_id)
        if stored is not None:
            record.result = _result_json(stored, status="ingested")
            note = "" if status == "cancelled" else f"stored; then {reason}"
            self._finish(record, live, "done", "done", note)
        else:
            self._finish(record, live, status, status, reason)

    def _finish(self, record: JobRecord, live: _Live, status: str, stage: str,
                reason: str) -> None:
        if live.lost:
            return  # another server runs it now and records its end
        values = dict(status=status, stage=stage, reason=reason[:300], result=record.result,
                      finished_at=time.time())
        # The upload goes only once the record says the job is over: if the store refuses
        # the update (a full disk), the job stays unfinished and runs again.
        if not self.table.finish(record.id, self.owner, **values):
            log.warning("job %s: taken over by another server before it ended here",
                        record.id)
            return
        record.status, record.stage, record.reason = status, stage, values["reason"]
        record.finished_at = values["finished_at"]
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
