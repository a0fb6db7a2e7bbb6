"""Durable upload jobs: their records in a `jobs` table and their bytes in the store's folder.

An accepted upload is first written to `<store>/uploads/<job id><ext>` (via a
`.part` file, renamed once complete) and recorded as a `queued` row; only then
does the client get its 202. A job's row changes when it starts, ends or is
cancelled (its progress lives in the serving process's memory: it would cost
a table version per step). So after a crash or a stop, every job that was not
finished is still `queued` or `running` in the table, with its bytes beside
it, and the next server start resumes it; a finished job's id keeps answering.

Ingestion is idempotent (a document's id is the hash of its bytes; chunks are
written before the row that makes them visible), so re-running a job that was
cut short is always safe.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pyarrow as pa

from rag.store.documents import id_list, quote
from rag.store.migrations import open_or_create

FINISHED = ("done", "failed", "cancelled")
KEEP_DAYS = 30.0  # finished job records older than this are dropped at start
KEEP_MAX = 5000  # and at most this many finished records are kept

SCHEMA = pa.schema([
    pa.field("id", pa.string()), pa.field("filename", pa.string()),
    pa.field("status", pa.string()), pa.field("kind", pa.string()),
    pa.field("size", pa.int64()), pa.field("replace", pa.bool_()),
    pa.field("upload", pa.string()), pa.field("stage", pa.string()),
    pa.field("reason", pa.string()), pa.field("result", pa.string()),
    pa.field("created_at", pa.float64()), pa.field("finished_at", pa.float64()),
])


@dataclass
class JobRecord:
    id: str
    filename: str  # the sanitised name the client gave
    status: str  # queued, running, done, failed, cancelled
    kind: str = ""
    size: int = 0
    replace: bool = False  # replace the library's documents of the same name
    upload: str = ""  # the stored upload's file name under <store>/uploads
    stage: str = "queued"
    reason: str = ""
    result: str = ""  # JSON of the ingestion result, "" until finished
    created_at: float = 0.0
    finished_at: float = 0.0  # 0 until finished

    def result_json(self) -> dict | None:
        return json.loads(self.result) if self.result else None


_NAMES = [f.name for f in fields(JobRecord)]


class JobTable:
    """The `jobs` table (created on first use) and the uploads folder beside the tables."""

    def __init__(self, db, folder: Path):
        self.db = db
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one commit at a time from this process
        self.table = open_or_create(db, "jobs", SCHEMA)

    # -- uploads -----------------------------------------------------------
    def upload_path(self, stored: str) -> Path:
        return self.folder / stored

    def part_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.part"

    def remove_upload(self, stored: str) -> None:
        if stored:
            self.upload_path(stored).unlink(missing_ok=True)

    def pending_bytes(self) -> int:
        total = 0
        for path in self.folder.iterdir():
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # finished meanwhile
                pass
        return total

    # -- records -------------------------------------------------------------
    def add(self, records: Iterable[JobRecord]) -> None:
        rows = [asdict(r) for r in records]
        if rows:
            with self._lock:
                self.table.add(rows)

    def update(self, job_id: str, **values) -> None:
        values = {k: v for k, v in values.items() if k in _NAMES}
        with self._lock:
            self.table.update(where=f"id = {quote(job_id)}", values=values)

    def get(self, job_id: str) -> JobRecord | None:
        rows = self.table.search().where(f"id = {quote(job_id)}").limit(1).to_list()
        return self._record(rows[0]) if rows else None

    def recent(self, limit: int = 500) -> list[JobRecord]:
        rows = self.table.to_arrow().to_pylist()
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        return [self._record(r) for r in rows[:limit]]

    def unfinished(self) -> list[JobRecord]:
        """Queued and running jobs, oldest first (the order they were accepted in)."""
        where = f"status NOT IN ({id_list(FINISHED)})"
        rows = self.table.search().where(where).limit(None).to_list()
        return sorted((self._record(r) for r in rows), key=lambda r: r.created_at)

    def count_unfinished(self) -> int:
        return self.table.count_rows(f"status NOT IN ({id_list(FINISHED)})")

    def prune(self, now: float | None = None) -> int:
        """Forget old finished jobs (KEEP_DAYS, KEEP_MAX) and remove upload files left
        behind: a finished job's copy (a stop between its record and the removal), or an
        unknown file older than ten minutes (a `.part` of a crash). The records dropped."""
        now = time.time() if now is None else now
        rows = self.table.search().where(f"status IN ({id_list(FINISHED)})") \
            .select(["id", "upload", "finished_at"]).limit(None).to_list()
        rows.sort(key=lambda r: r["finished_at"], reverse=True)
        old = [r["id"] for i, r in enumerate(rows)
               if i >= KEEP_MAX or r["finished_at"] < now - KEEP_DAYS * 86400]
        if old:
            with self._lock:
                self.table.delete(f"id IN ({id_list(old)})")
        finished = {r["upload"] for r in rows if r["upload"]}
        keep = {r.upload for r in self.unfinished()}
        for path in self.folder.iterdir():
            # An unknown file may be an upload being accepted right now (its record comes
            # after its bytes): only an old one is a leftover.
            if path.name in finished or (path.name not in keep and _older_than(path, 600)):
                path.unlink(missing_ok=True)
        return len(old)

    @staticmethod
    def _record(row: dict) -> JobRecord:
        return JobRecord(**{k: row[k] for k in _NAMES})


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return path.stat().st_mtime < time.time() - seconds
    except FileNotFoundError:
        return False


def write_upload(source, target: Path, part: Path, limit: int, block: int = 1 << 20) -> int:
    """Copy a readable binary stream to `target` through `part`, at most `limit` bytes:
    the size, or -1 (nothing kept) when the stream is longer than `limit`."""
    size = 0
    try:
        with open(part, "wb") as out:
            while chunk := source.read(block):
                size += len(chunk)
                if size > limit:
                    break
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size > limit:
            part.unlink(missing_ok=True)
            return -1
        part.replace(target)
        return size
    except BaseException:
        part.unlink(missing_ok=True)
        raise
