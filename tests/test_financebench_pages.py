"""FinanceBench: the gold evidence lies in a chunk whose page is the gold page."""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict

import pytest

from ingest.chunking import chunk_document
from ingest.loaders import iter_load
from rag.config import Config

pytestmark = pytest.mark.slow


def squeeze(text: str) -> str:
    # Letters and digits only: annotators' excerpts often lost (or gained) spaces.
    return "".join(re.findall(r"[a-z0-9]+", text.lower()))


def coverage(evidence: str, text: str) -> float:
    """Share of the evidence's 12-character shingles found in the text."""
    shingles = [evidence[i:i + 12] for i in range(0, max(1, len(evidence) - 11), 6)]
    return sum(s in text for s in shingles) / len(shingles)


def test_gold_evidence_is_in_a_chunk_on_the_gold_page(eval_dir, embedder):
    root = eval_dir / "financebench"
    questions = [json.loads(line) for line in (root / "dev.jsonl").read_text().splitlines()]
    if not os.environ.get("RAG_FULL_EVAL"):  # the whole set takes minutes; CI checks a slice
        questions = questions[:12]
    wanted = defaultdict(list)
    for q in questions:
        for ev in q["evidence"]:
            wanted[ev["doc"]].append((q["id"], ev))
    paths = [root / "docs" / name for name in wanted]
    misses = []
    for path, doc in iter_load(paths, timeout_s=300, workers=2):
        assert not isinstance(doc, Exception), f"{path.name}: {doc}"
        chunks = chunk_document(doc, count_tokens=embedder.count_tokens,
                                max_tokens=Config().chunk_tokens,
                                overlap_tokens=Config().chunk_overlap)
        for qid, ev in wanted[path.name]:
            evidence = squeeze(ev["text"])
            # The chunks of the gold page together must hold the evidence text.
            on_page = squeeze(" ".join(c.text for c in chunks
                                       if c.page_start <= ev["page"] <= c.page_end))
            if coverage(evidence, on_page) < 0.8:
                misses.append((qid, path.name, ev["page"], round(coverage(evidence, on_page), 2)))
    assert not misses, misses
