"""The child processes of `rag bench scale`: build a store's indexes, or search it.

`python -m rag.cli.bench.scale_search SPEC.json` runs one step and prints one
JSON line. No model is loaded (question vectors come from the bank's cache),
so a search process's resident memory is the store's and the search's alone:
what a serving process adds to its model weights.

Steps (SPEC["step"]):
  build   open the store past its threshold and build what search needs there,
          timing each part: B-tree keys, the piece table, its vector index
  index   replace the piece table's vector index by another kind (the comparison)
  search  search every question (vector side by best piece, and the full-text
          side), after a warm-up pass; report latencies, the ids found for recall,
          resident memory; `sweep` repeats the vector side under other settings;
          `append` then adds chunks (not indexed yet) and searches again, then folds
          them into the index as Store.maintain() does and searches once more
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import rag  # noqa: F401 - the BLAS, as every process of the project loads it

WARMUP = 20  # questions searched before timing: a serving process is warm


def memory() -> dict:
    """Resident and peak resident memory of this process, MB (/proc/self/status)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return {"rss_mb": fields.get("VmRSS", 0.0), "peak_mb": fields.get("VmHWM", 0.0)}


def open_store(spec: dict):
    from rag.store import PieceSearch, Store

    settings = PieceSearch(table_chunks=spec["threshold"], nprobes=spec["nprobes"],
                           refine=spec["refine"])
    return Store(spec["db"], spec["dim"], "bench", pieces=settings)


def build(spec: dict) -> dict:
    from lancedb.index import BTree

    store = open_store(spec)
    chunks, out = store.chunks, {}
    start = time.perf_counter()
    for column in ("id", "doc_id"):
        chunks.table.create_index(column, config=BTree(), replace=True)
    out["keys_s"] = time.perf_counter() - start
    start = time.perf_counter()
    chunks.piece_table.build(chunks.table)
    out["table_s"] = time.perf_counter() - start
    start = time.perf_counter()
    chunks.piece_table.refresh()
    out["index_s"] = time.perf_counter() - start
    out["piece_rows"] = chunks.piece_table.handle().count_rows()
    return {**out, **memory()}


def index(spec: dict) -> dict:
    """Replace the vector index by spec["kind"] (named as the store's own, so search uses it)."""
    from lancedb.index import HnswSq

    from rag.store.pieces import INDEX, index_config

    store = open_store(spec)
    table = store.chunks.piece_table.handle()
    old = [i.name for i in table.list_indices() if i.name.startswith(INDEX)]
    config = {"ivf_pq": index_config(spec["dim"]),
              "ivf_hnsw_sq": HnswSq(distance_type="l2")}[spec["kind"]]
    for name in old:
        table.drop_index(name)
    start = time.perf_counter()
    table.create_index("vector", config=config, name=f"{INDEX}{table.count_rows()}")
    return {"index_s": time.perf_counter() - start, **memory()}


def timed(call, items) -> tuple[list, list[float]]:
    results, times = [], []
    for item in items:
        start = time.perf_counter()
        results.append(call(item))
        times.append(time.perf_counter() - start)
    return results, times


def figures(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"p50_ms": 1000 * statistics.median(ordered),
            "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]}


def search(spec: dict) -> dict:
    import numpy as np

    from rag.store.pieces import PieceSearch

    start_memory = memory()
    questions = np.load(spec["questions"])
    texts = json.loads(Path(spec["texts"]).read_text())
    k = spec["k"]
    store = open_store(spec)
    chunks = store.chunks
    opened = memory()
    out: dict = {"opened_mb": opened["rss_mb"], "imports_mb": start_memory["rss_mb"]}
    start = time.perf_counter()
    chunks.vector_search(questions[0], k)  # the matrix loads here (per table version)
    out["first_s"] = time.perf_counter() - start
    for q in questions[:WARMUP]:
        chunks.vector_search(q, k)
    found, times = timed(lambda q: [r["id"] for r in chunks.vector_search(q, k)], questions)
    out["vector"] = {**figures(times), "ids": found}
    out["mode"] = "table" if chunks.piece_table.ready() else "matrix"
    out["matrix_mb"] = chunks.pieces.loaded_bytes / 2**20
    if out["mode"] == "table":
        ids, times = timed(lambda q: chunks.piece_table.search(q, k), questions)
        out["ids_only"] = {**figures(times), "ids": ids}
    else:
        ids, times = timed(lambda q: chunks.pieces.search(q, k), questions)
        out["ids_only"] = {**figures(times), "ids": ids}
    if spec.get("text"):
        for t in texts[:WARMUP]:
            chunks.text_search(t, k)
        _, times = timed(lambda t: chunks.text_search(t, k), texts)
        out["text"] = figures(times)
    out.update(memory())
    sweep = []
    for nprobes, refine in spec.get("sweep", []):
        chunks.piece_table.settings = PieceSearch(spec["threshold"], nprobes, refine)
        ids, times = timed(lambda q: chunks.piece_table.search(q, k), questions)
        sweep.append({"nprobes": nprobes, "refine": refine, **figures(times), "ids": ids})
    out["sweep"] = sweep
    out["sweep_memory"] = memory()
    if spec.get("append"):
        out["append"] = append(spec, store, questions, k)
    return out


def append(spec: dict, store, questions, k: int) -> dict:
    """Add spec["append"] chunks after the indexed ones; search again (flat scan of them)."""
    from rag.cli.bench.scale_data import load_bank, write_store
    from rag.store.pieces import TABLE, PieceSearch

    store.chunks.piece_table.settings = PieceSearch(spec["threshold"], spec["nprobes"],
                                                     spec["refine"])
    bank = load_bank(Path(spec["docs"]), Path(spec["questions_file"]), Path(spec["cache"]),
                     None, dim=spec["dim"])
    start = time.perf_counter()
    write_store(store, bank, spec["append"], first=spec["chunks"])
    written = time.perf_counter() - start
    table = store.chunks.piece_table.handle()
    stats = [table.index_stats(i.name) for i in table.list_indices()
             if i.index_type.startswith("Ivf")]
    found, times = timed(lambda q: [r["id"] for r in store.chunks.vector_search(q, k)],
                         questions)
    texts = json.loads(Path(spec["texts"]).read_text())
    _, text_times = timed(lambda t: store.chunks.text_search(t, k), texts)
    out = {"write_s": written, "unindexed": stats[0].num_unindexed_rows if stats else None,
           **figures(times), "ids": found, "text": figures(text_times), **memory()}
    # What Store.maintain() does to this table (rag/store/maintenance.py): fold new rows in.
    from rag.store import maintenance

    done = maintenance.optimize(table, TABLE, None, "bench")
    folded, times = timed(lambda q: [r["id"] for r in store.chunks.vector_search(q, k)],
                          questions)
    out["folded"] = {"fold_s": done.seconds, "error": done.error, **figures(times),
                     "ids": folded}
    return out


def main(argv: list[str] | None = None) -> None:
    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    os.environ.setdefault("RUST_LOG", "error")
    step = {"build": build, "index": index, "search": search}[spec["step"]]
    print(json.dumps(step(spec)))


if __name__ == "__main__":
    main()
