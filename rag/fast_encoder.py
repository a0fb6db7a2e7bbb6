"""A faster forward pass for BERT-family encoders (BERT, XLM-RoBERTa) on MLX's CPU backend.

On a 2-core x86 CPU with OpenBLAS behind MLX (rag/blas.py) the matmuls run near
the core's peak, but MLX's CPU kernels for transcendental functions are scalar:
the exact GELU cost as much as a feed-forward matmul and softmax 5x NumPy's. Here
the same network runs with
- the query, key and value projections fused into one matmul, the 1/sqrt(d)
  attention scale folded into the query weights;
- the attention itself in NumPy: splitting heads is a cheap contiguous copy there
  (MLX's strided copies cost more than the attention matmuls), and the softmax
  runs in place on NumPy's SIMD exp, padded keys zeroed by slices;
- GELU in its tanh form through NumPy's SIMD tanh, over cache-sized blocks
  (4.7e-4 from the exact erf form at worst, which moves sentence embeddings by
  less than 1e-5 in cosine; tests/test_embed.py checks it);
- batches spread over one worker thread per core, each with single-threaded
  BLAS, so that the elementwise work (single-threaded in MLX and NumPy) runs
  on every core instead of leaving one idle. MLX and NumPy release the GIL
  while they compute.
Weights are the model's own. On Metal/CUDA we use the model as is.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import numpy as np

_BLOCK = 65536  # floats per GELU pass: 256 KiB, stays in L2
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def supports(model) -> bool:
    """True for the encoder layouts this module knows (mlx-embeddings' bert, xlm_roberta)."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    return (getattr(model, "embeddings", None) is not None and bool(layers)
            and hasattr(layers[0], "attention") and hasattr(layers[0], "intermediate")
            and mx.default_device() == mx.cpu)


def gelu_np(x: np.ndarray) -> np.ndarray:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), written into a new array."""
    src = x.reshape(-1)
    out = np.empty_like(src)
    for start in range(0, src.size, _BLOCK):
        xs = src[start:start + _BLOCK]
        y = np.multiply(xs, xs)
        y *= 0.044715 * _SQRT_2_OVER_PI
        y += _SQRT_2_OVER_PI
        y *= xs
        np.tanh(y, out=y)
        y += 1.0
        y *= 0.5
        np.multiply(xs, y, out=out[start:start + _BLOCK])
    return out.reshape(x.shape)


def attention_probs(scores: np.ndarray, lengths: np.ndarray, bound: float) -> np.ndarray:
    """Softmax over keys, in place, with the keys past each text's length masked out.

    `bound` caps every score (|q||k|); when exp cannot overflow, the usual
    max-subtraction pass is skipped. Masking zeroes padded keys after exp
    instead of adding a large negative bias before it: one slice per text
    instead of a pass over every score.
    """
    width = scores.shape[-1]
    padded = [(row, n) for row, n in enumerate(lengths) if n < width]
    if bound > 80.0:  # exp could overflow: mask first, then the stable form
        for row, n in padded:
            scores[row, ..., n:] = -np.inf
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
    else:
        np.exp(scores, out=scores)
        for row, n in padded:
            scores[row, ..., n:] = 0.0
    scores *= 1.0 / scores.sum(axis=-1, keepdims=True)
    return scores


class _Layer:
    """One encoder layer's weights, rearranged once for the fused projections."""

    def __init__(self, layer) -> None:
        attn = layer.attention.self
        self.heads = attn.num_attention_heads
        self.head_dim = attn.attention_head_size
        scale = 1.0 / math.sqrt(self.head_dim)
        self.w_qkv = mx.concatenate([attn.query.weight * scale, attn.key.weight,
                                     attn.value.weight], axis=0).T
        self.b_qkv = mx.concatenate([attn.query.bias * scale, attn.key.bias, attn.value.bias])
        self.attn_out = layer.attention.output
        self.intermediate = layer.intermediate.dense
        self.output = layer.output
        mx.eval(self.w_qkv, self.b_qkv)

    def __call__(self, h: mx.array, lengths: np.ndarray) -> mx.array:
        B, L, width = h.shape
        qkv = mx.addmm(self.b_qkv, h.reshape(B * L, width), self.w_qkv)
        mx.eval(qkv)
        ctx = mx.array(self._attention(np.array(qkv, copy=False).reshape(B, L, -1), lengths))
        out = self.attn_out
        a = out.LayerNorm(out.dense(ctx.reshape(B, L, width)) + h)
        inner = self.intermediate(a)
        mx.eval(inner)
        inner = mx.array(gelu_np(np.array(inner, copy=False)))
        return self.output.LayerNorm(self.output.dense(inner) + a)

    def _attention(self, qkv: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        # In NumPy: MLX's CPU copies of strided head views cost more than the matmuls.
        B, L, _ = qkv.shape
        qkv = qkv.reshape(B, L, 3, self.heads, self.head_dim)
        q, k, v = (np.ascontiguousarray(qkv[:, :, i].transpose(0, 2, 1, 3)) for i in range(3))
        bound = math.sqrt(float(np.einsum("bhld,bhld->bhl", q, q).max())
                          * float(np.einsum("bhld,bhld->bhl", k, k).max()))
        probs = attention_probs(q @ k.transpose(0, 1, 3, 2), lengths, bound)
        ctx = (probs @ v).transpose(0, 2, 1, 3)
        return np.ascontiguousarray(ctx).reshape(B * L, self.heads * self.head_dim)


_prepared: dict[int, list[_Layer]] = {}
_prepare_lock = threading.Lock()


def _layers(model) -> list[_Layer]:
    with _prepare_lock:
        key = id(model)
        if key not in _prepared:
            _prepared[key] = [_Layer(layer) for layer in model.encoder.layer]
        return _prepared[key]


def encode(model, input_ids: mx.array, mask: mx.array) -> mx.array:
    """Mean-pooled, L2-normalised sentence embeddings, as the model's own text_embeds."""
    h = model.embeddings(input_ids)
    lengths = np.asarray(mask).sum(axis=1)  # masks are ones then padding
    for layer in _layers(model):
        h = layer(h, lengths)
    m = mask.astype(mx.float32)[..., None]
    pooled = (h * m).sum(axis=1) / mx.maximum(m.sum(axis=1), 1e-9)
    return pooled / mx.maximum(mx.linalg.norm(pooled, axis=-1, keepdims=True), 1e-9)


def workers() -> int:
    """Threads for encoding: one per core (RAG_EMBED_THREADS overrides)."""
    try:
        return max(1, int(os.environ.get("RAG_EMBED_THREADS", "")))
    except ValueError:
        return max(1, min(8, os.cpu_count() or 1))


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_active = 0  # encode_many calls in flight, for the BLAS thread setting
_limiter = None


def encode_many(jobs: Sequence[tuple], run: Callable[[tuple], np.ndarray]) -> list[np.ndarray]:
    """Run `run(job)` for every job on the worker threads; results in order.

    While any call is in flight, OpenBLAS runs single-threaded: the workers
    already occupy every core, and nested BLAS threads would oversubscribe them.
    """
    global _pool, _active, _limiter
    n = workers()
    if n == 1 or len(jobs) == 1:
        return [run(job) for job in jobs]
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="rag-encode")
        if _active == 0:
            _limiter = _blas_controller().limit(limits=1, user_api="blas")
        _active += 1
    try:
        return list(_pool.map(run, jobs))
    finally:
        with _pool_lock:
            _active -= 1
            if _active == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None


@functools.cache
def _blas_controller():
    # Both BLAS libraries in the process: the OpenBLAS behind MLX and NumPy's own.
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
