"""Question -> passages: vector search and full-text search, fused.

The vector side ranks chunks by their best sentence piece (see
rag/text.py: piece_spans); the text side by BM25. The union of both
lists is then scored as a weighted sum of

- `piece`: the best piece's cosine to the question, min-max normalised over the union,
- `vector`: the chunk vector's cosine (the mean of its pieces), likewise,
- `text`: BM25, min-max normalised over the text list (0 when not in it),
- `sentence`: the best piece's IDF-weighted share of the question's terms,
- `joint`: the best piece by cosine and term share together, min-max normalised.

Measured on covidqa dev (hit@5): chunk vectors and BM25 alone 0.787, with the
sentence term 0.818, with pieces 0.842 (hit@1 0.610 -> 0.632; with `joint` 0.647).
A weighted normalised score sum beat reciprocal rank fusion (k=60, weighted or not)
at hit@1 and hit@5 on covidqa and xquad (`Fusion(method="rrf")` for comparison).

The weights depend on the question: an English-only embedder (the offline
MiniLM) maps Thai, Chinese, Hindi or Arabic questions to near-noise vectors
(xquad th vector-only hit@10 was 0.14), so for a question written mostly
outside the Latin script the full-text side alone ranks. A multilingual
embedder keeps the same weights for every language.

Chunks of documents that are not ready (orphans of an interrupted ingest) are
dropped before ranking. Each passage carries its raw signals in `Passage.scores`:
`vector`, `piece` (cosines, -1..1), `text` (BM25, 0 when not in the text list),
`vector_rank`, `text_rank` (1-based rank in each list, absent when not in it),
`sentence`, `joint`, `overlap` (share of the question's content terms found in
the passage) and `fused` (also `Passage.score`).

`is_relevant(passages)` turns them into the "the documents do not contain this"
decision, so an answer can be refused without calling the model.

Document prior (`search(..., doc_prior=...)`, the one way to favour documents):
document id -> value in [0, 1]. Its documents' best chunks join the candidates,
and each of their chunks gets `prior_weight * value * match` added to its fused
score, `match` being its document's best fused score over the best of all
candidates (`scores["prior"]` holds `value * match`): a prior decides between
documents the question fits about equally, or fits none of well, and yields
where the question clearly fits another one. A conversation feeds it through
`history` (rag/priors.py: history_prior), the question's own words through the
documents' profiles (profile_prior: rag/profiles.py); callers may pass
`doc_prior` too; they merge by the larger value. Figures and the choice of prior_weight
(on half of covidqa's follow-ups): README, "Follow-up questions".

The profile prior is weighed by `flat` instead of `match`: 0 to 1 as the
`profile_flat_rank`-th best document's best fused score rises from `profile_flat_low`
to `profile_flat_high` of the best one's, or by the prior's certainty where that is
higher (a question naming one family of look-alike documents, rag/profiles.py: Named).
Where one document's passages stand out, they answer (covidqa: retrieval's first paper
is right for 98% of questions whose fifth scores under half the first, 41% above 0.6);
where many look alike (an issuer's filings, whose tables share every row label) the
profile decides. A conversation's document's `match` is at least `history_flat * flat`:
"What did the study report?" fits every paper a little, the conversation's no better.
Figures: README.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.embed import model_name
from rag.lexical import content_terms, latin_share, words
from rag.passages import page_passages
from rag.priors import history_prior, merge_priors, profile_prior
from rag.runtime import Runtime
from rag.text import piece_text, sentence_pieces, unflatten, with_heading
from rag.types import Passage, Turn


@dataclass(frozen=True)
class Fusion:
    method: str = "score"  # "score": normalised score sum; "rrf": reciprocal rank fusion
    depth: int = 50  # candidates taken from each search
    rrf_k: int = 60
    piece_weight: float = 0.6
    vector_weight: float = 0.4
    text_weight: float = 0.6
    # Weight of the best sentence's share of the question's terms (sentence_scores); 0: off.
    sentence_weight: float = 0.6
    # Weight of the best piece by cosine and term share together (see _add_piece_scores).
    joint_weight: float = 0.15
    # Scale of the vector-side weights for questions mostly outside the Latin
    # script when the embedder is English-only: its vectors for them are noise.
    foreign_vector_scale: float = 0.0
    # Weight of the document prior (module doc; search's doc_prior and history).
    prior_weight: float = 1.5
    # Earlier turns that feed the prior, and the prior's factor per turn further back.
    history_turns: int = 3
    history_decay: float = 0.5
    # Where the passages cannot tell documents apart (`flat`, below), a conversation's
    # document keeps at least this share of its prior whatever its match: "What did
    # the study report?" fits every paper a little and the conversation's no better.
    history_flat: float = 0.5
    # Document profiles (profile_prior): on/off, how many documents the prior names at
    # most, and the share of the best profile score a document needs to be named.
    profiles: bool = True
    profile_docs: int = 5
    profile_floor: float = 0.5
    profile_scale: float = 1.0  # the profile prior's values are scaled by this
    # How far below the best the best unnamed document must be (share of the best);
    # 0: no such gate (the flat weighting below does its work).
    profile_gap: float = 0.0
    # The named documents' values are raised to this power (a year's share decides
    # among an issuer's filings that all clear the floor).
    profile_sharpness: float = 3.0
    # The profile prior's weight ramps up with how alike the documents' passages
    # score (module doc, document prior).
    profile_flat_rank: int = 5
    profile_flat_low: float = 0.5
    profile_flat_high: float = 0.7


DEFAULT_FUSION = Fusion()

# Embedders known to be multilingual, by a piece of their name.
_MULTILINGUAL = ("multilingual", "bge-m3", "labse", "xlm", "jina-embeddings-v3")

# Relevance thresholds (see is_relevant), measured with MiniLM on 150 questions per
# case. The best piece's cosine separates best: covidqa questions against covidqa
# reach >= 0.50 every time (median 0.73), xquad-en questions against covidqa 1% of
# the time (median 0.38); the chunk cosine at 0.40 passed 98% and 5%. For zh/th/hi
# the cosine is noise (zh questions vs the Thai corpus: median 0.50), so only the
# term overlap counts: own corpus >= 0.27 for 90% of questions, the other <= 0.08 for 90%.
MIN_COSINE = 0.50
MIN_OVERLAP = 0.6
MIN_OVERLAP_TEXT_ONLY = 0.25

@functools.lru_cache(maxsize=64)
def is_multilingual(embedder_name: str) -> bool:
    """By the model's own name (a hub id's last part or a folder's name), never by the
    folders above it, which may say anything. Cached: it is asked once per question and
    looks at the disk."""
    source = "local" if Path(embedder_name).exists() else "hub"
    name = model_name(embedder_name, embedder_name, source).lower()
    return any(piece in name for piece in _MULTILINGUAL)


def weights(question: str, embedder_name: str, fusion: Fusion = DEFAULT_FUSION
            ) -> tuple[float, float, float, float]:
    """(piece, vector, joint, text) weights for this question and embedder."""
    scale = 1.0
    if not is_multilingual(embedder_name) and latin_share(question) < 0.5:
        scale = fusion.foreign_vector_scale
    return (scale * fusion.piece_weight, scale * fusion.vector_weight,
            scale * fusion.joint_weight, fusion.text_weight)


def search(question: str, runtime: Runtime, *, k: int = 6, doc_ids: list[str] | None = None,
           fusion: Fusion = DEFAULT_FUSION, history: Sequence[Turn] = (),
           doc_prior: Mapping[str, float] | None = None) -> list[Passage]:
    """The `k` best passages for `question`, optionally only from `doc_ids`; `history`:
    the conversation's earlier turns, oldest first, and `doc_prior` (document id -> value
    in [0, 1]) favour documents (module doc: document prior)."""
    store = runtime.store
    prior = merge_priors(doc_prior or {}, history_prior(history, runtime, fusion))
    named = profile_prior(question, runtime, fusion) if fusion.profiles else {}
    vector = runtime.embedder.embed_batch([question], query=True)[0]
    wp, wv, wj, wt = weights(question, runtime.embedder.name, fusion)
    # With both vector weights at 0 its candidates would only crowd the text side's.
    vrows = store.chunks.vector_search(vector, fusion.depth, doc_ids) if wp or wv else []
    trows = store.chunks.text_search(question, fusion.depth, doc_ids)
    docs = {d.id: d for d in store.documents.list()}
    extra = _prior_rows(question, vector, runtime, merge_priors(prior, named), doc_ids,
                        fusion.depth, wp or wv)
    fused = fuse(vector, vrows, trows, set(docs), method=fusion.method, rrf_k=fusion.rrf_k,
                 piece_weight=wp, vector_weight=wv, text_weight=wt, extra=extra)
    terms = content_terms(question)
    if fused:
        _add_piece_scores(fused, vector, terms, fusion.sentence_weight, wj)
        _add_prior(fused, prior, named, fusion)
        fused.sort(key=lambda e: -e[1]["fused"])
    return page_passages(fused, k, store, docs, terms, wp + wv)


def _add_prior(fused: list[tuple[dict, dict]], prior: Mapping[str, float],
               named: Mapping[str, float], fusion: Fusion) -> None:
    """Add `prior_weight * value * match` to the fused score of each chunk of a `prior`
    document, `match` being its document's best fused score over the best of all
    candidates: a follow-up on a new subject, whose best passages are elsewhere, is
    ranked almost as if asked alone; one that still fits the conversation's document,
    or fits no document well ("What was the sample size?"), is ranked within it.
    `match` is at least `history_flat * flat`. For the documents the question `named`
    by their profiles, `value * max(flat, named.certainty)` instead (module doc,
    document prior; rag/profiles.py: Named); a document in both gets the larger."""
    if not (prior or named) or not fused:
        return
    best: dict[str, float] = {}
    for row, scores in fused:
        best[row["doc_id"]] = max(best.get(row["doc_id"], 0.0), scores["fused"])
    ranked = sorted(best.values(), reverse=True)
    top = ranked[0]
    if top <= 0:
        return
    flat = 0.0
    if len(ranked) >= fusion.profile_flat_rank:
        share = ranked[fusion.profile_flat_rank - 1] / top
        flat = min(1.0, max(0.0, (share - fusion.profile_flat_low)
                            / (fusion.profile_flat_high - fusion.profile_flat_low)))
    sure = max(flat, getattr(named, "certainty", 0.0))
    for row, scores in fused:
        doc_id = row["doc_id"]
        match = max(0.0, best[doc_id]) / top
        value = max(prior.get(doc_id, 0.0) * max(match, fusion.history_flat * flat),
                    named.get(doc_id, 0.0) * sure)
        if value > 0:
            scores["prior"] = value
            scores["fused"] += fusion.prior_weight * value


def _prior_rows(question: str, vector: np.ndarray, runtime: Runtime, prior: Mapping[str, float],
                doc_ids: Sequence[str] | None, depth: int, use_vectors: bool) -> list[dict]:
    """The best chunks of the prior's documents for `question`, so that a document the
    conversation is about, or that the question names, competes even where its chunks
    missed the global lists. One search per side over all of them, then one more per
    document that got no chunk from it."""
    wanted = [d for d, v in prior.items() if v > 0 and (not doc_ids or d in doc_ids)]
    if not wanted:
        return []
    chunks = runtime.store.chunks
    rows = chunks.text_search(question, depth, wanted)
    if use_vectors:
        rows += chunks.vector_search(vector, depth, wanted)
    for doc_id in set(wanted) - {r["doc_id"] for r in rows}:
        rows += chunks.text_search(question, depth, [doc_id])
        if use_vectors:
            rows += chunks.vector_search(vector, depth, [doc_id])
    seen: set[str] = set()
    return [r for r in rows if not (r["id"] in seen or seen.add(r["id"]))]


def fuse(query: np.ndarray, vrows: Sequence[dict], trows: Sequence[dict], ready: set[str], *,
         method: str = "score", rrf_k: int = 60, piece_weight: float = 0.6,
         vector_weight: float = 0.4, text_weight: float = 0.6,
         extra: Sequence[dict] = ()) -> list[tuple[dict, dict]]:
    """Fuse the vector and text result lists (orphans dropped first); (row, scores) best first.

    Rows carry `vector` (dim,) and `pieces` (n, dim): both cosines are computed
    for every candidate, including those only the text side found. Ranks and
    normalisation come after dropping orphans, so an interrupted ingest cannot
    push real chunks down.

    `extra`: more candidates (the document prior's, see _prior_rows; a row from a
    text search carries `_score`), without a rank in either list. They are scored
    against the bounds of the lists' candidates, clipped to [0, 1], so the
    fused scores of those candidates are the same as without them.
    """
    vrows = [r for r in vrows if r["doc_id"] in ready]
    trows = [r for r in trows if r["doc_id"] in ready]
    found: dict[str, tuple[dict, dict]] = {}
    for side, rows in (("vector", vrows), ("text", trows)):
        for rank, row in enumerate(rows, 1):
            entry = found.setdefault(row["id"], (row, {"text": 0.0}))
            entry[1][f"{side}_rank"] = rank
            if side == "text":
                entry[1]["text"] = float(row["_score"])
    listed = len(found)
    for row in extra:
        if row["doc_id"] in ready and row["id"] not in found:
            found[row["id"]] = (row, {"text": float(row.get("_score", 0.0))})
    entries = list(found.values())
    if not entries:
        return []
    vectors = np.stack([row["vector"] for row, _ in entries])
    cosines = vectors @ query
    pieces = np.array([float(np.max(_piece_cosines(row, query))) for row, _ in entries])
    bound = listed or len(entries)
    texts = [s["text"] for _, s in entries[:bound] if "text_rank" in s] \
        or [s["text"] for _, s in entries[bound:] if s["text"]]
    low, high = (min(texts), max(texts)) if texts else (0.0, 0.0)
    for (_, scores), cosine, piece, vn, pn in zip(entries, cosines, pieces,
                                                 _minmax(cosines, bound), _minmax(pieces, bound)):
        scores["vector"], scores["piece"] = float(cosine), float(piece)
        if method == "rrf":
            scores["fused"] = sum(weight / (rrf_k + scores[f"{side}_rank"])
                                  for side, weight in (("vector", piece_weight + vector_weight),
                                                       ("text", text_weight))
                                  if f"{side}_rank" in scores)
        else:
            tn = 0.0
            if scores["text"] or "text_rank" in scores:
                tn = (scores["text"] - low) / (high - low) if high > low else 1.0
            tn = min(1.0, max(0.0, tn))
            scores["fused"] = piece_weight * pn + vector_weight * vn + text_weight * tn
    return sorted(entries, key=lambda e: -e[1]["fused"])


def _piece_cosines(row: dict, query: np.ndarray) -> np.ndarray:
    """Cosines of the row's pieces to the question, computed once per search (rows come
    fresh from the store for every question, so the row holds them)."""
    if "piece_cosines" not in row:
        row["piece_cosines"] = row["pieces"] @ query
    return row["piece_cosines"]


def _minmax(values: np.ndarray, bound: int | None = None) -> np.ndarray:
    """Min-max normalised by the first `bound` values (all by default), clipped to [0, 1]."""
    ref = values[:bound] if bound else values
    low, high = float(ref.min()), float(ref.max())
    if high <= low:
        return np.ones_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _add_piece_scores(fused: list[tuple[dict, dict]], query: np.ndarray, terms: set[str],
                      sentence_weight: float, joint_weight: float) -> None:
    """Add the sentence-level signals to each candidate's fused score.

    `sentence`: the best piece's IDF-weighted share of the question's terms.
    `joint`: the best piece by cosine plus term share, min-max normalised over
    the candidates: the sentence that answers a question tends to be both
    close in meaning and to repeat its rarer words, where the best piece by
    each signal alone may be two different sentences (covidqa dev at weight
    0.15: hit@1 0.635 -> 0.647, MRR@10 0.721 -> 0.727, hit@5 unchanged).
    A chunk stored with one vector (or pieces the splitter no longer finds,
    see rag/store/migrations.py) is scored with that cosine for every piece.
    """
    pieces = [stored_pieces(row) for row, _ in fused]
    joint = []
    for (row, scores), shares in zip(fused, piece_term_shares(terms, pieces)):
        scores["sentence"] = float(shares.max())
        cosines = _piece_cosines(row, query)
        if len(cosines) != len(shares):  # one vector for the whole chunk
            cosines = cosines.max()
        joint.append(float(np.max(cosines + shares)))
    for (_, scores), value, norm in zip(fused, joint, _minmax(np.array(joint))):
        scores["joint"] = value
        scores["fused"] += sentence_weight * scores["sentence"] + joint_weight * norm


def stored_pieces(row: dict) -> list[str]:
    """The texts embedded for a stored chunk, read back from its piece spans."""
    return [with_heading(row.get("heading") or "", piece_text(row["text"], p))
            for p in unflatten(row["piece_spans"])]


def piece_term_shares(terms: set[str], pieces: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """For each candidate (its text as pieces), the IDF-weighted share of `terms` in each piece.

    IDF comes from the candidates themselves (the union of both searches),
    which is enough to tell a topic word shared by every candidate from a
    distinguishing one.
    """
    words_of = [[set(words(p)) for p in candidate] for candidate in pieces]
    if not terms:
        return [np.zeros(len(w)) for w in words_of]
    present = [set().union(*w) for w in words_of]
    df = {t: sum(1 for p in present if t in p) for t in terms}
    n = len(pieces)
    idf = {t: math.log(1.0 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}
    total = sum(idf.values()) or 1.0
    return [np.array([sum(idf[t] for t in terms if t in w) / total for w in candidate])
            for candidate in words_of]


def sentence_scores(terms: set[str], texts: Sequence[str]) -> list[float]:
    """For each candidate text, the IDF-weighted share of `terms` that its best sentence holds.

    An answer usually sits in one sentence that repeats the question's rarer
    words; a chunk that merely mentions them across several sentences is a
    weaker candidate. Measured on covidqa dev: hit@5 0.768 -> 0.804 at
    weight 0.6 (0.4 and 0.8 within a point).
    """
    pieces = [sentence_pieces(t) or [t] for t in texts]
    return [float(s.max()) if len(s) else 0.0 for s in piece_term_shares(terms, pieces)]


def is_relevant(passages: Sequence[Passage], *, min_cosine: float = MIN_COSINE,
                min_overlap: float = MIN_OVERLAP,
                min_overlap_text_only: float = MIN_OVERLAP_TEXT_ONLY) -> bool:
    """Whether the passages plausibly answer the question (else: refuse, no model call).

    Relevant when some passage holds a piece close in meaning (cosine >=
    min_cosine) or shares most of the question's content terms (overlap >=
    min_overlap). When the vector side was switched off for this question
    (`scores["vector_weight"]` is 0: an English-only embedder and a non-Latin
    question) the cosine means nothing and a lower overlap bar applies, since
    character bigrams of a question rarely all occur in the answer.
    """
    for p in passages:
        if p.scores.get("vector_weight", 1.0) > 0:
            if (p.scores.get("piece", 0.0) >= min_cosine
                    or p.scores.get("overlap", 0.0) >= min_overlap):
                return True
        elif p.scores.get("overlap", 0.0) >= min_overlap_text_only:
            return True
    return False
