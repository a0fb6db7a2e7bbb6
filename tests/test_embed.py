"""The project's CPU encoder against the model's own forward pass (real MiniLM from the pack)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rag import fast_encoder

pytestmark = pytest.mark.slow

TEXTS = [
    "Tides at Orlow Harbour peak twice a day.",
    ("The Aurora observatory was completed after six years of construction on the ridge, "
     "with a 2.4 metre mirror ground in the valley below and hauled up in winter."),
    "Sourdough starter: feed it flour and water every twelve hours. " * 12,
    "Lichens grow slowly; a crustose thallus may add only a millimetre a year.",
    "Short.",
]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("threads", ["1", "2"])
def test_fast_path_matches_the_models_own_forward(embedder, monkeypatch, threads):
    assert fast_encoder.supports(embedder.model)
    monkeypatch.setenv("RAG_EMBED_THREADS", threads)
    monkeypatch.setattr(embedder, "batch_tokens", 64)  # several batches, with padding
    fast = embedder.embed_batch(TEXTS)
    monkeypatch.setattr(embedder, "fast_path", False)
    reference = embedder.embed_batch(TEXTS)
    assert fast.shape == reference.shape == (len(TEXTS), embedder.dim)
    assert _cosines(fast, reference).min() > 0.99999
    # Each text keeps its own vector whatever batch it lands in.
    one_by_one = np.stack([embedder.embed_batch([t])[0] for t in TEXTS])
    assert _cosines(fast, one_by_one).min() > 0.99999
    assert _cosines(fast[:1], fast[1:2])[0] < 0.99


def _reference_softmax(scores: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    masked = scores.copy()
    for row, n in enumerate(lengths):
        masked[row, ..., n:] = -np.inf
    masked -= masked.max(axis=-1, keepdims=True)
    e = np.exp(masked)
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("scale", [1.0, 60.0])  # 60: exp would overflow without max-subtraction
def test_attention_probs_masks_padding_and_stays_finite(scale):
    rng = np.random.default_rng(0)
    scores = (rng.standard_normal((3, 2, 5, 7)) * scale).astype(np.float32)
    lengths = np.array([7, 4, 1])
    bound = float(np.abs(scores).max()) + 1.0
    expected = _reference_softmax(scores, lengths)
    got = fast_encoder.attention_probs(scores.copy(), lengths, bound)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert (got[1, ..., 4:] == 0).all() and (got[2, ..., 1:] == 0).all()


def test_gelu_is_within_the_tanh_forms_error_of_exact_gelu():
    x = np.linspace(-8, 8, 200_000, dtype=np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.tolist()])
    got = fast_encoder.gelu_np(x.reshape(400, 500))
    assert got.shape == (400, 500)
    assert np.abs(got.reshape(-1) - exact).max() < 5e-4
