"""Ingestion into a real LanceDB with the real MiniLM: incremental, replace, prune, crash-safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CORPORA, ROOT

pytestmark = pytest.mark.slow

WORDS = ["harbour", "lantern", "granite", "meadow", "orchard", "falcon", "copper", "willow",
         "thunder", "glacier", "saffron", "compass", "velvet", "anchor", "ember", "quarry"]


def write_notes(folder: Path, n: int, paragraphs: int = 6) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = "\n\n".join(
            " ".join(f"Note {i} paragraph {p}: the {WORDS[(i + p + j) % len(WORDS)]} "
                     f"measured {i * 100 + p * 10 + j} units." for j in range(8))
            for p in range(paragraphs))
        (folder / f"note{i:03d}.txt").write_text(body, encoding="utf-8")


def table_state(store) -> tuple:
    docs = sorted((r.id, r.path, r.pages, r.chunks) for r in store.documents.list())
    rows = store.chunks.table.search().select(["id", "doc_id", "text", "page_start", "char_start",
                                         "char_end"]).limit(None).to_list()
    chunks = sorted((r["id"], r["doc_id"], r["text"], r["page_start"], r["char_start"],
                     r["char_end"]) for r in rows)
    return docs, chunks


def test_rerun_ingests_nothing_and_changed_file_replaces(runtime, tmp_path):
    from ingest.pipeline import ingest_paths

    folder = tmp_path / "docs"
    write_notes(folder, 3)
    first = ingest_paths([folder], runtime)
    assert first.counts()["ingested"] == 3 and first.ok
    before = table_state(runtime.store)

    again = ingest_paths([folder], runtime)
    assert again.counts()["unchanged"] == 3 and again.counts()["ingested"] == 0
    assert table_state(runtime.store) == before

    changed = folder / "note001.txt"
    changed.write_text("A completely new text about the lighthouse keeper of Brannock.")
    third = ingest_paths([folder], runtime)
    assert third.counts() == {"ingested": 0, "unchanged": 2, "replaced": 1, "skipped": 0,
                              "failed": 0}
    versions = runtime.store.documents.at_path(str(changed.resolve()))
    assert len(versions) == 1
    texts = [r["text"] for r in runtime.store.chunks.of_document(versions[0].id)]
    assert texts == ["A completely new text about the lighthouse keeper of Brannock."]
    assert len(runtime.store.documents.list()) == 3
    assert runtime.store.chunks.count() == sum(r.chunks for r in runtime.store.documents.list())


def test_prune_removes_documents_whose_files_are_gone(runtime, tmp_path):
    from ingest.pipeline import ingest_paths

    folder = tmp_path / "docs"
    write_notes(folder, 3)
    ingest_paths([folder], runtime)
    (folder / "note002.txt").unlink()
    kept = ingest_paths([folder], runtime)
    assert len(runtime.store.documents.list()) == 3 and not kept.pruned
    pruned = ingest_paths([folder], runtime, prune=True)
    assert [Path(p).name for p in pruned.pruned] == ["note002.txt"]
    assert sorted(Path(r.path).name for r in runtime.store.documents.list()) == \
        ["note000.txt", "note001.txt"]


def test_good_and_bad_files_in_one_folder(runtime, tmp_path):
    from ingest.pipeline import ingest_paths

    folder = tmp_path / "mixed"
    write_notes(folder, 2)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage")
    (folder / "random.pdf").write_bytes(os.urandom(2048))
    (folder / "empty.txt").write_bytes(b"")
    (folder / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    (folder / "page.html").write_text("<html><head><title>Tides</title><script>var x=1;"
                                      "</script></head><body><p>The spring tide at Orlow "
                                      "reaches four metres.</p></body></html>")
    report = ingest_paths([folder], runtime)
    by_name = {Path(f.path).name: f for f in report.files}
    assert {n for n, f in by_name.items() if f.status == "ingested"} == \
        {"note000.txt", "note001.txt", "page.html"}
    for name in ("broken.pdf", "random.pdf", "empty.txt", "picture.png"):
        result = by_name[name]
        assert result.status in ("failed", "skipped"), name
        assert result.reason and "\n" not in result.reason, name
    assert by_name["picture.png"].status == "skipped"
    assert not report.ok


def run_cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rag.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stored_documents(lance_dir) -> int:
    """Documents committed so far, read without opening a Store (which may write): a data
    file alone is not a commit, its version manifest comes after it."""
    import lancedb

    try:
        return lancedb.connect(str(lance_dir)).open_table("documents").count_rows()
    except Exception:  # noqa: BLE001 - not created yet, or mid-commit
        return 0


def offline_env(config) -> dict:
    return dict(os.environ, RAG_MODELS="pack", RAG_CACHE_DIR=str(config.cache_dir),
                RAG_EMBEDDER=config.embedder, RAG_GENERATOR=config.generator)


def test_kill_9_mid_ingest_then_rerun_matches_a_clean_run(pack_config, embedder, tmp_path):
    from rag.store import Store

    folder = tmp_path / "many"
    write_notes(folder, 120, paragraphs=10)  # ~1,000 chunks: several grouped writes
    env = offline_env(pack_config)
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"

    proc = run_cli("ingest", "-q", str(folder), "--db", str(crashed), env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if stored_documents(crashed / "lance"):
            break  # the first documents are committed; later ones are in flight
        time.sleep(0.05)
    assert proc.poll() is None, "ingestion finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    partial = Store(crashed, embedder.dim)
    assert 0 < len(partial.documents.list()) < 120

    for db in (crashed, clean):
        done = run_cli("ingest", "-q", str(folder), "--db", str(db), env=env)
        _out, err = done.communicate(timeout=600)
        assert done.returncode == 0, err
    assert table_state(Store(crashed, embedder.dim)) == table_state(Store(clean, embedder.dim))


def test_ingest_cli_report_and_exit_codes(pack_config, tmp_path):
    env = offline_env(pack_config)
    folder = tmp_path / "in"
    write_notes(folder, 1)
    (folder / "bad.pdf").write_bytes(b"not a pdf at all")
    report = tmp_path / "report.json"
    proc = run_cli("ingest", "-q", str(folder), "--db", str(tmp_path / "db"), "--report",
                   str(report), env=env)
    _out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    rows = {Path(r["path"]).name: r for r in json.loads(report.read_text())["files"]}
    assert rows["note000.txt"]["status"] == "ingested" and rows["note000.txt"]["chunks"] > 0
    assert rows["bad.pdf"]["status"] == "failed" and rows["bad.pdf"]["reason"]
    assert {"path", "status", "reason", "pages", "chunks"} <= set(rows["bad.pdf"])
    usage = run_cli("ingest", str(tmp_path / "missing"), env=env)
    usage.communicate(timeout=120)
    assert usage.returncode == 2


def test_demo_corpus_ingests_completely(runtime):
    from ingest.pipeline import ingest_paths

    report = ingest_paths([CORPORA], runtime)
    assert report.ok
    assert report.counts()["ingested"] >= 6


def test_every_chunk_stores_its_sentence_vectors_spans_and_their_mean(runtime):
    import numpy as np

    from ingest.pipeline import ingest_paths
    from rag.retrieve import stored_pieces
    from rag.text import sentence_pieces, with_heading

    assert ingest_paths([CORPORA], runtime).ok
    rows = runtime.store.chunks.table.search() \
        .select(["text", "heading", "vector", "pieces", "piece_spans"]).limit(None).to_list()
    assert rows and any(len(r["pieces"]) > 1 for r in rows)
    embedder = runtime.embedder
    for row in rows[:40]:
        pieces = np.asarray(row["pieces"], dtype=np.float32)
        # The stored spans give back exactly the texts that were embedded (each piece
        # after its chunk's heading).
        assert stored_pieces(row) == [with_heading(row["heading"], p)
                                      for p in sentence_pieces(row["text"])]
        assert len(pieces) == len(row["piece_spans"])
        mean = pieces.mean(axis=0)
        assert np.allclose(row["vector"], mean / np.linalg.norm(mean), atol=1e-5)
    for row in (next(r for r in rows if len(r["pieces"]) > 1 and not r["heading"]),
                next(r for r in rows if len(r["pieces"]) > 1 and r["heading"])):
        expected = embedder.embed_batch(stored_pieces(row))
        assert np.allclose(np.asarray(row["pieces"]), expected, atol=1e-4)
