"""What the web adds to ingestion's file checks: harmless names and one rejection type.

The client's filename is only ever a label: it is reduced to a sanitized
basename for display and never used as a path. The type of an upload is
decided by ingestion's sniffer (ingest/filetypes.py), the same one that `rag
ingest` uses, so a file is the same kind on either path; the stored copy is
named `<job id><ext>` with the extension of that kind, so the loader sees the
type we checked, not the one claimed.

Also here: the per-file limits of an upload request (`Limits`, `Refusal`), keeping
each accepted file's bytes in the store (`store_uploads`), and the rule that
numbers a name the library already has ("report (2).pdf").
"""

from __future__ import annotations

import re
import time
import unicodedata
import uuid
from dataclasses import dataclass

from ingest.errors import LoadError, UnsupportedFile
from ingest.filetypes import KIND_EXTS, SNIFF_BYTES, sniff
from rag.store.jobs import JobRecord, JobTable
from web.errors import storage_error_text

MAX_NAME = 120
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*\\/]')


class RejectedUpload(ValueError):
    """The upload is not a file we ingest; the message says why in one line."""


@dataclass(frozen=True)
class Sniffed:
    kind: str  # "pdf", "html", "markdown" or "text"
    ext: str  # the extension the stored copy gets, chosen from the kind


def safe_filename(name: str | None) -> str:
    """A display name: the last path component, no control or path characters, bounded length."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[/\\]", name)[-1]  # "../../etc/passwd" -> "passwd", "C:\\x\\y.pdf" -> "y.pdf"
    name = _UNSAFE_CHARS.sub("_", name).strip().lstrip(".").strip()
    if len(name) > MAX_NAME:
        _, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 10 else ""
        name = name[: MAX_NAME - len(keep) - 1].rstrip() + ("." + keep if keep else "")
    return name or "upload"


def check_upload(head: bytes, filename: str) -> Sniffed:
    """The kind of an upload from its first bytes and its (display) name, by ingestion's
    sniffer; RejectedUpload with ingestion's one-line reason when it is not one we ingest."""
    try:
        kind = sniff(head, filename)
    except (LoadError, UnsupportedFile) as exc:
        raise RejectedUpload(str(exc)) from exc
    return Sniffed(kind, KIND_EXTS[kind])


def numbered(name: str, taken: set[str]) -> str:
    """`name` if free, else the first free "stem (n).ext" (n = 2, 3, ...)."""
    if name not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or "/" in ext:
        stem, ext = name, ""
    n = 2
    while (candidate := f"{stem} ({n})" + (f".{ext}" if ext else "")) in taken:
        n += 1
    return candidate


@dataclass(frozen=True)
class Limits:
    file_bytes: int  # one file (413 past it)
    request_files: int  # files in one request (413 for the rest)
    queued_jobs: int  # unfinished jobs (429 past it)
    pending_bytes: int  # bytes of unfinished uploads (507 past it)
    # Free disk to keep (507 below it), where a local store keeps uploads. A store on
    # object storage has no free space to measure: there pending_bytes and queued_jobs
    # bound what waits, and the bucket's own quota (if any) answers 507 as a failed write.
    min_free_bytes: int

    @classmethod
    def from_config(cls, config) -> Limits:
        mb = 1024 * 1024
        return cls(config.max_upload_mb * mb, config.max_request_files, config.max_queued_jobs,
                   config.max_pending_mb * mb, config.min_free_mb * mb)


@dataclass(frozen=True)
class Refusal:
    filename: str
    status: int  # 413, 429 or 507
    error: str

    def to_json(self) -> dict:
        return {"filename": self.filename, "status": self.status, "error": self.error}


def store_uploads(table: JobTable, limits: Limits, files: list[tuple[str | None, object, int]],
                  replace: bool) -> tuple[list[JobRecord], list[Refusal]]:
    """Keep the bytes of each upload (name, binary stream, size) within the limits in the
    store: its job record (queued, or failed when its type is refused; not yet added to
    the table), or its refusal."""
    accepted: list[JobRecord] = []
    refused: list[Refusal] = []
    queued = table.count_unfinished()
    pending = table.pending_bytes()
    for index, (name, stream, size) in enumerate(files):
        filename = safe_filename(name)
        refusal = _over_limit(table, limits, filename, size, index, queued, pending)
        if refusal is not None:
            refused.append(refusal)
            continue
        try:
            record = _store_upload(table, limits, filename, stream, replace)
        except (OSError, RuntimeError) as exc:  # a full disk, an object store's refusal
            refused.append(Refusal(filename, 507, f"{filename}: {storage_error_text(exc)}"))
            continue
        if record is None:
            refused.append(Refusal(filename, 413, _too_large(limits, filename)))
            continue
        accepted.append(record)
        if record.status == "queued":
            queued += 1
            pending += record.size
    return accepted, refused


def _over_limit(table: JobTable, limits: Limits, filename: str, size: int, index: int,
                queued: int, pending: int) -> Refusal | None:
    if index >= limits.request_files:
        return Refusal(filename, 413, f"{filename}: more than {limits.request_files} files"
                       " in one request; send the rest in another")
    if size > limits.file_bytes:
        return Refusal(filename, 413, _too_large(limits, filename))
    if queued >= limits.queued_jobs:
        return Refusal(filename, 429, f"{filename}: {queued} uploads are waiting (limit"
                       f" {limits.queued_jobs}); try again when some have finished")
    if pending + size > limits.pending_bytes:
        return Refusal(filename, 507, f"{filename}: waiting uploads would exceed"
                       f" {limits.pending_bytes // (1024 * 1024)} MB; try again when some"
                       " have finished")
    free = table.free_bytes()  # None on object storage: no disk of ours to fill
    if free is not None and free - size < limits.min_free_bytes:
        return Refusal(filename, 507, f"{filename}: storage full ({free // (1024 * 1024)} MB"
                       " free); delete documents or free disk space")
    return None


def _too_large(limits: Limits, filename: str) -> str:
    return f"{filename}: larger than {limits.file_bytes // (1024 * 1024)} MB"


def _store_upload(table: JobTable, limits: Limits, filename: str, stream,
                  replace: bool) -> JobRecord | None:
    """The job of one upload, its bytes stored; None when it is longer than allowed."""
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
    size = table.store_upload(record.upload, stream, limits.file_bytes)
    if size < 0:
        return None
    record.size = size
    return record
