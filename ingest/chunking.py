"""Pages -> chunks sized in the embedder's tokens, cut at paragraph and sentence boundaries.

Units are sentences (split further into windows when a sentence alone is too
long, as happens with Thai or Chinese text without punctuation, or tables).
Units are packed greedily up to `max_tokens`, preferring to end a chunk at a
paragraph break; a new section (heading) or page always starts a new chunk, so
every chunk lies on one page and cites it exactly. A chunk cut inside a
paragraph repeats its last sentences, up to `overlap_tokens`, at the start of
the next. A chunk's text is always `page.text[char_start:char_end]`
(see `chunk_source_text`). Nothing is prefixed to the text: the store keeps the
title and heading path beside it.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from rag.types import Chunk, Document

# End of a sentence: Latin/Cyrillic punctuation followed by space, or CJK, Devanagari,
# Arabic, Thai-style enders that need no space after them.
_SENTENCE_END = re.compile(r"(?:[.!?;](?:[\"'”’)\]]*)\s+)|(?:[。！？；।॥؟۔]+[\"'”’）」』]*\s*)|"
                           r"(?:\n(?=\s*(?:[-*•·]|\d+[.)])\s))|(?:[ \u00a0]{2,})")
MAX_CHARS_PER_TOKEN = 8  # a cap well above real tokenizers (English ~4.5, CJK < 1)
_PARAGRAPH = re.compile(r"\n\s*\n")
_SPACE = re.compile(r"\s")


@dataclass
class _Unit:
    start: int
    end: int
    tokens: int
    section: int  # index of the heading it falls under (-1: none)
    para: int  # index of its paragraph on the page


def _spans(text: str, pattern: re.Pattern, start: int, end: int) -> list[tuple[int, int]]:
    out, pos = [], start
    for match in pattern.finditer(text, start, end):
        if match.end() > pos:
            out.append((pos, match.end()))
            pos = match.end()
    if pos < end:
        out.append((pos, end))
    return out


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _windows(text: str, start: int, end: int, tokens: int, max_tokens: int) -> list[tuple]:
    """Split an over-long span into near-equal windows: at line breaks (table rows) or
    spaces where there are any in the window's back half, else between characters."""
    pieces = math.ceil(tokens / max_tokens)
    size = (end - start) / pieces
    cuts, pos = [start], start
    for i in range(1, pieces):
        target = int(start + i * size)
        floor = int(pos + size / 2)
        cut = target
        for sep in ("\n", " "):
            found = text.rfind(sep, floor, target + 1)
            if found > pos:
                cut = found + 1
                break
        if _is_mark(text, cut):
            cut = _char_boundary(text, cut, pos)
        cuts.append(cut)
        pos = cut
    cuts.append(end)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _is_mark(text: str, i: int) -> bool:
    # Thai and Devanagari vowel signs and tone marks (category M*) belong to the letter before.
    return 0 < i < len(text) and unicodedata.category(text[i]).startswith("M")


def _char_boundary(text: str, cut: int, floor: int) -> int:
    while cut > floor + 1 and _is_mark(text, cut):
        cut -= 1
    return cut


def _fit(text: str, start: int, end: int, tokens: int, count: Callable[[str], int],
         max_tokens: int, depth: int = 0) -> list[tuple[int, int, int]]:
    """(start, end, tokens) spans of at most max_tokens each (tokenizers are not linear
    in characters, so a window that is still too long is split again)."""
    if tokens <= max_tokens or end - start <= 1 or depth > 4:
        return [(start, end, tokens)]
    out = []
    for a, b in _windows(text, start, end, tokens, max_tokens):
        a, b = _trim(text, a, b)
        if b > a:
            out.extend(_fit(text, a, b, count(text[a:b]), count, max_tokens, depth + 1))
    return out


def _units(text: str, count: Callable[[str], int], max_tokens: int,
           section_at: Callable[[int], int]) -> list[_Unit]:
    units = []
    for para, (p_start, p_end) in enumerate(_spans(text, _PARAGRAPH, 0, len(text))):
        for s_start, s_end in _spans(text, _SENTENCE_END, p_start, p_end):
            s_start, s_end = _trim(text, s_start, s_end)
            if s_end <= s_start:
                continue
            tokens = count(text[s_start:s_end])
            for a, b, n in _fit(text, s_start, s_end, tokens, count, max_tokens):
                units.append(_Unit(a, b, n, section_at(a), para))
    return units


def chunk_document(doc: Document, *, count_tokens: Callable[[str], int], max_tokens: int = 200,
                   overlap_tokens: int = 30) -> list[Chunk]:
    def count(text: str) -> int:
        # A tokenizer that does not know a script (an English WordPiece on Thai) turns a
        # whole run of it into one [UNK]: never let a chunk grow past a sane length.
        return max(count_tokens(text), -(-len(text) // MAX_CHARS_PER_TOKEN))

    chunks: list[Chunk] = []
    for page in doc.pages:
        if not page.text.strip():
            continue
        heads = sorted((off, path) for num, off, path in doc.headings if num == page.number)
        offsets = [h[0] for h in heads]

        units = _units(page.text, count, max_tokens,
                       lambda pos, offsets=offsets: bisect.bisect_right(offsets, pos) - 1)
        for group in _pack(units, max_tokens, overlap_tokens):
            start, end = group[0].start, group[-1].end
            section = group[0].section
            chunks.append(Chunk(doc_id=doc.id, ordinal=len(chunks),
                                text=page.text[start:end], page_start=page.number,
                                page_end=page.number, char_start=start, char_end=end,
                                heading=heads[section][1] if section >= 0 else ""))
    return chunks


def _pack(units: list[_Unit], max_tokens: int, overlap_tokens: int) -> list[list[_Unit]]:
    """Greedy packing. A chunk ends early at a paragraph break once it is half full and
    the next paragraph would not fit whole; only a cut inside a paragraph repeats the
    last sentences (up to overlap_tokens) at the start of the next chunk."""
    para_tokens: dict[int, int] = {}
    for unit in units:
        para_tokens[unit.para] = para_tokens.get(unit.para, 0) + unit.tokens
    groups: list[list[_Unit]] = []
    current: list[_Unit] = []
    size = 0
    fresh = 0  # units in `current` that are not overlap from the previous chunk
    for unit in units:
        new_section = bool(current) and unit.section != current[-1].section
        new_para = bool(current) and unit.para != current[-1].para
        full = size + unit.tokens > max_tokens
        early = new_para and size * 2 >= max_tokens and size + para_tokens[unit.para] > max_tokens
        if current and (full or new_section or early):
            if fresh:
                groups.append(current)
            carry: list[_Unit] = []
            if not (new_section or new_para):
                budget = overlap_tokens
                for prev in reversed(current):
                    if prev.tokens > budget or len(carry) + 1 >= len(current):
                        break
                    carry.insert(0, prev)
                    budget -= prev.tokens
            current, size, fresh = carry, sum(u.tokens for u in carry), 0
        current.append(unit)
        size += unit.tokens
        fresh += 1
    if current and fresh:
        groups.append(current)
    return groups


PAGE_JOIN = "\n\n"  # between the pages of a chunk that spans pages


def chunk_source_text(doc: Document, chunk: Chunk) -> str:
    """The exact page text a chunk was cut from.

    One page: `page.text[char_start:char_end]`. Pages start..end: the rest of the
    first page from char_start, every page between in full, and the last page up to
    char_end, joined with PAGE_JOIN. `chunk_document` keeps every chunk on one page
    (so a citation names one page); the rule is defined so that stores and viewers
    need no special case if that ever changes.
    """
    pages = {p.number: p.text for p in doc.pages}
    if chunk.page_start == chunk.page_end:
        return pages[chunk.page_start][chunk.char_start:chunk.char_end]
    parts = [pages[chunk.page_start][chunk.char_start:]]
    parts += [pages[n] for n in range(chunk.page_start + 1, chunk.page_end) if n in pages]
    parts.append(pages[chunk.page_end][:chunk.char_end])
    return PAGE_JOIN.join(parts)


PIECE_MIN_CHARS = 24  # shorter sentences ("Text:", "Results.") join the next one
PIECE_MAX_CHARS = 400  # longer ones (tables, unpunctuated Thai) are cut at spaces


def sentence_pieces(text: str, *, min_chars: int = PIECE_MIN_CHARS,
                    max_chars: int = PIECE_MAX_CHARS) -> list[str]:
    """A chunk's text as sentence-sized pieces, each embedded on its own.

    A small embedder matches a question to the one sentence that answers it
    far better than to a whole chunk (covidqa, MiniLM: vector-only hit@5 0.56
    for chunks, 0.68 for their best sentence). Every word of the text is in
    exactly one piece, in order; the list is empty only for blank text.
    """
    pieces: list[str] = []
    carry = ""
    for para_start, para_end in _spans(text, _PARAGRAPH, 0, len(text)):
        for start, end in _spans(text, _SENTENCE_END, para_start, para_end):
            start, end = _trim(text, start, end)
            if end <= start:
                continue
            for a, b in _windows(text, start, end, end - start, max_chars):
                a, b = _trim(text, a, b)
                piece = f"{carry} {text[a:b]}" if carry else text[a:b]
                if len(piece) < min_chars:
                    carry = piece
                else:
                    pieces.append(piece)
                    carry = ""
    if carry:
        if pieces:
            pieces[-1] = f"{pieces[-1]} {carry}"
        else:
            pieces.append(carry)
    return pieces


def chunk_pieces(text: str) -> list[str]:
    """The texts embedded for a chunk: its sentence pieces (the text itself if it has none)."""
    return sentence_pieces(text) or [text]
