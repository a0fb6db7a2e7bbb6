"""PDF pages through pypdf: one Page per physical page, passwords, reasons for refusals."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from ingest.errors import LoadError
from rag.types import Document, Page

_HYPHEN = re.compile(r"([^\W\d_])-\n([a-z\u00df-\u00ff])")  # "exam-\nple", not "2019-\n2020"
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")


def clean_page_text(text: str) -> str:
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    text = _HYPHEN.sub(r"\1\2", text)  # re-join words hyphenated at line ends
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


def _open(path: Path, passwords: Sequence[str]):
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path), strict=False)
    except (PdfReadError, ValueError, KeyError, TypeError, IndexError, AttributeError,
            OSError, RecursionError, AssertionError, ZeroDivisionError) as exc:
        raise LoadError(f"malformed PDF: {_reason(exc)}") from exc
    if reader.is_encrypted:
        for password in ("", *passwords):
            try:
                if reader.decrypt(password):
                    return reader
            except Exception as exc:  # noqa: BLE001 - unsupported or broken encryption
                raise LoadError(f"encrypted: {_reason(exc)}") from exc
        raise LoadError("encrypted: wrong password" if passwords
                        else "encrypted: password required")
    return reader


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def load_pdf(path: Path, data_sha256: str, passwords: Sequence[str] = ()) -> Document:
    reader = _open(path, passwords)
    try:
        raw_pages = list(reader.pages)
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types on broken trees
        raise LoadError(f"malformed PDF: {_reason(exc)}") from exc
    if not raw_pages:
        raise LoadError("malformed PDF: no pages")
    pages, empty = [], 0
    for number, page in enumerate(raw_pages, start=1):
        try:
            text = clean_page_text(page.extract_text() or "")
        except Exception:  # noqa: BLE001 - one bad page must not lose the document
            text = ""
        if len(text.strip()) < 3:
            empty += 1
            text = ""
        pages.append(Page(number, text))
    if empty == len(pages):
        raise LoadError(f"no text layer on any of {len(pages)} pages (scanned? needs OCR)")
    return Document(path=str(path), title=_title(reader, path), mime="application/pdf",
                    sha256=data_sha256, pages=pages, empty_pages=empty)


def _title(reader, path: Path) -> str:
    try:
        title = (reader.metadata or {}).get("/Title")
    except Exception:  # noqa: BLE001
        title = None
    title = " ".join(str(title or "").split())
    bad = not title or len(title) < 3 or title.lower() in ("untitled", "title") \
        or title.lower().endswith((".doc", ".docx", ".pdf", ".indd"))
    return path.stem if bad else title[:200]
