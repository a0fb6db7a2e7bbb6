"""Ingestion benchmark: a fresh temporary store, real files, rates and the time split."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rag.config import Config, replace


def run(paths: list[Path], config: Config, *, limit: int | None = None) -> dict:
    from ingest.pipeline import discover, ingest_paths
    from rag.runtime import open_runtime

    started = time.perf_counter()
    files = discover(paths)
    if limit:
        files = sorted(files, key=lambda p: p.name)[:limit]
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        runtime = open_runtime(replace(config, db=Path(tmp)))
        loaded = time.perf_counter() - started
        tokens_before = getattr(runtime.embedder, "tokens_embedded", 0)
        report = ingest_paths(files, runtime)
        wall = time.perf_counter() - started
        tokens = getattr(runtime.embedder, "tokens_embedded", 0) - tokens_before
        n_sample = min(256, runtime.store.chunks.count())
        sample = _sample_texts(runtime.store, n_sample)
        encoders = compare_encoders(runtime.embedder, sample) if sample else {}
    done = [f for f in report.files if f.status in ("ingested", "replaced")]
    pages, chunks = sum(f.pages for f in done), sum(f.chunks for f in done)
    t = report.timings
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"files": len(files), "ingested": len(done), "pages": pages, "chunks": chunks,
               "seconds": t.total, "pages_per_s": pages / t.total, "chunks_per_s": chunks / t.total,
               "embed_chunks_per_s": chunks / t.embed if t.embed else 0.0,
               "tokens": tokens, "embed_tokens_per_s": tokens / t.embed if t.embed else 0.0,
               "encoder_tokens_per_s": encoders,
               "split": {"parse wait": t.parse, "chunk": t.chunk, "embed": t.embed,
                         "write": t.write, "index": t.index},
               "model_load_s": loaded, "wall_s": wall, "peak_rss_mb": peak_mb}
    table = Table(title=f"ingestion of {len(files)} files ({runtime.embedder.name})",
                  show_edge=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("ingested", "pages", "chunks"):
        table.add_row(key, str(figures[key]))
    table.add_row("pages/s", f"{figures['pages_per_s']:.1f}")
    table.add_row("chunks/s (end to end)", f"{figures['chunks_per_s']:.1f}")
    table.add_row("chunks/s (embedding alone)", f"{figures['embed_chunks_per_s']:.1f}")
    table.add_row("tokens embedded", str(tokens))
    table.add_row("tokens/s (embedding alone)", f"{figures['embed_tokens_per_s']:.0f}")
    for stage, seconds in figures["split"].items():
        table.add_row(f"  {stage} s", f"{seconds:.1f} ({100 * seconds / t.total:.0f}%)")
    table.add_row("ingest s", f"{t.total:.1f}")
    table.add_row("model load s", f"{loaded:.1f}")
    table.add_row("peak RSS MB", f"{peak_mb:.0f}")
    console = Console()
    console.print(table)
    if encoders:
        side = Table(title=f"encoder on the pieces of {n_sample} of these chunks, same run",
                     show_edge=False)
        side.add_column("encoder")
        side.add_column("tokens/s", justify="right")
        for name, rate in encoders.items():
            side.add_row(name, f"{rate:.0f}")
        console.print(side)
    return figures


def _sample_texts(store, n: int) -> list[str]:
    """The sentence pieces of `n` stored chunks: what ingestion embeds."""
    from rag.retrieve import stored_pieces

    rows = store.chunks.table.search().select(["text", "piece_spans"]).limit(n).to_list()
    return [p for r in rows for p in stored_pieces(r)]


def compare_encoders(embedder, texts: list[str]) -> dict[str, float]:
    """Tokens/s of the model's own forward pass (mlx-embeddings, one batch at a time,
    BLAS threads as configured) and of the project's encoder, on the same texts."""
    from rag import fast_encoder

    if not fast_encoder.supports(getattr(embedder, "model", None)):
        return {}
    rates = {}
    for name, fast in (("mlx-embeddings forward (baseline)", False), ("project encoder", True)):
        embedder.fast_path = fast
        try:
            embedder.embed_batch(texts[:8])
            tokens = embedder.tokens_embedded
            start = time.perf_counter()
            embedder.embed_batch(texts)
            rates[name] = (embedder.tokens_embedded - tokens) / (time.perf_counter() - start)
        finally:
            embedder.fast_path = True
    return rates
