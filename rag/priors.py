"""Where document priors come from (rag/retrieve.py applies them: module doc, document
prior): a conversation's earlier turns (history_prior) and the documents a question
names by their profiles (profile_prior, rag/profiles.py). `merge_priors` merges them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rag.profiles import ProfileIndex
from rag.types import Turn

if TYPE_CHECKING:
    from rag.retrieve import Fusion
    from rag.runtime import Runtime


def merge_priors(*priors: Mapping[str, float]) -> dict[str, float]:
    """One document prior from several: the largest value per document, clipped to [0, 1]."""
    out: dict[str, float] = {}
    for prior in priors:
        for doc_id, value in prior.items():
            value = min(1.0, max(0.0, float(value)))
            if value > out.get(doc_id, 0.0):
                out[doc_id] = value
    return out


def profile_prior(question: str, runtime: Runtime,
                  fusion: Fusion | None = None) -> dict[str, float]:
    """The documents whose profiles the question singles out, as a prior
    (rag/profiles.py: ProfileIndex.prior)."""
    fusion = fusion or _default()
    return profile_index(runtime.store).prior(
        question, floor=fusion.profile_floor, most=fusion.profile_docs, gap=fusion.profile_gap,
        scale=fusion.profile_scale, sharpness=fusion.profile_sharpness)


def profile_index(store) -> ProfileIndex:
    """The ProfileIndex of the store's documents, rebuilt when they change."""
    profiles = store.documents.profiles()
    cached = getattr(store, "_profile_index", None)
    if cached is None or cached[0] is not profiles:
        cached = (profiles, ProfileIndex(profiles))
        store._profile_index = cached
    return cached[1]


def history_prior(history: Sequence[Turn], runtime: Runtime,
                  fusion: Fusion | None = None) -> dict[str, float]:
    """The documents of the last `fusion.history_turns` turns as a prior.

    A turn's documents are its doc_ids or, when it has none (a conversation passed
    in as plain messages), those its question retrieves (turn_documents). They are
    ranked by how well the whole exchange, question and answer, matches them (a
    search restricted to them): the best gets 1, each next one half the one before,
    and each turn further back halves again (`fusion.history_decay`).
    """
    fusion = fusion or _default()
    prior: dict[str, float] = {}
    recent = list(history)[-fusion.history_turns:] if fusion.history_turns > 0 else []
    for age, turn in enumerate(reversed(recent)):
        ids = list(turn.doc_ids or turn_documents(turn.question, runtime, fusion=fusion))
        exchange = f"{turn.question} {turn.answer}".strip()
        if len(ids) > 1 and exchange:
            found = turn_documents(exchange, runtime, k=fusion.depth, doc_ids=ids, fusion=fusion)
            ids = list(dict.fromkeys([*found, *ids]))
        prior = merge_priors(prior, {d: fusion.history_decay ** (age + i)
                                     for i, d in enumerate(ids)})
    return prior


def turn_documents(question: str, runtime: Runtime, *, k: int | None = None,
                   doc_ids: Sequence[str] | None = None,
                   fusion: Fusion | None = None) -> tuple[str, ...]:
    """The documents of the passages `question` retrieves on its own (the `k` an answer's
    prompt gets, config.k by default), best first: what a turn whose answer cited
    nothing records."""
    from rag.retrieve import search

    fusion = fusion or _default()
    if not question.strip():
        return ()
    passages = search(question, runtime, k=k or runtime.config.k,
                      doc_ids=list(doc_ids) if doc_ids else None, fusion=fusion)
    return tuple(dict.fromkeys(p.doc_id for p in passages))


def _default() -> Fusion:
    from rag.retrieve import DEFAULT_FUSION

    return DEFAULT_FUSION
