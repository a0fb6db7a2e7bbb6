"""Document profiles: what a document says about itself, for telling it from its neighbours.

A profile is written at ingestion: the title, the file name's words and the
start of the first pages (a filing's cover names its issuer, form and period;
a paper's first page its title, authors and abstract). It is stored with the
document (`DocRecord.profile`) and searched beside the chunks (rag/retrieve.py:
profile_prior): which of its terms distinguish a document is decided at query
time against the other documents' profiles, so nothing here knows a genre.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

PROFILE_CHARS = 2000  # of the first pages' text
PROFILE_PAGES = 3


def name_words(path: str) -> str:
    """A file name as words: 'AMCOR_2023Q2_10Q.pdf' -> 'AMCOR 2023Q2 10Q'."""
    stem = PurePath(path.replace("\\", "/")).stem
    return " ".join(w for w in re.split(r"[\s_\-.+]+", stem) if w)


def profile_text(title: str, path: str, pages: Sequence[str]) -> str:
    """The profile of a document from its title, path and pages' texts (first first)."""
    head, used = [], 0
    for text in pages[:PROFILE_PAGES]:
        text = " ".join(text.split())
        if not text:
            continue
        head.append(text[:PROFILE_CHARS - used])
        used += len(head[-1])
        if used >= PROFILE_CHARS:
            break
    parts = [title.strip(), name_words(path), " ".join(head)]
    return "\n".join(p for p in parts if p)
