"""Sentences and sentence pieces: the one splitter shared by ingestion, search and citations.

`sentence_spans` finds sentence boundaries: Latin/Cyrillic punctuation followed
by space; CJK, Devanagari, Arabic and Thai-style enders, which need no space
after them; a line that starts a list item; a run of two or more spaces (table
cells and layout gaps). Citation markers written after the full stop
(`... 1932. [1] Next`) stay with the sentence they close.

`piece_spans` turns a chunk's text into the pieces that are embedded on their
own ("sentence vectors"): one sentence each, short ones joined to the next,
long ones cut at spaces. A piece is stored as its spans into the chunk text
(segments joined by one space), so search reads back exactly what was embedded
without splitting again, and a change to this module cannot silently misalign
the vectors of a store written before it.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata

Span = tuple[int, int]
Piece = tuple[Span, ...]  # segments of the text, joined with one space

# Characters that end a sentence: followed by space (Latin), or on their own (others).
LATIN_ENDERS = ".!?;"
OTHER_ENDERS = "。！？；।॥؟۔"
_CLOSERS = "\"'”’)\\]"
_MARKERS = r"(?:\s*\[\d+\])*"  # citation markers after the full stop belong to the sentence
SENTENCE_END = re.compile(
    rf"(?:[{LATIN_ENDERS}][{_CLOSERS}]*{_MARKERS}\s+)"
    rf"|(?:[{OTHER_ENDERS}]+[\"'”’）」』]*{_MARKERS}\s*)"
    r"|(?:\n(?=\s*(?:[-*•·]|\d+[.)])\s))"
    r"|(?:[ \u00a0]{2,})")
_LINE_END = re.compile(rf"(?:[{LATIN_ENDERS}{OTHER_ENDERS}:][{_CLOSERS}”’）」』]*)$")
PARAGRAPH = re.compile(r"\n\s*\n")

PIECE_MIN_CHARS = 24  # shorter sentences ("Text:", "Results.") join the next one
PIECE_MAX_CHARS = 400  # longer ones (tables, unpunctuated Thai) are cut at spaces


def spans(text: str, pattern: re.Pattern, start: int = 0, end: int | None = None) -> list[Span]:
    """`text[start:end]` cut after every match of `pattern` (separators stay with the left)."""
    end = len(text) if end is None else end
    out, pos = [], start
    for match in pattern.finditer(text, start, end):
        if match.end() > pos:
            out.append((pos, match.end()))
            pos = match.end()
    if pos < end:
        out.append((pos, end))
    return out


def trim(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Trimmed sentence spans of `text[start:end]`, paragraph breaks included as boundaries."""
    out = []
    for p_start, p_end in spans(text, PARAGRAPH, start, end):
        for a, b in spans(text, SENTENCE_END, p_start, p_end):
            a, b = trim(text, a, b)
            if b > a:
                out.append((a, b))
    return out


def ends_sentence(line: str) -> bool:
    """Whether a line ends like a sentence (or a colon introducing what follows)."""
    return bool(_LINE_END.search(line.rstrip()))


def is_mark(text: str, i: int) -> bool:
    # Thai and Devanagari vowel signs and tone marks (category M*) belong to the letter before.
    return 0 < i < len(text) and unicodedata.category(text[i]).startswith("M")


def windows(text: str, start: int, end: int, size_units: int, max_units: int) -> list[Span]:
    """Split an over-long span into near-equal windows: at line breaks (table rows) or
    spaces where there are any in the window's back half, else between characters
    (never before a combining mark)."""
    count = math.ceil(size_units / max_units)
    size = (end - start) / count
    cuts, pos = [start], start
    for i in range(1, count):
        target = int(start + i * size)
        floor = int(pos + size / 2)
        cut = target
        for sep in ("\n", " "):
            found = text.rfind(sep, floor, target + 1)
            if found > pos:
                cut = found + 1
                break
        while is_mark(text, cut) and cut > pos + 1:
            cut -= 1
        cuts.append(cut)
        pos = cut
    cuts.append(end)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def piece_spans(text: str, *, min_chars: int = PIECE_MIN_CHARS,
                max_chars: int = PIECE_MAX_CHARS) -> list[Piece]:
    """A chunk's text as sentence-sized pieces, each embedded on its own.

    A small embedder matches a question to the one sentence that answers it
    far better than to a whole chunk (covidqa, MiniLM: vector-only hit@5 0.56
    for chunks, 0.68 for their best sentence). Every word of the text is in
    exactly one piece, in order; the list is empty only for blank text.
    """
    pieces: list[list[Span]] = []
    carry: list[Span] = []
    for start, end in sentence_spans(text):
        for a, b in windows(text, start, end, end - start, max_chars):
            a, b = trim(text, a, b)
            if b <= a:
                continue
            segments = carry + [(a, b)]
            if sum(y - x for x, y in segments) + len(segments) - 1 < min_chars:
                carry = segments
            else:
                pieces.append(segments)
                carry = []
    if carry:
        if pieces:
            pieces[-1].extend(carry)
        else:
            pieces.append(carry)
    return [tuple(p) for p in pieces]


def piece_text(text: str, piece: Piece) -> str:
    return " ".join(text[a:b] for a, b in piece)


def with_heading(heading: str, piece: str) -> str:
    """The text embedded for one piece: its chunk's heading, then the piece. A table's
    row ("Purchases of property, plant and equipment | (1,577) | (1,373)") means
    little without its statement's title and columns ("Consolidated Statement of Cash
    Flows / (Millions) | 2018 | 2017"); the stored piece spans still point at the
    piece alone, so citations are unchanged."""
    return f"{heading}\n{piece}" if heading else piece


def sentence_pieces(text: str) -> list[str]:
    return [piece_text(text, p) for p in piece_spans(text)]


def chunk_piece_spans(text: str) -> list[Piece]:
    """The pieces embedded for a chunk: its sentence pieces (the whole text if it has none)."""
    return piece_spans(text) or [((0, len(text)),)]


def flatten(pieces: list[Piece]) -> list[list[int]]:
    """Pieces as stored: one flat [start, end, start, end, ...] list per piece."""
    return [[x for span in piece for x in span] for piece in pieces]


def unflatten(stored: list[list[int]]) -> list[Piece]:
    return [tuple(zip(flat[::2], flat[1::2])) for flat in stored]
