"""Uploaded bytes -> a safe file on disk, its type checked from content, its name made harmless.

The client's filename is only ever a label: it is reduced to a sanitized
basename for display and never used as a path. The bytes are written under
the upload folder as `<job id><ext>`, where the extension comes from what the
content is (a PDF by its magic bytes, HTML by its opening tags, text by its
encoding), so the loader sees the type we checked, not the one claimed.
"""

from __future__ import annotations

import codecs
import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SNIFF_BYTES = 8192
MB = 1 << 20  # max_upload_mb counts binary megabytes
MAX_NAME = 120
HTML_EXTS = {".html", ".htm", ".xhtml"}
MARKDOWN_EXTS = {".md", ".markdown", ".mdown", ".mkd"}
_HTML_START = (b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*\\/]')


class RejectedUpload(ValueError):
    """The upload is not a file we ingest; the message says why in one line."""


class UploadTooLarge(RejectedUpload):
    """The upload is over the size limit."""


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


def sniff(head: bytes, filename: str) -> Sniffed:
    """The content type of an upload from its first bytes (and, for text, its name)."""
    ext = Path(filename).suffix.lower()
    if not head:
        raise RejectedUpload("empty file")
    if head.startswith(b"%PDF-") or b"%PDF-" in head[:1024]:
        return Sniffed("pdf", ".pdf")
    if ext == ".pdf":
        raise RejectedUpload("not a PDF: the file does not start with %PDF")
    text = _decode_head(head)
    if text is None:
        raise RejectedUpload(f"unsupported file type: {ext or 'no extension'} content is not"
                             " PDF, HTML or text (binary data)")
    lowered = text.lstrip("\ufeff \t\r\n").lower().encode("utf-8", "replace")
    if ext in HTML_EXTS or lowered.startswith(_HTML_START):
        return Sniffed("html", ".html")
    if ext in MARKDOWN_EXTS:
        return Sniffed("markdown", ".md")
    return Sniffed("text", ".txt")


def _decode_head(head: bytes) -> str | None:
    """The first bytes as text, or None when they look binary."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return head[: len(head) // 2 * 2].decode("utf-16", errors="replace")
    if head.startswith(codecs.BOM_UTF8):
        head = head[3:]
    elif _utf16_without_bom(head):
        codec = "utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be"
        return head[: len(head) // 2 * 2].decode(codec, errors="replace")
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the sample
            text = head.decode("cp1252", errors="replace")
        else:
            text = head[: exc.start].decode("utf-8")
    controls = sum(1 for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n\r\f")
    return None if controls > len(text) // 100 + 1 else text


def _utf16_without_bom(head: bytes) -> bool:
    sample = head[:512]
    if len(sample) < 4:
        return False
    zeros_even, zeros_odd = sample[0::2].count(0), sample[1::2].count(0)
    half = len(sample) // 2
    return max(zeros_even, zeros_odd) > half * 0.6 and min(zeros_even, zeros_odd) < half * 0.1


def save_upload(source: BinaryIO, folder: Path, stem: str, filename: str,
                max_bytes: int) -> tuple[Path, Sniffed, int]:
    """Check and copy one upload into `folder` as `<stem><ext>`; returns (path, type, size)."""
    source.seek(0)
    head = source.read(SNIFF_BYTES)
    kind = sniff(head, filename)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stem}{kind.ext}"
    size = 0
    try:
        with open(target, "xb") as out:
            out.write(head)
            size = len(head)
            while block := source.read(1 << 20):
                size += len(block)
                if size > max_bytes:
                    raise UploadTooLarge(f"{filename}: larger than the"
                                         f" {_mb(max_bytes)} upload limit")
                out.write(block)
        if size > max_bytes:
            raise UploadTooLarge(f"{filename}: larger than the {_mb(max_bytes)} upload limit")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target, kind, size


def _mb(n: int) -> str:
    return f"{n / MB:g} MB"


def clear_folder(folder: Path) -> None:
    """Remove uploads left by a previous run (their jobs died with it)."""
    shutil.rmtree(folder, ignore_errors=True)
