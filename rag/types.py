"""Plain dataclasses that flow between the stages (see DESIGN.md, data flow)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Page:
    number: int  # 1-based physical page (1 for formats without pages)
    text: str


@dataclass(frozen=True)
class Document:
    path: str
    title: str
    mime: str
    sha256: str  # hash of the file's bytes: the document's id
    pages: list[Page]
    empty_pages: int = 0  # pages without a text layer (PDF) that stayed empty
    ocr_pages: tuple[int, ...] = ()  # pages whose text came from OCR (1-based)
    # (page number, char offset, heading path) where a section starts (Markdown, HTML)
    headings: tuple[tuple[int, int, str], ...] = ()

    @property
    def id(self) -> str:
        return self.sha256


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    ordinal: int
    text: str
    page_start: int
    page_end: int
    char_start: int  # offset into the text of page_start
    char_end: int  # offset into the text of page_end (exclusive)
    heading: str = ""
    # The sentence pieces embedded for this chunk, as spans into `text` (rag/text.py);
    # empty: computed from the text when stored.
    pieces: tuple[tuple[tuple[int, int], ...], ...] = ()


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with where it came from and how it scored."""

    chunk_id: str
    doc_id: str
    title: str
    path: str
    text: str
    page_start: int
    page_end: int
    char_start: int
    char_end: int
    heading: str = ""
    score: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    ocr: bool = False  # its text came (in part) from OCR of a scanned page


@dataclass(frozen=True)
class Turn:
    """One earlier exchange of a conversation, as later questions see it."""

    question: str
    answer: str = ""  # the answer's text, with its [n] markers
    doc_ids: tuple[str, ...] = ()  # the documents its answer cited (or, if none, retrieved)
