"""Pages -> chunks sized in the embedder's tokens, cut at paragraph and sentence boundaries.

Units are sentences (split further into windows when a sentence alone is too
long, as happens with Thai or Chinese text without punctuation, or tables).
Units are packed greedily up to `max_tokens`; a new section (heading) or page
always starts a new chunk, so every chunk lies on one page and cites it
exactly; each chunk repeats the last sentences of the one before, up to
`overlap_tokens`. A chunk's text is always `page.text[char_start:char_end]`.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from typing import Callable

from rag.types import Chunk, Document

# End of a sentence: Latin/Cyrillic punctuation followed by space, or CJK, Devanagari,
# Arabic, Thai-style enders that need no space after them.
_SENTENCE_END = re.compile(r"(?:[.!?;](?:[\"'”’)\]]*)\s+)|(?:[。！？；।॥؟۔]+[\"'”’）」』]*\s*)|"
                           r"(?:\n(?=\s*(?:[-*•·]|\d+[.)])\s))|(?:[ \u00a0]{2,})")
_PARAGRAPH = re.compile(r"\n\s*\n")
_SPACE = re.compile(r"\s")


@dataclass
class _Unit:
    start: int
    end: int
    tokens: int
    section: int  # index of the heading it falls under (-1: none)


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
    """Split an over-long span into near-equal windows, at spaces where there are any."""
    pieces = math.ceil(tokens / max_tokens)
    size = (end - start) / pieces
    cuts, pos = [start], start
    for i in range(1, pieces):
        target = int(start + i * size)
        space = text.rfind(" ", pos + 1, target + 1)
        cut = space + 1 if space > pos + size / 2 else target
        cuts.append(cut)
        pos = cut
    cuts.append(end)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def _units(text: str, count: Callable[[str], int], max_tokens: int,
           section_at: Callable[[int], int]) -> list[_Unit]:
    units = []
    for p_start, p_end in _spans(text, _PARAGRAPH, 0, len(text)):
        for s_start, s_end in _spans(text, _SENTENCE_END, p_start, p_end):
            s_start, s_end = _trim(text, s_start, s_end)
            if s_end <= s_start:
                continue
            tokens = count(text[s_start:s_end])
            spans = [(s_start, s_end, tokens)]
            if tokens > max_tokens:
                spans = []
                for a, b in _windows(text, s_start, s_end, tokens, max_tokens):
                    a, b = _trim(text, a, b)
                    if b > a:
                        spans.append((a, b, count(text[a:b])))
            for a, b, n in spans:
                units.append(_Unit(a, b, n, section_at(a)))
    return units


def chunk_document(doc: Document, *, count_tokens: Callable[[str], int], max_tokens: int = 160,
                   overlap_tokens: int = 24) -> list[Chunk]:
    chunks: list[Chunk] = []
    for page in doc.pages:
        if not page.text.strip():
            continue
        heads = sorted((off, path) for num, off, path in doc.headings if num == page.number)
        offsets = [h[0] for h in heads]

        def section_at(pos: int) -> int:
            return bisect.bisect_right(offsets, pos) - 1

        units = _units(page.text, count_tokens, max_tokens, section_at)
        for group in _pack(units, max_tokens, overlap_tokens):
            start, end = group[0].start, group[-1].end
            section = group[0].section
            chunks.append(Chunk(doc_id=doc.id, ordinal=len(chunks),
                                text=page.text[start:end], page_start=page.number,
                                page_end=page.number, char_start=start, char_end=end,
                                heading=heads[section][1] if section >= 0 else ""))
    return chunks


def _pack(units: list[_Unit], max_tokens: int, overlap_tokens: int) -> list[list[_Unit]]:
    groups: list[list[_Unit]] = []
    current: list[_Unit] = []
    size = 0
    fresh = 0  # units in `current` that are not overlap from the previous chunk
    for unit in units:
        new_section = current and unit.section != current[-1].section
        if current and (size + unit.tokens > max_tokens or new_section):
            if fresh:
                groups.append(current)
            carry: list[_Unit] = []
            if not new_section:
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


def chunk_source_text(doc: Document, chunk: Chunk) -> str:
    """The exact page text a chunk was cut from (chunks never span pages)."""
    page = next(p for p in doc.pages if p.number == chunk.page_start)
    return page.text[chunk.char_start:chunk.char_end]
