"""PDF pages through pypdf: one Page per physical page, passwords, reasons for refusals.

Pages without a text layer (scans, fonts without a Unicode map) are read by OCR
(ingest/ocr.py) and listed in `Document.ocr_pages`; `Document.empty_pages` counts
those that stayed empty. Pages that hold a table are read again in pypdf's layout
mode so that each row stays on one line (ingest/tables.py); other pages keep the
plain extraction.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from ingest import ocr
from ingest.errors import LoadError
from ingest.tables import may_hold_table, table_text
from rag.text import ends_sentence
from rag.types import Document, Page

_HYPHEN = re.compile(r"([^\W\d_])-\n([a-z\u00df-\u00ff])")  # "exam-\nple", not "2019-\n2020"
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")
_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi",
                            "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"})
_GLYPH = re.compile(r"/g\d{1,5}")


def clean_page_text(text: str) -> str:
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    text = text.translate(_LIGATURES)  # "ﬂow" must match a search for "flow"
    text = _HYPHEN.sub(r"\1\2", text)  # re-join words hyphenated at line ends
    text = _SPACES.sub(" ", text)
    lines = _paragraph_breaks([line.strip() for line in text.split("\n")])
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def _glyph_soup(text: str) -> bool:
    """Fonts without a Unicode map come out as glyph names (/g152/g135...): that is no
    text layer at all, and indexing it would only pollute search."""
    return sum(map(len, _GLYPH.findall(text))) * 2 > len(text)


def _paragraph_breaks(lines: list[str]) -> list[str]:
    """pypdf drops the space between paragraphs; put a blank line back after a short line
    that ends a sentence, in running text (where most lines are long), so the chunker
    can cut there."""
    widths = sorted(len(line) for line in lines if line)
    if len(widths) < 4 or widths[len(widths) * 4 // 5] < 40:
        return lines  # a table, a slide, a title page
    full = widths[len(widths) * 4 // 5]
    out = []
    for line, after in zip(lines, lines[1:] + [""]):
        out.append(line)
        if (line and after and ends_sentence(line) and len(line) < 0.7 * full
                and (after[0].isupper() or after[0].isdigit() or not after[0].isascii())):
            out.append("")
    return out


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
                    return reader, password
            except Exception as exc:
                raise LoadError(f"encrypted: {_reason(exc)}") from exc
        raise LoadError("encrypted: wrong password" if passwords
                        else "encrypted: password required")
    return reader, ""


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"(?: @\d+)?:? b['\"].*$", "", text)  # drop dumps of the raw bytes
    return text[:200]


def load_pdf(path: Path, data_sha256: str, passwords: Sequence[str] = (), *,
             ocr_languages: str = "auto", on_ocr_page: Callable[[int], None] | None = None
             ) -> Document:
    """One Page per physical page; pages without a text layer through OCR
    (`ocr_languages` as in rag/config.py; `on_ocr_page(n)` as OCR starts page n)."""
    reader, password = _open(path, passwords)
    try:
        raw_pages = list(reader.pages)
    except Exception as exc:
        raise LoadError(f"malformed PDF: {_reason(exc)}") from exc
    if not raw_pages:
        raise LoadError("malformed PDF: no pages")
    texts = [_text_layer(page) for page in raw_pages]
    missing = [n for n, text in enumerate(texts, start=1) if not text]
    read, why = _read_scans(path, password, missing, ocr_languages, on_ocr_page)
    pages = [Page(n, read.get(n, text)) for n, text in enumerate(texts, start=1)]
    if not any(page.text for page in pages):
        raise LoadError(f"no text layer on {_any_of(len(pages))}{why}")
    return Document(path=str(path), title=_title(reader, path), mime="application/pdf",
                    sha256=data_sha256, pages=pages, empty_pages=len(missing) - len(read),
                    ocr_pages=tuple(sorted(read)))


def _text_layer(page) -> str:
    try:
        plain = page.extract_text() or ""
        text = clean_page_text(plain)
    except Exception:  # noqa: BLE001 - one bad page must not lose the document
        return ""
    if len(text.strip()) < 3 or _glyph_soup(text):
        return ""
    return _table_layer(page, text) if may_hold_table(plain) else text


def _table_layer(page, plain: str) -> str:
    """A page that holds a table, read again in pypdf's layout mode so that each row
    stays on one line (ingest/tables.py); any other page keeps its plain text."""
    try:
        table = table_text(page.extract_text(extraction_mode="layout") or "")
    except Exception:  # noqa: BLE001 - layout mode fails on some fonts: keep plain text
        return plain
    text = clean_page_text(table) if table else ""
    return text if len(text) >= 3 and not _glyph_soup(text) else plain


def _read_scans(path: Path, password: str, numbers: list[int], languages: str,
                on_page: Callable[[int], None] | None) -> tuple[dict[int, str], str]:
    """OCR text of the pages `numbers` that it could read, and why the others stayed
    empty (the end of a refusal's reason)."""
    if not numbers:
        return {}, ""
    why = ocr.unavailable(languages)
    if why:
        _notice(why, len(numbers))
        return {}, f" (scanned? {why})"
    read: dict[int, str] = {}
    unread: Counter = Counter()
    failure = ""
    for result in ocr.read_pages(path, numbers, password=password or None,
                                 languages=languages, on_page=on_page):
        text = clean_page_text(result.text)
        if result.status == "read" and len(text) >= 3 and not _glyph_soup(text):
            read[result.number] = text
            continue
        unread[result.status if result.status in _UNREAD else "illegible"] += 1
        failure = failure or result.detail
    parts = []
    for status, n in unread.items():
        one, many = _UNREAD[status]
        part = one if len(numbers) == 1 else many.format(n=n, s="" if n == 1 else "s")
        parts.append(f"{part} ({failure})" if status == "failed" and failure else part)
    return read, ", and OCR found no legible text: " + ", ".join(parts)


_UNREAD = {  # how a page OCR did not read is named in a refusal: alone, and counted
    "blank": ("blank", "{n} blank"),
    "illegible": ("marks but no legible words", "{n} with marks but no legible words"),
    "failed": ("unreadable", "{n} unreadable"),
}
_noticed: set[str] = set()


def _notice(why: str, pages: int) -> None:
    """Once per process: scanned pages stay empty, and why."""
    if why not in _noticed and not why.startswith("OCR is off"):
        _noticed.add(why)
        logging.getLogger("ingest").warning(
            "notice: scanned PDF pages are left empty (%d in this file): %s", pages, why)


def _any_of(n: int) -> str:
    return "its one page" if n == 1 else f"any of {n} pages"


def _title(reader, path: Path) -> str:
    try:
        title = (reader.metadata or {}).get("/Title")
    except Exception:  # noqa: BLE001
        title = None
    title = " ".join(str(title or "").split())
    bad = not title or len(title) < 3 or title.lower() in ("untitled", "title") \
        or title.lower().endswith((".doc", ".docx", ".pdf", ".indd"))
    return path.stem if bad else title[:200]
