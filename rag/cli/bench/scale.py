"""`rag bench scale`: sentence-piece search from a hundred thousand chunks to millions.

For each size in --sizes: a synthetic store whose vectors are real MiniLM
sentence vectors mixed and perturbed (rag/cli/bench/scale_data.py; 6 pieces a
chunk, 100 chunks a document), written through Store.add_documents; then, each
in a child process that loads no model (rag/cli/bench/scale_search.py):

  matrix      today's small-store path: every piece vector in one matrix, loaded
              on the first search after a write (only up to --matrix-max chunks:
              4 bytes x dim per piece)
  build       the piece table and its IVF-PQ index, as a store passing the
              threshold builds them (B-tree keys, table copy, index training)
  piece table the same questions through the table (Chunks.vector_search: ids by
              best piece, then the rows), the full-text side, a sweep of
              nprobes x refine, and a search after appending --append chunks
              that the index does not cover yet (flat-scanned)
  hnsw        IVF-HNSW-SQ in place of IVF-PQ, for comparison (up to --hnsw-max)

Latency: p50/p95 over the covidqa dev questions after a warm-up pass, k = 50
(the depth retrieval asks for). Recall@10 (and @50): the share of the exact top
chunks by best piece (computed here batch by batch) that the search returned.
Memory: the child's resident set after searching, and its peak, in MB. The
machine's load average is printed with every size. A 5M row is projected from
the two largest measured sizes (a power law through them), never measured.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rag.config import Config, replace

K = 50  # chunks asked for per question (retrieve.Fusion.depth)
SWEEP = [(20, 5), (40, 3), (40, 5), (40, 10), (80, 5), (80, 10), (160, 5)]
NEVER = 10**12  # a threshold no store reaches: the matrix


def run(config: Config, *, sizes: list[int], work: Path | None, keep: bool, matrix_max: int,
        hnsw_max: int, append: int, project: int, questions: int, eval_dir: Path,
        report: Path | None, dim: int | None = None) -> list[dict]:
    from rag.cli.bench.scale_data import load_bank

    console = Console(width=max(Console().width, 110))
    folder = Path(work or tempfile.mkdtemp(prefix="rag-bench-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    docs, asked = eval_dir / "covidqa" / "docs", eval_dir / "covidqa" / "dev.jsonl"
    bank = load_bank(docs, asked, folder / "bank", lambda: _embedder(config), limit=questions,
                     dim=dim)
    console.print(f"bank: {len(bank.texts)} real sentence vectors of {len(bank.starts)} papers,"
                  f" {len(bank.questions)} questions, dim {bank.vectors.shape[1]}"
                  + (" (lifted from the embedder's by a fixed random map)" if dim else "") + ";"
                  f" work folder {folder}")
    import numpy as np

    np.save(folder / "questions.npy", bank.questions)
    (folder / "questions.json").write_text(json.dumps(bank.question_texts))
    common = {"dim": int(bank.vectors.shape[1]), "k": K, "questions": str(folder / "questions.npy"),
              "texts": str(folder / "questions.json"), "docs": str(docs),
              "questions_file": str(asked), "cache": str(folder / "bank"),
              "nprobes": config.piece_nprobes, "refine": config.piece_refine}
    results = []
    try:
        for n in sizes:
            results.append(measure(console, bank, folder, n, common, matrix_max=matrix_max,
                                   hnsw_max=hnsw_max, append=append))
            print_size(console, results[-1])
            if not keep:
                shutil.rmtree(folder / f"store-{n}", ignore_errors=True)
    finally:
        if not keep and work is None:
            shutil.rmtree(folder, ignore_errors=True)
    print_summary(console, results, project)
    from rag.cli.bench.scale_search import memory

    peaks = [r[key]["peak_mb"] for r in results for key in ("matrix", "table", "build", "hnsw")
             if key in r]
    console.print(f"memory: this process peaked at {memory()['peak_mb']:.0f} MB, its search"
                  f" and build processes at {max(peaks, default=0):.0f} MB at most (one at a"
                  " time)")
    if report:
        report.write_text(json.dumps(results, indent=1))
    return results


def _embedder(config: Config):
    from rag.embed import load_embedder

    return load_embedder(replace(config, models="pack"))


def measure(console, bank, folder: Path, n: int, common: dict, *, matrix_max: int,
            hnsw_max: int, append: int) -> dict:
    from rag.cli.bench.scale_data import exact_top

    db = folder / f"store-{n}"
    out: dict = {"chunks": n, "load_before": os.getloadavg()}
    out.update(write(console, bank, db, n, common["dim"]))
    spec = {**common, "db": str(db), "chunks": n}
    truth = exact_top(bank, n, K)
    # Past 100k chunks the store used to rank by chunk vectors: even exact, how many of
    # the best-piece top chunks does that find?
    out["chunk_vectors"] = scored({"ids": exact_top(bank, n, K, by_mean=True)}, truth)
    truth_after = exact_top(bank, n + append, K) if append else truth
    if n <= matrix_max:
        console.print(f"[{n:,}] matrix search ...")
        out["matrix"] = scored(child({**spec, "step": "search", "threshold": NEVER}), truth)
    console.print(f"[{n:,}] building the piece table and its index ...")
    out["build"] = child({**spec, "step": "build", "threshold": n})
    console.print(f"[{n:,}] searching the piece table ...")
    found = child({**spec, "step": "search", "threshold": n, "text": True,
                   "sweep": SWEEP, "append": append})
    if "append" in found:
        found["append"] = scored(found["append"], truth_after)
        found["append"]["folded"] = scored(found["append"]["folded"], truth_after)
        (db / "complete").unlink(missing_ok=True)  # no longer the store of n chunks
    found["sweep"] = [{**scored(s, truth), "index": "IVF-PQ"} for s in found["sweep"]]
    out["table"] = scored(found, truth)
    if n <= hnsw_max:
        console.print(f"[{n:,}] IVF-HNSW-SQ for comparison ...")
        built = child({**spec, "step": "index", "kind": "ivf_hnsw_sq", "threshold": n})
        hnsw = scored(child({**spec, "step": "search", "threshold": n,
                             "sweep": [(10, 1), (20, 1)]}), truth_after)
        hnsw["sweep"] = [{**scored(s, truth_after), "index": "IVF-HNSW-SQ"}
                         for s in hnsw["sweep"]]
        out["hnsw"] = {**hnsw, "index_s": built["index_s"], "build_peak_mb": built["peak_mb"]}
    out["disk_gb"] = {name: _size(db / "lance" / f"{name}.lance") / 1e9
                      for name in ("chunks", "pieces")}
    out["load_after"] = os.getloadavg()
    return out


def write(console, bank, db: Path, n: int, dim: int) -> dict:
    """The synthetic store of n chunks (kept from an earlier run with --work and --keep)."""
    from rag.cli.bench.scale_data import write_store
    from rag.store import PieceSearch, Store
    from rag.store.migrations import table_names
    from rag.store.pieces import TABLE

    if (db / "complete").exists():
        store = Store(db, dim, "bench", pieces=PieceSearch(table_chunks=NEVER))
        if TABLE in table_names(store.db):
            store.db.drop_table(TABLE)  # built again below, and timed
        saved = json.loads((db / "complete").read_text())
        console.print(f"[{n:,}] reusing the store written earlier")
        return saved
    shutil.rmtree(db, ignore_errors=True)
    store = Store(db, dim, "bench", pieces=PieceSearch(table_chunks=NEVER))
    console.print(f"[{n:,}] writing {n:,} chunks ...")
    start = time.perf_counter()
    step = max(n // 10, 1)
    write_store(store, bank, n, progress=lambda done: done % step < 5_000 and console.print(
        f"  {done:,} chunks, {time.perf_counter() - start:.0f} s"))
    written = time.perf_counter() - start
    start = time.perf_counter()
    store.chunks.refresh_indexes()  # the full-text index (the threshold is never reached)
    saved = {"write_s": written, "fts_s": time.perf_counter() - start}
    (db / "complete").write_text(json.dumps(saved))
    return saved


def child(spec: dict) -> dict:
    """Run one step of rag/cli/bench/scale_search.py in a fresh process."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        env = {**os.environ, "RUST_LOG": "error"}
        done = subprocess.run([sys.executable, "-m", "rag.cli.bench.scale_search", f.name],
                              capture_output=True, text=True, env=env)
    finally:
        os.unlink(f.name)
    if done.returncode:
        raise RuntimeError(f"scale {spec['step']} step failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scored(found: dict, truth: list[list[str]]) -> dict:
    """`found` with recall@10 and @50 in place of its id lists."""
    out = dict(found)
    for key in ("vector", "ids_only"):
        if key in out:
            out[key] = scored(out[key], truth)
    if "ids" in out:
        ids = out.pop("ids")
        for at in (10, 50):
            out[f"recall@{at}"] = sum(len(set(a[:at]) & set(t[:at])) / at
                                      for a, t in zip(ids, truth)) / len(truth)
    return out


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def print_size(console, r: dict) -> None:
    n = r["chunks"]
    table = Table(title=f"{n:,} chunks ({6 * n:,} pieces); load average"
                        f" {r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after",
                  show_edge=False)
    for column in ("method", "build s", "p50 ms", "p95 ms", "recall@10", "recall@50",
                   "RSS MB", "peak MB"):
        table.add_column(column, justify="right" if column != "method" else "left")
    notes = []
    if "matrix" in r:
        m = r["matrix"]
        table.add_row("matrix (today)", f"{m['first_s']:.1f}", *_latency(m["vector"]),
                      *_recall(m["vector"]), f"{m['rss_mb']:.0f}", f"{m['peak_mb']:.0f}")
        notes.append(f"matrix: {m['matrix_mb']:.0f} MB, loaded in {m['first_s']:.1f} s on the"
                     f" first search after every write; ids only p50"
                     f" {m['ids_only']['p50_ms']:.1f} ms")
    t, b = r["table"], r["build"]
    table.add_row("piece table, IVF-PQ", f"{b['table_s'] + b['index_s'] + b['keys_s']:.0f}",
                  *_latency(t["vector"]), *_recall(t["vector"]), f"{t['rss_mb']:.0f}",
                  f"{t['peak_mb']:.0f}")
    notes.append(f"piece table: ids only p50 {t['ids_only']['p50_ms']:.1f} ms; build: copy"
                 f" {b['table_s']:.0f} s, index {b['index_s']:.0f} s, keys {b['keys_s']:.0f} s,"
                 f" peak {b['peak_mb']:.0f} MB; a search process holds {t['opened_mb']:.0f} MB"
                 f" with the store open, before searching")
    if "append" in t:
        a = t["append"]
        table.add_row(f"  + {(a.get('unindexed') or 0) // 6:,} chunks unindexed",
                      f"{a['write_s']:.1f}", *_latency(a), *_recall(a), f"{a['rss_mb']:.0f}",
                      f"{a['peak_mb']:.0f}")
        f = a["folded"]
        table.add_row("  then folded in (maintenance)", f"{f['fold_s']:.1f}", *_latency(f),
                      *_recall(f), "", "")
        notes.append("+ chunks unindexed: appended after the index was built (the build column"
                     " is their write), flat-scanned beside it; memory includes the writing;"
                     f" full text with them p50 {a['text']['p50_ms']:.1f} ms. Then folded into"
                     " the index as Store.maintain() does (the build column is that fold)")
    if "hnsw" in r:
        h = r["hnsw"]
        table.add_row("piece table, IVF-HNSW-SQ", f"{h['index_s']:.0f}", *_latency(h["vector"]),
                      *_recall(h["vector"]), f"{h['rss_mb']:.0f}", f"{h['peak_mb']:.0f}")
        notes.append(f"IVF-HNSW-SQ: build is the index alone; peak {h['build_peak_mb']:.0f} MB"
                     " while building")
    if "text" in t:
        table.add_row("full text (FTS index)", f"{r['fts_s']:.0f}", *_latency(t["text"]),
                      "-", "-", "", "")
    c = r.get("chunk_vectors")
    if c:
        notes.append(f"ranking by chunk vectors (the mean of the pieces, what a store past 100k"
                     f" chunks used), even exact: recall@10 {c['recall@10']:.3f}, recall@50"
                     f" {c['recall@50']:.3f} of the best-piece top")
    console.print(table)
    for note in notes + [f"store written in {r['write_s']:.0f} s; disk: chunks table"
                         f" {r['disk_gb']['chunks']:.2f} GB, pieces table"
                         f" {r['disk_gb']['pieces']:.2f} GB"]:
        console.print(f"  {note}")
    sweep = Table(title=f"{n:,} chunks: index settings (chunk ids only)", show_edge=False)
    for column in ("index", "nprobes", "refine", "p50 ms", "p95 ms", "recall@10", "recall@50"):
        sweep.add_column(column, justify="right")
    for s in t["sweep"] + r.get("hnsw", {}).get("sweep", []):
        sweep.add_row(s["index"], str(s["nprobes"]), str(s["refine"]), *_latency(s), *_recall(s))
    console.print(sweep)


def _latency(f: dict) -> tuple[str, str]:
    return f"{f['p50_ms']:.1f}", f"{f['p95_ms']:.1f}"


def _recall(f: dict) -> tuple[str, str]:
    return f"{f['recall@10']:.3f}", f"{f['recall@50']:.3f}"


def projection(results: list[dict], n: int) -> dict:
    """Figures at n chunks from a power law through the two largest measured sizes."""
    a, b = sorted(results, key=lambda r: r["chunks"])[-2:]
    def at(x: float, y: float) -> float:
        if x <= 0 or y <= 0:
            return y
        slope = math.log(y / x) / math.log(b["chunks"] / a["chunks"])
        return y * (n / b["chunks"]) ** slope
    get = {
        "p50_ms": lambda r: r["table"]["vector"]["p50_ms"],
        "rss_mb": lambda r: r["table"]["rss_mb"],
        "build_s": lambda r: sum(r["build"][k] for k in ("table_s", "index_s", "keys_s")),
        "fts_p50_ms": lambda r: r["table"]["text"]["p50_ms"],
        "disk_gb": lambda r: sum(r["disk_gb"].values()),
    }
    out = {key: at(f(a), f(b)) for key, f in get.items()}
    # p95 is noisier than p50: keep the largest size's p95 / p50 ratio.
    out["p95_ms"] = out["p50_ms"] * b["table"]["vector"]["p95_ms"] / b["table"]["vector"]["p50_ms"]
    return out


def print_summary(console, results: list[dict], project: int) -> None:
    table = Table(title="piece table (IVF-PQ) by size; the last row is a projection",
                  show_edge=False)
    for column in ("chunks", "p50 ms", "p95 ms", "recall@10", "RSS MB", "build s",
                   "FTS p50 ms", "disk GB", "matrix p50 ms", "matrix RSS MB"):
        table.add_column(column, justify="right")
    for r in sorted(results, key=lambda r: r["chunks"]):
        t, m = r["table"], r.get("matrix")
        table.add_row(f"{r['chunks']:,}", *_latency(t["vector"]),
                      f"{t['vector']['recall@10']:.3f}", f"{t['rss_mb']:.0f}",
                      f"{sum(r['build'][k] for k in ('table_s', 'index_s', 'keys_s')):.0f}",
                      f"{t['text']['p50_ms']:.1f}", f"{sum(r['disk_gb'].values()):.1f}",
                      f"{m['vector']['p50_ms']:.1f}" if m else "not run",
                      f"{m['rss_mb']:.0f}" if m else "-")
    if project and len(results) >= 2:
        p = projection(results, project)
        table.add_row(f"{project:,} (projection)", f"{p['p50_ms']:.1f}", f"{p['p95_ms']:.1f}",
                      "-", f"{p['rss_mb']:.0f}", f"{p['build_s']:.0f}", f"{p['fts_p50_ms']:.1f}",
                      f"{p['disk_gb']:.1f}", "-", "-")
    console.print(table)
