"""Ranked chunks -> passages: one passage per page of a paged document.

A PDF's page is what a citation names and what a reader opens, and a search often
ranks several chunks of one page: the two halves of a balance sheet, a table and the
note below it. They become one passage, at the best one's rank, spanning the page's
text from the first one's start to the last one's end (chunks the search did not rank
in between fill the gap, so the passage is still one exact stretch of the page): the
answer reads the whole statement once, the reader gets one citation, and the page
leaves room in the top k for other pages. FinanceBench dev (56 questions, 74 filings):
page hit@10 0.571 -> 0.607, hit@5 0.482 -> 0.500; 61 of the 336 passages that answers
get are merged ones, and the 6 passages hold 6,419 characters on average against 5,267
(at most 9,927), well inside the prompt's budget (README, "How an answer is found").

Only documents with pages do this: a text, Markdown or HTML document is stored as one
"page", where it would merge a whole paper. A passage is never longer than
PAGE_PASSAGE_CHARS: a chunk further from the page's best one on a long page is left
out, as the page is cited already. A joined passage keeps the best chunk's id, heading
and scores, with `scores["chunks"]` saying how many chunks it holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from rag.lexical import overlap
from rag.types import Passage

PAGE_PASSAGE_CHARS = 3000  # about three chunks


def page_passages(fused: Sequence[tuple[dict, dict]], k: int, store, docs: Mapping,
                  terms: set[str], vector_weight: float) -> list[Passage]:
    """The `k` best passages from `fused` ((row, scores), best first): the chunks of one
    page of a paged document as one passage (module doc). `docs`: id -> DocRecord."""
    groups: list[list[tuple[dict, dict]]] = []
    page_group: dict[tuple[str, int], int] = {}
    for row, scores in fused:
        key = _page(row, docs)
        at = page_group.get(key) if key else None
        if at is not None:  # its page is cited already: join that passage, or leave it
            if _span(groups[at] + [(row, scores)]) <= PAGE_PASSAGE_CHARS:
                groups[at].append((row, scores))
            continue
        if len(groups) == k:
            break
        if key:
            page_group[key] = len(groups)
        groups.append([(row, scores)])
    out = []
    for group in groups:
        row, scores = group[0]
        passage = store.passage(row, docs)
        if len(group) > 1:
            start = min(r["char_start"] for r, _ in group)
            end = max(r["char_end"] for r, _ in group)
            parts = [r for r, _ in group]
            if _gaps(parts, start, end):
                parts = store.chunks.of_document(row["doc_id"], row["page_start"])
            passage = dataclasses.replace(passage, text=stitch(parts, start, end),
                                          char_start=start, char_end=end)
            scores["chunks"] = len(group)
        scores["overlap"] = overlap(terms, passage.text)
        scores["vector_weight"] = vector_weight
        out.append(dataclasses.replace(passage, score=scores["fused"], scores=scores))
    return out


def _page(row: dict, docs: Mapping) -> tuple[str, int] | None:
    """(document, page) of a chunk of a document with more than one page, else None."""
    doc = docs.get(row["doc_id"])
    if doc is None or doc.pages < 2 or row["page_start"] != row["page_end"]:
        return None
    return row["doc_id"], row["page_start"]


def _span(group: Sequence[tuple[dict, dict]]) -> int:
    return max(r["char_end"] for r, _ in group) - min(r["char_start"] for r, _ in group)


def _gaps(rows: Sequence[dict], start: int, end: int) -> bool:
    """Whether `rows` leave more than whitespace of [start, end) uncovered (chunks are cut
    at whitespace, so a gap of a few characters between neighbours is a line break)."""
    pos = start
    for row in sorted(rows, key=lambda r: r["char_start"]):
        if row["char_start"] - pos > 2:
            return True
        pos = max(pos, row["char_end"])
    return end - pos > 2


def stitch(rows: Sequence[dict], start: int, end: int) -> str:
    """The page text [start, end) from chunk rows (`char_start`, `char_end`, `text`: each an
    exact slice of the page); what no row covers (the whitespace where the chunker cut)
    becomes line breaks."""
    chars: list[str] = ["\n"] * (end - start)
    for row in rows:
        a, b = max(start, row["char_start"]), min(end, row["char_end"])
        if b > a:
            offset = a - row["char_start"]
            chars[a - start:b - start] = row["text"][offset:offset + b - a]
    return "".join(chars)
