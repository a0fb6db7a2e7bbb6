"""Durable upload jobs: their records in a `jobs` table, their bytes in the store's files.

An accepted upload is first stored (rag/store/files.py: a file under
`<store>/uploads`, or a row of the `uploads` table on object storage) and then
recorded as a `queued` row; only then does the client get its 202. A job's row
changes when it is claimed, renewed, ended or cancelled (its fine-grained
progress lives in the memory of the process running it: it would cost a table
version per step). So after a crash or a stop, every job that was not finished
is still `queued` or `running` in the table, with its bytes in the store, and a
finished job's id keeps answering, on every replica that opens the store.

Claims and leases (several servers on one store). A job is run by the process
that claimed it: `owner` (rag/store/writers.py: identity) and `lease_until`
(seconds since the epoch). `claim` is one conditional update: the row changes
only if the job is unfinished and its lease ran out (a queued job's is 0) or
its owner is provably dead; LanceDB re-runs an update whose rows another commit
changed first, so two replicas never both claim a job (tests/test_s3.py races
them). The owner renews the lease while it works (`renew`, conditional on still
owning it); it records the end only while it still owns the job (`finish`). A
job whose owner stopped renewing (killed, cut off from the store) is claimed
again once its lease runs out, by any replica. Clocks of replicas must agree to
well within a lease (NTP does).

Ingestion is idempotent (a document's id is the hash of its bytes; chunks are
written before the row that makes them visible), so running a job again after
its owner was cut short is always safe.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from rag.store.documents import id_list, quote
from rag.store.files import Files, Folder
from rag.store.migrations import open_or_create
from rag.store.writers import provably_dead, retrying

FINISHED = ("done", "failed", "cancelled")
UNFINISHED = ("queued", "running")
KEEP_DAYS = 30.0  # finished job records older than this are dropped at start
KEEP_MAX = 5000  # and at most this many finished records are kept
STRAY_S = 600.0  # an upload without a record is a leftover once this old

SCHEMA = pa.schema([
    pa.field("id", pa.string()), pa.field("filename", pa.string()),
    pa.field("status", pa.string()), pa.field("kind", pa.string()),
    pa.field("size", pa.int64()), pa.field("replace", pa.bool_()),
    pa.field("upload", pa.string()), pa.field("stage", pa.string()),
    pa.field("reason", pa.string()), pa.field("result", pa.string()),
    pa.field("created_at", pa.float64()), pa.field("finished_at", pa.float64()),
    pa.field("owner", pa.string()), pa.field("lease_until", pa.float64()),
])
# Columns added after the table's first release, with their value for old rows.
ADDED = {"owner": "CAST('' AS STRING)", "lease_until": "CAST(0 AS DOUBLE)"}


@dataclass
class JobRecord:
    id: str
    filename: str  # the sanitised name the client gave
    status: str  # queued, running, done, failed, cancelled
    kind: str = ""
    size: int = 0
    replace: bool = False  # replace the library's documents of the same name
    upload: str = ""  # the stored upload's name (rag/store/files.py)
    stage: str = "queued"
    reason: str = ""
    result: str = ""  # JSON of the ingestion result, "" until finished
    created_at: float = 0.0
    finished_at: float = 0.0  # 0 until finished
    owner: str = ""  # the process that claimed it (writers.identity), "" before
    lease_until: float = 0.0  # its claim holds until then (seconds since the epoch)

    def result_json(self) -> dict | None:
        return json.loads(self.result) if self.result else None


_NAMES = [f.name for f in fields(JobRecord)]


def open_jobs(db):
    """The `jobs` table, created on first use; a table of an older release gets the
    claim columns (`add_columns` writes only them: the table is not rewritten)."""
    table = open_or_create(db, "jobs", SCHEMA)
    missing = {k: v for k, v in ADDED.items() if k not in table.schema.names}
    if missing:
        try:
            table.add_columns(missing)
        except (ValueError, OSError, RuntimeError):
            table = db.open_table("jobs")  # another process added them first
            if not set(ADDED) <= set(table.schema.names):
                raise
    return table


class JobTable:
    """The `jobs` table and the uploads' bytes (a folder, or the store's `uploads` table)."""

    def __init__(self, db, uploads: Files | Path):
        self.db = db
        self.files = Folder(uploads) if isinstance(uploads, (str, Path)) else uploads
        self.folder = self.files.folder  # None when the store is on object storage
        self._lock = threading.Lock()  # one commit at a time from this process
        self.table = open_jobs(db)

    # -- uploads -----------------------------------------------------------
    def store_upload(self, stored: str, source: BinaryIO, limit: int) -> int:
        """Keep an upload's bytes (at most `limit`): its size, or -1 when longer."""
        return self.files.put_stream(stored, source, limit)

    def upload_copy(self, stored: str) -> contextlib.AbstractContextManager[Path | None]:
        """A local path to the upload while the context lasts (None if it is gone)."""
        return self.files.local_copy(stored)

    def remove_upload(self, stored: str) -> None:
        self.files.delete(stored)

    def pending_bytes(self) -> int:
        return sum(e.size for e in self.files.entries())

    def free_bytes(self) -> int | None:
        """Free space where uploads are kept; None on object storage (no such bound)."""
        return self.files.free_bytes()

    # -- records -------------------------------------------------------------
    def add(self, records: Iterable[JobRecord]) -> None:
        rows = [asdict(r) for r in records]
        if rows:
            self._write(lambda: self.table.add(pa.Table.from_pylist(rows, schema=SCHEMA)))

    def update(self, job_id: str, **values) -> None:
        self._update(f"id = {quote(job_id)}", values)

    def _update(self, where: str, values: dict) -> int:
        values = {k: v for k, v in values.items() if k in _NAMES}
        return self._write(lambda: self.table.update(where=where, values=values)).rows_updated

    def _write(self, write):
        with self._lock:
            return retrying(write)

    def get(self, job_id: str) -> JobRecord | None:
        """The job's record; a miss looks at the latest version at once (a job another
        replica accepted a moment ago is not missed for READ_CONSISTENCY_S)."""
        for attempt in range(2):
            rows = self.table.search().where(f"id = {quote(job_id)}").limit(1).to_list()
            if rows or attempt:
                break
            self.table.checkout_latest()
        return self._record(rows[0]) if rows else None

    def recent(self, limit: int = 500) -> list[JobRecord]:
        rows = self.table.to_arrow().to_pylist()
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        return [self._record(r) for r in rows[:limit]]

    def unfinished(self) -> list[JobRecord]:
        """Queued and running jobs, oldest first (the order they were accepted in)."""
        rows = self.table.search().where(f"status IN ({id_list(UNFINISHED)})") \
            .limit(None).to_list()
        return sorted((self._record(r) for r in rows), key=lambda r: r.created_at)

    def count_unfinished(self) -> int:
        return self.table.count_rows(f"status IN ({id_list(UNFINISHED)})")

    # -- claims ----------------------------------------------------------------
    def claimable(self, now: float | None = None) -> list[JobRecord]:
        """Unfinished jobs nobody holds: never claimed, lease run out, or owner provably
        dead (a crashed process on this machine), oldest first."""
        now = time.time() if now is None else now
        return [r for r in self.unfinished()
                if r.lease_until < now or (r.owner and provably_dead(r.owner))]

    def claim(self, record: JobRecord, owner: str, lease_s: float) -> bool:
        """Take `record` (as `claimable` listed it) for `owner` until now + `lease_s`, and
        mark it running: True when this process got it, False when another did first."""
        now = time.time()
        held = f"lease_until < {now!r}"
        if record.owner and record.lease_until >= now and provably_dead(record.owner):
            held = f"owner = {quote(record.owner)}"  # a dead process's lease: take it now
        where = f"id = {quote(record.id)} AND status IN ({id_list(UNFINISHED)}) AND {held}"
        return self._update(where, {"owner": owner, "lease_until": now + lease_s,
                                    "status": "running", "stage": "parsing"}) == 1

    def renew(self, job_id: str, owner: str, lease_s: float, stage: str = "") -> bool:
        """Extend `owner`'s lease (and show its stage to other replicas); False when the
        job is no longer its own running job (taken over, or cancelled elsewhere)."""
        values = {"lease_until": time.time() + lease_s}
        if stage:
            values["stage"] = stage
        return self._update(f"id = {quote(job_id)} AND owner = {quote(owner)} AND"
                            " status = 'running'", values) == 1

    def finish(self, job_id: str, owner: str, **values) -> bool:
        """Record the end of `owner`'s job; False (nothing written) when another process
        has taken it over meanwhile."""
        return self._update(f"id = {quote(job_id)} AND owner = {quote(owner)}",
                            dict(values, lease_until=0.0)) == 1

    def cancel_queued(self, job_id: str, reason: str) -> bool:
        """Cancel a job nobody has claimed yet; False if it is not (or no longer) queued."""
        return self._update(f"id = {quote(job_id)} AND status = 'queued'", {
            "status": "cancelled", "stage": "cancelled", "reason": reason,
            "finished_at": time.time()}) == 1

    def cancel_running(self, job_id: str, reason: str) -> bool:
        """Mark another process's running job cancelled: its owner stops at its next
        renewal (and records "done" instead if its document was already stored)."""
        return self._update(f"id = {quote(job_id)} AND status = 'running'", {
            "status": "cancelled", "stage": "cancelled", "reason": reason,
            "finished_at": time.time()}) == 1

    # -- upkeep ------------------------------------------------------------------
    def prune(self, now: float | None = None) -> int:
        """Forget old finished jobs (KEEP_DAYS, KEEP_MAX) and remove uploads left
        behind: a finished job's copy (a stop between its record and the removal), or an
        unknown one older than STRAY_S (a `.part` of a crash). The records dropped."""
        now = time.time() if now is None else now
        rows = self.table.search().where(f"status IN ({id_list(FINISHED)})") \
            .select(["id", "upload", "finished_at"]).limit(None).to_list()
        rows.sort(key=lambda r: r["finished_at"], reverse=True)
        old = [r["id"] for i, r in enumerate(rows)
               if i >= KEEP_MAX or r["finished_at"] < now - KEEP_DAYS * 86400]
        if old:
            self._write(lambda: self.table.delete(f"id IN ({id_list(old)})"))
        finished = {r["upload"] for r in rows if r["upload"]}
        keep = {r.upload for r in self.unfinished()}
        # An unknown upload may be one being accepted right now (its record comes after
        # its bytes), here or on another replica: only an old one is a leftover.
        self.files.delete_many(e.name for e in self.files.entries()
                               if e.name in finished
                               or (e.name not in keep and e.modified < time.time() - STRAY_S))
        return len(old)

    @staticmethod
    def _record(row: dict) -> JobRecord:
        return JobRecord(**{k: row[k] for k in _NAMES if k in row})
