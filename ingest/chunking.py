"""Pages -> chunks sized in the embedder's tokens, cut at paragraph and sentence boundaries.

Units are sentences (split further into windows when a sentence alone is too
long, as happens with Thai or Chinese text without punctuation, or tables).
Units are packed greedily up to `max_tokens`, preferring to end a chunk at a
paragraph break; a new section (heading) or page always starts a new chunk, so
every chunk lies on one page and cites it exactly. A chunk cut inside a
paragraph repeats its last sentences, up to `overlap_tokens`, at the start of
the next. Table rows (`label | 1,488 | 1,544`, ingest/tables.py) are units of
their own, so a chunk is never cut inside one. A chunk's text is always
`page.text[char_start:char_end]` (see `chunk_source_text`). Nothing is prefixed
to the text: the store keeps the title and heading path beside it, and a chunk
that starts inside a table gets the table's title and column headers as its
heading.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from ingest.tables import CELL_SEP, Table, is_row, line_spans, table_blocks
from rag.text import PARAGRAPH, chunk_piece_spans, sentence_spans, spans, trim, windows
from rag.types import Chunk, Document

MAX_CHARS_PER_TOKEN = 8  # a cap well above real tokenizers (English ~4.5, CJK < 1)


@dataclass
class _Unit:
    start: int
    end: int
    tokens: int
    section: int  # index of the heading it falls under (-1: none)
    para: int  # index of its paragraph on the page


def _fit(text: str, start: int, end: int, tokens: int, count: Callable[[str], int],
         max_tokens: int, depth: int = 0) -> list[tuple[int, int, int]]:
    """(start, end, tokens) spans of at most max_tokens each (tokenizers are not linear
    in characters, so a window that is still too long is split again)."""
    if tokens <= max_tokens or end - start <= 1 or depth > 4:
        return [(start, end, tokens)]
    out = []
    for a, b in windows(text, start, end, tokens, max_tokens):
        a, b = trim(text, a, b)
        if b > a:
            out.extend(_fit(text, a, b, count(text[a:b]), count, max_tokens, depth + 1))
    return out


def _units(text: str, count: Callable[[str], int], max_tokens: int,
           section_at: Callable[[int], int]) -> list[_Unit]:
    units = []
    for para, (p_start, p_end) in enumerate(spans(text, PARAGRAPH)):
        for s_start, s_end in _sentences_and_rows(text, p_start, p_end):
            tokens = count(text[s_start:s_end])
            for a, b, n in _fit(text, s_start, s_end, tokens, count, max_tokens):
                units.append(_Unit(a, b, n, section_at(a), para))
    return units


def _sentences_and_rows(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence spans of a paragraph, except that from its first table row to its last
    every line is a unit of its own: a chunk is never cut inside a row, and a row
    never runs on into the next one as one long "sentence"."""
    if CELL_SEP.strip() not in text[start:end]:  # prose: no row to look for
        return sentence_spans(text, start, end)
    lines = [(a, b) for a, b in line_spans(text, start, end) if is_row(text[a:b])]
    if len(lines) < 2:
        return sentence_spans(text, start, end)
    rows_start, rows_end = lines[0][0], lines[-1][1]
    out = sentence_spans(text, start, rows_start)
    for a, b in line_spans(text, rows_start, rows_end):
        a, b = trim(text, a, b)
        if b > a:
            out.append((a, b))
    return out + sentence_spans(text, rows_end, end)


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
        tables = table_blocks(page.text)
        for group in _pack(units, max_tokens, overlap_tokens):
            start, end = group[0].start, group[-1].end
            section = group[0].section
            text = page.text[start:end]
            heading = heads[section][1] if section >= 0 else ""
            chunks.append(Chunk(doc_id=doc.id, ordinal=len(chunks), text=text,
                                page_start=page.number, page_end=page.number,
                                char_start=start, char_end=end,
                                heading=_with_table_context(heading, tables, start),
                                pieces=tuple(chunk_piece_spans(text))))
    return chunks


def _with_table_context(heading: str, tables: list[Table], start: int) -> str:
    """A chunk that starts inside a table, below its title and column headers, carries
    them in its heading (its text stays an exact slice of the page)."""
    for table in tables:
        if table.head_start < start < table.end and table.context:
            return f"{heading} > {table.context}" if heading else table.context
    return heading


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
