"""Synthetic stores for `rag bench scale` that look like real ones, and exact answers.

Vectors: a bank of real MiniLM sentence vectors (sentences of the covidqa papers,
embedded once with the offline pack and cached) grouped by paper. A synthetic
document takes one paper as its topic; each of its chunks has PIECES pieces,
each a weighted mix of three of that paper's sentence vectors (the first
weighing 0.6-1, the others 0-0.4) plus a little Gaussian noise, normalised. So
the vectors cluster by topic as real ones do and lie near the real sentence
manifold, never uniform noise; a chunk's text is its pieces' first sentences,
so the full-text index sees the papers' real vocabulary. Questions are the
covidqa dev questions, embedded as queries.

Everything is generated in batches of BATCH chunks from seeds of (seed, batch
start): the exact answers are computed batch by batch from the same arrays,
and nothing ever holds the whole corpus.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PIECES = 6  # pieces per chunk (covidqa: 2,616 chunks, ~16k pieces)
PER_DOC = 100  # chunks per synthetic document
BATCH = 5_000  # chunks per generated batch (a multiple of PER_DOC)
NOISE = 0.35  # norm of the Gaussian noise added to a mix of unit vectors
SENTENCES_PER_PAPER = 40


@dataclass
class Bank:
    vectors: np.ndarray  # (n, dim) unit sentence vectors, grouped by paper
    texts: list[str]
    starts: np.ndarray  # (papers,) first sentence of each paper
    sizes: np.ndarray  # (papers,)
    questions: np.ndarray  # (q, dim) unit question vectors
    question_texts: list[str]


def load_bank(docs: Path, questions: Path, cache: Path, embedder_factory,
              limit: int = 200, dim: int | None = None) -> Bank:
    """The real sentence and question vectors (embedded once, then read from `cache`);
    with `dim`, lifted to that many dimensions (see lift)."""
    from rag.text import sentence_pieces

    papers = sorted(docs.glob("*.txt"))
    rows = [json.loads(line) for line in questions.open(encoding="utf-8")][:limit]
    key = hashlib.sha256(("|".join(p.name for p in papers) + f"|{len(rows)}").encode())
    path = cache / f"bank-{key.hexdigest()[:12]}.npz"
    texts, sizes = [], []
    for paper in papers:
        found = [s for s in sentence_pieces(paper.read_text(encoding="utf-8")) if len(s) > 40]
        texts += found[:SENTENCES_PER_PAPER]
        sizes.append(min(len(found), SENTENCES_PER_PAPER))
    asked = [r["question"] for r in rows]
    if path.exists():
        data = np.load(path)
        vectors, qvectors = data["vectors"], data["questions"]
    else:
        embedder = embedder_factory()
        vectors = embedder.embed_batch(texts)
        qvectors = embedder.embed_batch(asked, query=True)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, vectors=vectors, questions=qvectors)
    sizes_array = np.array(sizes)
    keep = sizes_array > 0
    starts = (np.cumsum(sizes_array) - sizes_array)[keep]
    vectors, qvectors = np.asarray(vectors, np.float32), np.asarray(qvectors, np.float32)
    if dim and dim != vectors.shape[1]:
        vectors, qvectors = lift(vectors, dim), lift(qvectors, dim)
    return Bank(vectors, texts, starts, sizes_array[keep], qvectors, asked)


def lift(vectors: np.ndarray, dim: int, seed: int = 7) -> np.ndarray:
    """Unit vectors mapped to `dim` dimensions by one fixed Gaussian matrix.

    For an embedder wider than the one at hand (768 for the default e5-base against
    the offline MiniLM's 384): a random linear map keeps the bank's neighbourhoods
    (angles change by a few percent) and its clusters, so IVF and PQ meet the same
    structure in more dimensions; its intrinsic dimension stays the source's.
    """
    rng = np.random.default_rng(seed)
    lifted = vectors @ rng.standard_normal((vectors.shape[1], dim), dtype=np.float32)
    return lifted / np.linalg.norm(lifted, axis=1, keepdims=True)


def batch(bank: Bank, start: int, n: int, seed: int = 0):
    """Chunks [start, start + n): (document numbers (n,), sentence numbers (n, PIECES),
    piece vectors (n, PIECES, dim))."""
    rng = np.random.default_rng([seed, start])
    docs = (start + np.arange(n)) // PER_DOC
    topics = (docs * 2654435761 + seed) % len(bank.starts)
    picks = (rng.random((n, PIECES, 3)) * bank.sizes[topics][:, None, None]).astype(np.int64)
    picks += bank.starts[topics][:, None, None]
    weights = np.concatenate([rng.uniform(0.6, 1.0, (n, PIECES, 1)),
                              rng.uniform(0.0, 0.4, (n, PIECES, 2))], axis=2)
    dim = bank.vectors.shape[1]
    mixed = np.einsum("npk,npkd->npd", weights.astype(np.float32), bank.vectors[picks])
    mixed += rng.standard_normal((n, PIECES, dim), dtype=np.float32) * (NOISE / np.sqrt(dim))
    mixed /= np.linalg.norm(mixed, axis=2, keepdims=True)
    return docs, picks[:, :, 0], mixed


def batches(bank: Bank, total: int, seed: int = 0, first: int = 0):
    for start in range(first, first + total, BATCH):
        yield start, *batch(bank, start, min(BATCH, first + total - start), seed)


def chunk_id(n: int) -> str:
    doc = n // PER_DOC
    return f"{doc_sha(doc)}:{n % PER_DOC}"


def doc_sha(doc: int) -> str:
    return hashlib.sha256(f"synthetic paper {doc}".encode()).hexdigest()


def exact_top(bank: Bank, total: int, k: int, seed: int = 0,
              by_mean: bool = False) -> list[list[str]]:
    """For each question, the `k` chunks whose best piece is closest (exact, by batch);
    with `by_mean`, ranked by the chunk vector (the normalised mean of its pieces)."""
    q = bank.questions
    best = np.full((len(q), 0), -np.inf, np.float32)
    owner = np.zeros((len(q), 0), np.int64)
    for start, _, _, pieces in batches(bank, total, seed):
        n, dim = len(pieces), pieces.shape[2]
        if by_mean:
            means = pieces.mean(axis=1)
            scores = (means / np.linalg.norm(means, axis=1, keepdims=True) @ q.T).T
        else:
            scores = (pieces.reshape(-1, dim) @ q.T).reshape(n, PIECES, len(q)).max(1).T
        best = np.concatenate([best, scores], axis=1)
        owner = np.concatenate([owner, np.broadcast_to(start + np.arange(n), scores.shape)],
                               axis=1)
        if best.shape[1] > k:
            top = np.argpartition(-best, k - 1, axis=1)[:, :k]
            best, owner = np.take_along_axis(best, top, 1), np.take_along_axis(owner, top, 1)
    order = np.argsort(-best, axis=1, kind="stable")
    return [[chunk_id(int(c)) for c in row] for row in np.take_along_axis(owner, order, 1)]


def write_store(store, bank: Bank, total: int, seed: int = 0, first: int = 0,
                progress=None) -> None:
    """Add chunks [first, first + total) to `store` as documents of PER_DOC chunks, the way
    ingestion does (Store.add_documents: chunk rows, then document rows)."""
    from rag.types import Chunk, Document

    for start, docs, sentences, pieces in batches(bank, total, seed, first):
        items = []
        for doc in np.unique(docs):
            mine = np.flatnonzero(docs == doc)
            sha = doc_sha(int(doc))
            record = Document(path=f"/synthetic/{doc}.txt", title=f"Synthetic paper {doc}",
                              mime="text/plain", sha256=sha, pages=[])
            chunks, vectors = [], []
            for i in mine:
                text = " ".join(bank.texts[s] for s in sentences[i])
                ordinal = (start + int(i)) % PER_DOC
                chunks.append(Chunk(sha, ordinal, text, 1, 1, 0, len(text)))
                vectors.append(pieces[i])
            items.append((record, chunks, vectors, b""))
        store.add_documents(items)
        if progress:
            progress(start + len(docs) - first)
