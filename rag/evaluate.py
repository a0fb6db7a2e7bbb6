"""Retrieval (and answer) quality on a question set with gold evidence.

Gold rules (../shared/eval/README.md):
- PDF sets: the passage comes from the gold document and its page range
  includes a gold page.
- Text sets: the passage comes from the gold document and, after lowercasing
  and collapsing whitespace, contains the gold text or shares a contiguous
  stretch with it at least half as long as the shorter of the two.

Evidence names a file inside the set's docs/ folder; a stored document is
matched to it by the basename of its path.

A row with `history` ([{"role": "user", ...}, {"role": "assistant", ...}, ...])
is a follow-up: it is searched in the light of those turns, and once more alone.
Each earlier turn's documents are those its own question retrieves (the first
`turn_k` passages, searched with the turns before it), as a conversation
records them when an answer cites nothing; never the gold ones.

The report (`rag eval --out`, one JSON object; new keys may be added, none
renamed):

    n, hit@1, hit@5, hit@10, mrr@10   every question as asked (with its history)
    doc_hit@1, doc_hit@5   the right document: a gold document is the first
               (among the first five) distinct documents of the ranked passages,
               so a routing error (wrong document) can be told from a ranking
               error (right document, wrong passage)
    by_lang    {lang: {n, hit@1, hit@5, hit@10, mrr@10, doc_hit@1, doc_hit@5}}
    by_kind    only when some row has history: {kind: {"history": scores,
               "alone": scores}}, the same questions with and without their
               history (scores as in by_lang); a row without `kind` counts as
               "followup", or "single" when it has no history either
    query_seconds, query_ms {mean, p50, p95}   the searches as asked
    questions  [{id, lang, kind, rank, doc_rank, ms} + rank_alone for a
               follow-up, turn_docs (document ids of its earlier turns)]; rank:
               1-based rank of the first gold passage, doc_rank: of the first
               gold document among the distinct documents; null when none
    ingest_seconds, documents, passages, embedder, questions_file   (rag eval)
    answers    with --answers: see evaluate_answers
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

from rag.types import Passage, Turn

KS = (1, 5, 10)


@dataclass(frozen=True)
class Evidence:
    doc: str
    page: int | None = None
    text: str = ""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    lang: str
    evidence: tuple[Evidence, ...]
    answers: tuple[str, ...] = ()
    kind: str = ""
    history: tuple[tuple[str, str], ...] = ()  # (role, content), oldest first


def load_questions(path: Path, limit: int | None = None) -> list[Question]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            evidence = tuple(Evidence(e["doc"], e.get("page"), e.get("text") or "")
                             for e in row.get("evidence", []))
            history = tuple((m["role"], m["content"]) for m in row.get("history") or [])
            kind = row.get("kind") or ("followup" if history else "single")
            out.append(Question(str(row.get("id", len(out))), row["question"],
                                row.get("lang", "en"), evidence, tuple(row.get("answers", [])),
                                kind, history))
            if limit and len(out) >= limit:
                break
    return out


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def text_matches(passage: str, gold: str) -> bool:
    """The text-set rule on already normalised strings."""
    if not passage or not gold:
        return False
    if gold in passage:
        return True
    need = min(len(passage), len(gold)) / 2
    matcher = SequenceMatcher(None, passage, gold, autojunk=False)
    return matcher.find_longest_match(0, len(passage), 0, len(gold)).size >= need


def is_gold(passage: Passage, evidence: Sequence[Evidence], doc_name: str) -> bool:
    """Whether `passage` (from the document whose file is named `doc_name`) is gold."""
    text = None
    for ev in evidence:
        if ev.doc != doc_name:
            continue
        if ev.page is not None:
            if passage.page_start <= ev.page <= passage.page_end:
                return True
            continue
        text = normalise(passage.text) if text is None else text
        if text_matches(text, normalise(ev.text)):
            return True
    return False


def file_name(path: str) -> str:
    """How evidence names a stored document: its file's basename."""
    return Path(path).name


def first_gold_rank(passages: Sequence[Passage], question: Question,
                    name: Callable[[str], str] = file_name) -> int | None:
    """1-based rank of the first gold passage, or None."""
    for rank, p in enumerate(passages, 1):
        if is_gold(p, question.evidence, name(p.path)):
            return rank
    return None


def first_gold_document(passages: Sequence[Passage], question: Question,
                        name: Callable[[str], str] = file_name) -> int | None:
    """1-based rank of the first gold document among the passages' distinct documents."""
    gold = {ev.doc for ev in question.evidence}
    seen: list[str] = []
    for p in passages:
        if p.doc_id in seen:
            continue
        seen.append(p.doc_id)
        if name(p.path) in gold:
            return len(seen)
    return None


def summarise(ranks: Sequence[int | None], k: int = 10,
              doc_ranks: Sequence[int | None] | None = None) -> dict:
    n = len(ranks)
    out = {f"hit@{c}": (sum(1 for r in ranks if r and r <= c) / n if n else 0.0) for c in KS}
    out[f"mrr@{k}"] = sum(1 / r for r in ranks if r and r <= k) / n if n else 0.0
    if doc_ranks is not None:
        for c in (1, 5):
            out[f"doc_hit@{c}"] = sum(1 for r in doc_ranks if r and r <= c) / n if n else 0.0
    out["n"] = n
    return out


# search(question, k, history): the k best passages for question after the earlier turns.
Search = Callable[[str, int, Sequence[Turn]], list[Passage]]


def history_turns(question: Question, search: Search, turn_k: int) -> list[Turn]:
    """The question's earlier turns, each with the documents its own question retrieves
    (after the turns before it), as a conversation would have recorded them."""
    turns: list[Turn] = []
    for role, content in question.history:
        if role == "user":
            passages = search(content, turn_k, tuple(turns))
            turns.append(Turn(content, "", tuple(dict.fromkeys(p.doc_id for p in passages))))
        elif role == "assistant" and turns:
            turns[-1] = Turn(turns[-1].question, content, turns[-1].doc_ids)
    return turns


def evaluate_retrieval(questions: Sequence[Question], search: Search, *, k: int = 10,
                       turn_k: int = 6, name: Callable[[str], str] = file_name) -> dict:
    """Run `search(question, k, history)` for each question; scores overall, per language
    and, when rows have history, per kind with and without it (module doc: the report).
    `name(path)`: the evidence's name of a stored document (its file name by default)."""
    ranks: list[int | None] = []
    doc_ranks: list[int | None] = []
    alone: list[int | None] = []
    times: list[float] = []
    per_question = []
    for q in questions:
        turns = history_turns(q, search, turn_k)
        start = time.perf_counter()
        passages = search(q.question, k, tuple(turns))
        times.append((time.perf_counter() - start) * 1000)
        rank = first_gold_rank(passages, q, name)
        ranks.append(rank)
        doc_ranks.append(first_gold_document(passages, q, name))
        entry = {"id": q.id, "lang": q.lang, "kind": q.kind, "rank": rank,
                 "doc_rank": doc_ranks[-1], "ms": round(times[-1], 2)}
        alone.append(rank)
        if turns:
            alone[-1] = first_gold_rank(search(q.question, k, ()), q, name)
            entry |= {"rank_alone": alone[-1], "turn_docs": [list(t.doc_ids) for t in turns]}
        per_question.append(entry)
    report = summarise(ranks, k, doc_ranks)
    langs = sorted({q.lang for q in questions})
    report["by_lang"] = {
        lang: summarise([r for r, q in zip(ranks, questions) if q.lang == lang], k,
                        [r for r, q in zip(doc_ranks, questions) if q.lang == lang])
        for lang in langs}
    if any(q.history for q in questions):
        report["by_kind"] = {
            kind: {"history": summarise([r for r, q in zip(ranks, questions) if q.kind == kind], k),
                   "alone": summarise([r for r, q in zip(alone, questions) if q.kind == kind], k)}
            for kind in sorted({q.kind for q in questions})}
    ordered = sorted(times)
    report["query_seconds"] = sum(times) / 1000
    report["query_ms"] = {"mean": sum(times) / len(times) if times else 0.0,
                          "p50": ordered[len(ordered) // 2] if ordered else 0.0,
                          "p95": ordered[int(len(ordered) * 0.95)] if ordered else 0.0}
    report["questions"] = per_question
    return report


def evaluate_answers(questions: Sequence[Question], answer: Callable[[str], object]) -> dict:
    """Citation and refusal figures over `answer(question)` (rag.answering.Answer objects).

    valid_marker_share: of the [n] markers the model wrote, those naming a real
    source; supported_share: of the citations kept, those whose sentence the
    cited passage supports; inferred_share: citations the model did not mark.
    """
    from rag.citations import MARKER, marker_numbers

    written = valid = cited = supported = inferred = refused = 0
    speeds = []
    for q in questions:
        result = answer(q.question)
        refused += bool(result.refused)
        for match in MARKER.finditer(result.raw_text):
            for number in marker_numbers(match.group(1)):
                written += 1
                valid += 1 <= number <= len(result.sources)
        for citation in result.citations:
            cited += 1
            supported += bool(citation.supported)
            inferred += bool(citation.inferred)
        if result.generation_tps:
            speeds.append(float(result.generation_tps))
    n = len(questions)
    return {"n": n, "refusal_rate": refused / n if n else 0.0,
            "markers": written, "valid_marker_share": valid / written if written else None,
            "citations": cited, "supported_share": supported / cited if cited else None,
            "inferred_share": inferred / cited if cited else None,
            "tokens_per_s": sum(speeds) / len(speeds) if speeds else None}


def plot_hits(report: dict, path: Path) -> None:
    """hit@k curves (overall and per language) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    series = {"all": report} | {lang: r for lang, r in report.get("by_lang", {}).items()}
    for name, r in series.items():
        ax.plot(KS, [r[f"hit@{c}"] for c in KS], marker="o", label=f"{name} (n={r['n']})")
    ax.set_xlabel("k")
    ax.set_ylabel("hit@k")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(KS)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
