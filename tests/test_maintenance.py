"""Storage on a real LanceDB: appends rewrite nothing, search sees new rows at once, and
maintenance (rag/store/maintenance.py) keeps the folder within a bound of the live data
without removing a version a reader still uses."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import lancedb
import numpy as np
import pytest

from rag.store import Store
from rag.store.maintenance import GROWTH, KEEP_S, cleanup_age, due
from rag.types import Chunk, Document

DIM = 64  # the pieces' share of a row as with a real embedder (384 floats, 6 pieces)
RNG = np.random.default_rng(0)


def add(store: Store, i: int) -> str:
    """Store one small document the way an upload does (chunks, row, index refresh)."""
    text = f"Record {i} mentions the keyword marker{i} and nothing else of note."
    doc = Document(path=f"upload/{i}.txt", title=f"Doc {i}", mime="text/plain",
                   sha256=hashlib.sha256(text.encode()).hexdigest(), pages=[])
    chunk = Chunk(doc.id, 0, text, 1, 1, 0, len(text))
    store.add_documents([(doc, [chunk], [RNG.standard_normal((1, DIM))], text.encode())])
    store.chunks.refresh_indexes()
    return doc.id


def data_files(root: Path) -> dict[str, int]:
    folder = root / "lance" / "chunks.lance" / "data"
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def stats(fragments: int, rows: int, largest: int, mean: int | None = None,
          total_bytes: int = 10_000_000) -> dict:
    mean = rows // fragments if mean is None else mean
    return {"num_rows": rows, "total_bytes": total_bytes,
            "fragment_stats": {"num_fragments": fragments,
                               "lengths": {"max": largest, "mean": mean}}}


def test_appends_do_not_rewrite_existing_data_files(tmp_path):
    store = Store(tmp_path, DIM, "test")
    add(store, 0)
    first = data_files(tmp_path)
    for i in range(1, 30):
        add(store, i)
        now = data_files(tmp_path)
        assert {k: now[k] for k in first} == first  # every earlier file, unchanged
        first = now
    assert len(first) == 30  # one small file per upload, none rewritten


@pytest.mark.slow
def test_a_search_right_after_an_ingestion_finds_the_new_text(runtime, tmp_path):
    from ingest import ingest_file

    texts = {"first.txt": "The lighthouse keeper logged every passing ship in a green ledger.",
             "second.txt": "Saffron is harvested by hand from crocus flowers in autumn."}
    for name, text in texts.items():
        path = tmp_path / name
        path.write_text(text)
        assert ingest_file(path, runtime, display_path=f"upload/{name}").status == "ingested"
    chunks = runtime.store.chunks
    # The second document's rows are not in the full-text index yet (nothing was
    # rewritten or re-indexed after the first upload): flat search covers them.
    assert chunks.table.index_stats("fts_idx").num_unindexed_rows >= 1
    second = runtime.store.documents.at_path("upload/second.txt")[0].id
    assert chunks.text_search("saffron crocus", 3)[0]["doc_id"] == second
    question = runtime.embedder.embed_batch(["Who harvests saffron?"], query=True)[0]
    assert chunks.vector_search(question, 1)[0]["doc_id"] == second
    runtime.store.maintain(force=True)  # folding the rows in changes no answer
    assert chunks.table.index_stats("fts_idx").num_unindexed_rows == 0
    assert chunks.text_search("saffron crocus", 3)[0]["doc_id"] == second


def test_maintenance_keeps_disk_within_a_bound_of_live_data(tmp_path):
    store = Store(tmp_path, DIM, "test")
    keep_s, fragments, runs, ratios = 0.3, [], 0, []
    for i in range(150):
        last = add(store, i)
        runs += len(store.maintain(keep_s=keep_s).tables)
        fragments.append(store.chunks.table.stats()["fragment_stats"]["num_fragments"])
        if i % 25 == 24:
            ratios.append(store.disk_bytes() / store.live_bytes())
    print("disk/live every 25 uploads:", [f"{r:.2f}" for r in ratios])
    # Geometric: each optimization comes once the table grew by half, so few of them.
    assert runs <= 2 * 16, runs
    assert max(fragments) <= 150 * GROWTH / (1 + GROWTH) + 2
    for _ in range(2):  # the second pass removes the first one's pre-image
        time.sleep(keep_s + 0.5)  # every version but the latest is now past the keep time
        store.maintain(keep_s=keep_s, force=True)
    live, disk = store.live_bytes(), store.disk_bytes()
    assert disk <= 2.5 * live, (disk, live)  # the latest, and what its last pass left
    assert store.chunks.count() == 150 and len(store.documents.ids()) == 150
    assert store.chunks.text_search("marker149", 1)[0]["doc_id"] == last


def test_a_reader_of_an_older_version_still_reads_after_maintenance(tmp_path):
    store = Store(tmp_path, DIM, "test")
    for i in range(5):
        add(store, i)
    reader = lancedb.connect(str(tmp_path / "lance")).open_table("chunks")
    reader.checkout(reader.version)  # a query in flight on this version
    for i in range(5, 20):
        add(store, i)
    done = store.maintain(force=True)  # compacts: the reader's files are no longer current
    assert done.tables and store.chunks.table.stats()["fragment_stats"]["num_fragments"] == 1
    assert reader.count_rows() == 5
    assert len(reader.to_arrow()) == 5  # its data files are still there (KEEP_S)


def test_nothing_is_done_when_nothing_is_due(tmp_path):
    store = Store(tmp_path, DIM, "test")
    add(store, 0)
    before = store.chunks.table.version
    assert not store.maintain().tables
    assert store.chunks.table.version == before


def test_the_schedule():
    assert due(stats(1, 1000, 1000)) is None
    assert due(stats(11, 1010, 1000)) is None  # ten small uploads onto a large table
    assert "grew" in due(stats(2, 1500, 1000))  # half again as many rows
    assert "deleted" in due(stats(1, 600, 1000, mean=1000))
    # Many small uploads: the manifests they wrote pass half the table's bytes.
    assert due(stats(400, 400 + 20_000, 20_000, total_bytes=16_000_000)) is None
    assert "manifests" in due(stats(600, 600 + 50_000, 50_000, total_bytes=16_000_000))


def test_cleanup_spares_versions_superseded_recently():
    now = 10_000.0
    # Written long ago, then replaced: 0 at 100, 1 at 9000, 2 at 9990 (10 s ago).
    age = cleanup_age([100.0, 9000.0, 9990.0], now, keep_s=60).total_seconds()
    # Version 0 was superseded 1000 s ago: it goes. Version 1 was superseded 10 s ago,
    # though written 1000 s ago (LanceDB's own cutoff would remove it): it stays.
    assert 100.0 < now - age < 9000.0
    # Everything young: nothing goes.
    assert now - cleanup_age([9950.0, 9990.0], now, keep_s=60).total_seconds() < 9950.0
    assert cleanup_age([9990.0], now).total_seconds() >= KEEP_S
