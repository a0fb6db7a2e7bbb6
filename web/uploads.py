"""What the web adds to ingestion's file checks: harmless names and one rejection type.

The client's filename is only ever a label: it is reduced to a sanitized
basename for display and never used as a path. The type of an upload is
decided by ingestion's sniffer (ingest/filetypes.py), the same one that `rag
ingest` uses, so a file is the same kind on either path; the stored copy is
named `<job id><ext>` with the extension of that kind, so the loader sees the
type we checked, not the one claimed.

Also here: the per-file limits of an upload request (`Limits`, `Refusal`) and the
rule that numbers a name the library already has ("report (2).pdf").
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from ingest.errors import LoadError, UnsupportedFile
from ingest.filetypes import KIND_EXTS, sniff

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
    min_free_bytes: int  # free disk to keep (507 below it)

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
