"""Benchmarks that print figures side by side (run through `rag bench ...`).

Each BLAS variant runs in a fresh subprocess, because the choice of BLAS is
made when MLX is first imported (rag/blas.py); RAG_BLAS=bundled keeps the one
the wheel ships.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SAMPLE = ("Coronaviruses are enveloped viruses with a positive-sense single-stranded RNA genome. "
          "The spike protein binds the host receptor and mediates entry into the cell, which makes "
          "it the main target of neutralising antibodies and of most vaccine designs. Patients "
          "with severe disease often show lymphopenia and raised inflammatory markers, and chest "
          "imaging commonly reveals bilateral ground-glass opacities in the lower lobes.")


def _chunks(n: int) -> list[str]:
    # ~100 MiniLM tokens each, all different so nothing is cached.
    return [f"Record {i}. " + SAMPLE for i in range(n)]


def worker(kind: str, embedder_path: str = "") -> dict:
    import mlx.core as mx

    import rag  # noqa: F401 - applies the BLAS choice
    from rag import blas

    out: dict = {"blas": blas.loaded or "bundled"}
    if kind == "matmul":
        a = mx.random.normal((1024, 1024))
        b = mx.random.normal((1024, 1024))
        mx.eval(a @ b)
        start = time.perf_counter()
        for _ in range(5):
            mx.eval(a @ b)
        out["matmul_s"] = (time.perf_counter() - start) / 5
    else:
        from rag.config import load_config
        from rag.embed import load_embedder

        emb = load_embedder(load_config({"embedder": embedder_path, "models": "pack"}))
        texts = _chunks(96 if kind == "embed" else 24)
        out["tokens_per_chunk"] = sum(emb.count_tokens_batch(texts)) / len(texts)
        emb.fast_path = kind != "embed-stock"  # stock: mlx-embeddings' own forward pass
        emb.embed_batch(texts[:8])
        start = time.perf_counter()
        emb.embed_batch(texts)
        out["chunks_per_s"] = len(texts) / (time.perf_counter() - start)
    out["peak_mb"] = mx.get_peak_memory() / 1e6 if hasattr(mx, "get_peak_memory") else None
    return out


def run_variant(kind: str, bundled: bool, embedder_path: str = "") -> dict:
    env = dict(os.environ)
    env["RAG_BLAS"] = "bundled" if bundled else ""
    cmd = [sys.executable, "-m", "rag.cli.bench.blas", kind, embedder_path]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark {kind} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def blas_table(embedder_path: str) -> list[tuple[str, str, str]]:
    """Rows (measure, bundled BLAS, project set-up)."""
    rows = []
    bundled, ours = run_variant("matmul", True), run_variant("matmul", False)
    rows.append(("float32 matmul 1024x1024 (s)", f"{bundled['matmul_s']:.4f}",
                 f"{ours['matmul_s']:.4f}"))
    stock_bundled = run_variant("embed-stock", True, embedder_path)
    stock_ours = run_variant("embed-stock", False, embedder_path)
    fast_ours = run_variant("embed", False, embedder_path)
    tokens = fast_ours["tokens_per_chunk"]
    rows.append((f"MiniLM, mlx-embeddings forward (chunks/s, ~{tokens:.0f} tokens)",
                 f"{stock_bundled['chunks_per_s']:.1f}", f"{stock_ours['chunks_per_s']:.1f}"))
    rows.append((f"MiniLM, project embedder (chunks/s, ~{tokens:.0f} tokens)", "-",
                 f"{fast_ours['chunks_per_s']:.1f}"))
    rows.append(("BLAS library", bundled["blas"], ours["blas"]))
    return rows


if __name__ == "__main__":
    print(json.dumps(worker(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")))
