"""What a file is, from its first bytes and its name: 'pdf', 'html', 'markdown' or 'text'.

The one place that decides file types: folder ingestion (ingest/loaders.py) and web
uploads (web/uploads.py) both ask `sniff`, so a file is the same kind on either path.

The rule, in order:

1. No bytes: LoadError("empty file").
2. Starts with `%PDF-` (after an optional BOM and whitespace): a PDF, whatever the name.
3. Named `.pdf`: a PDF when `%PDF-` starts within the first 1024 bytes (PDF readers
   tolerate junk before the header); otherwise LoadError naming the file, "not a PDF",
   with a hint when the content is text. A `.pdf` that is really text is refused, not
   read as text: its name promised a PDF, so the user should learn that it is not one.
4. Opens with `<!doctype html` or `<html` (as text): HTML, whatever the name says.
5. Any other extension we do not ingest (.docx, .jpg, .json, ...): UnsupportedFile.
6. Content that does not read as text (UTF-8/16/32 with or without a BOM, else cp1252
   with few control characters) is binary: UnsupportedFile; except that a file with no
   extension, whose name says nothing, is a PDF when `%PDF-` starts within its first
   1024 bytes.
7. Text: HTML when named .html/.htm/.xhtml (or, with no extension, opening with
   `<head`, `<body` or `<!--`), Markdown when named .md/.markdown/..., otherwise text.

So a .md or .txt note that mentions "%PDF-1.7" near its start is text, a real PDF with
junk before its header still loads, and a file without extension goes by its content.
"""

from __future__ import annotations

import codecs
import os
import re
import unicodedata
from pathlib import PurePath

from ingest.errors import LoadError, UnsupportedFile

SNIFF_BYTES = 8192  # how much of the start of a file `sniff` needs
PDF_HEADER = b"%PDF-"
PDF_JUNK_BYTES = 1024  # a .pdf's header may start this far in
TEXT_EXTS = frozenset({".txt", ".text", ".log", ".rst", ".csv", ".tsv", ".org", ".tex"})
MARKDOWN_EXTS = frozenset({".md", ".markdown", ".mdown", ".mkd"})
HTML_EXTS = frozenset({".html", ".htm", ".xhtml"})
# The extension under which a file of each kind is sniffed as that kind again.
KIND_EXTS = {"pdf": ".pdf", "html": ".html", "markdown": ".md", "text": ".txt"}

_HTML_START = ("<!doctype html", "<html")
_HTML_FRAGMENT_START = ("<head", "<body", "<!--")  # only when the name says nothing
_CONTROL_NAME = re.compile(r"[\x00-\x1f\x7f]")

__all__ = ["HTML_EXTS", "KIND_EXTS", "MARKDOWN_EXTS", "PDF_HEADER", "PDF_JUNK_BYTES",
           "SNIFF_BYTES", "TEXT_EXTS", "sniff"]


def sniff(head: bytes, name: str | os.PathLike[str]) -> str:
    """The kind of a file, 'pdf', 'html', 'markdown' or 'text', from its first bytes
    (`SNIFF_BYTES` of them) and its name (only the name's extension counts).

    Raises LoadError (a supported type that cannot be read: empty, a .pdf that is not a
    PDF) or UnsupportedFile (a type we do not ingest), each with a one-line reason.
    """
    filename = PurePath(name).name
    ext = PurePath(filename).suffix.lower()
    if not head:
        raise LoadError("empty file")
    if head.removeprefix(codecs.BOM_UTF8).lstrip().startswith(PDF_HEADER):
        return "pdf"
    if ext == ".pdf":
        if _pdf_header_near_start(head):
            return "pdf"
        hint = "; it reads as text: rename it .txt to ingest it as text" \
            if _head_text(head) is not None else ""
        raise LoadError(f"{_label(filename)}: not a PDF: no {PDF_HEADER.decode()} header"
                        f" in its first {PDF_JUNK_BYTES} bytes{hint}")
    text = _head_text(head)
    opening = text.lstrip("\ufeff \t\r\n\f").lower() if text is not None else ""
    if opening.startswith(_HTML_START):
        return "html"
    if ext and ext not in TEXT_EXTS | MARKDOWN_EXTS | HTML_EXTS:
        raise UnsupportedFile(f"unsupported file type: {ext}")
    if text is None:
        if not ext and _pdf_header_near_start(head):
            return "pdf"
        raise UnsupportedFile(f"unsupported file type: {ext or 'no extension'} (binary"
                              " content, not PDF, HTML or text)")
    if ext in HTML_EXTS or (not ext and opening.startswith(_HTML_FRAGMENT_START)):
        return "html"
    if ext in MARKDOWN_EXTS:
        return "markdown"
    return "text"


def _pdf_header_near_start(head: bytes) -> bool:
    return 0 <= head.find(PDF_HEADER, 0, PDF_JUNK_BYTES + len(PDF_HEADER) - 1) < PDF_JUNK_BYTES


def _label(filename: str) -> str:
    """The file's name for a one-line reason: no control characters, bounded length."""
    label = _CONTROL_NAME.sub("?", filename) or "file"
    return label if len(label) <= 120 else label[:117] + "..."


def _head_text(head: bytes) -> str | None:
    """The first bytes of a file as text, or None when they look binary.

    A character cut at the end of the sample does not make it binary.
    """
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32")):
        if head.startswith(bom):
            return head[: len(head) // 4 * 4].decode(codec, errors="replace")
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
