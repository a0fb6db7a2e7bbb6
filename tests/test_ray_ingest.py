"""`rag ingest --ray` on a local Ray cluster stores what the local path stores, and reports alike.

Each test runs the real command in a subprocess with the offline pack: once on this
process's path and once with `--ray` (a new local cluster on this machine's cores),
each into its own store, and compares the stores and the reports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPORA, ROOT

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install 'rag-local[cluster]')")

DOC_FIELDS = ("id", "path", "title", "mime", "pages", "chunks", "empty_pages")
CHUNK_FIELDS = ("id", "doc_id", "ordinal", "text", "page_start", "page_end", "char_start",
                "char_end", "heading", "piece_spans")


def offline_env(config, **extra: str) -> dict:
    return dict(os.environ, RAG_MODELS="pack", RAG_CACHE_DIR=str(config.cache_dir),
                RAG_EMBEDDER=config.embedder, RAG_GENERATOR=config.generator, **extra)


def rag_ingest(*args: str, env: dict, timeout: float = 900) -> tuple[int, str, dict | None]:
    """Run `rag ingest -q ARGS --report FILE`: exit status, stderr, the report (if written)."""
    report = Path(env["REPORT_DIR"]) / f"report-{len(os.listdir(env['REPORT_DIR']))}.json"
    proc = subprocess.run([sys.executable, "-m", "rag.cli", "ingest", "-q", *args,
                           "--report", str(report)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    rows = json.loads(report.read_text()) if report.exists() else None
    return proc.returncode, proc.stderr, rows


def store_state(db: Path, dim: int) -> tuple[list, list, dict]:
    """Documents and chunk rows (sorted), and each chunk's vectors by chunk id."""
    from rag.store import Store

    store = Store(db, dim)
    docs = sorted(tuple(getattr(r, f) for f in DOC_FIELDS) for r in store.documents.list())
    rows = store.chunks.table.search().select([*CHUNK_FIELDS, "vector", "pieces"]) \
        .limit(None).to_list()
    chunks = sorted(tuple(r[f] for f in CHUNK_FIELDS) for r in rows)
    vectors = {r["id"]: (np.asarray(r["vector"]), np.asarray(r["pieces"])) for r in rows}
    return docs, chunks, vectors


def report_rows(report: dict) -> list[tuple]:
    return sorted((f["path"], f["status"], f["reason"], f["pages"], f["chunks"], f["doc_id"])
                  for f in report["files"])


@pytest.fixture
def env(pack_config, tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    return offline_env(pack_config, REPORT_DIR=str(reports))


@needs_ray
@pytest.mark.slow
def test_ray_path_stores_what_the_local_path_stores_and_is_incremental(env, embedder,
                                                                        tmp_path):
    folder = tmp_path / "corpora"
    shutil.copytree(CORPORA, folder)  # two PDFs, Markdown, HTML, text
    local_db, ray_db = tmp_path / "local", tmp_path / "ray"

    status, err, local = rag_ingest(str(folder), "--db", str(local_db), env=env)
    assert status == 0, err
    status, err, distributed = rag_ingest(str(folder), "--db", str(ray_db), "--ray", env=env)
    assert status == 0, err
    assert report_rows(distributed) == report_rows(local)
    assert distributed["counts"]["ingested"] == len(list(folder.iterdir())) >= 6

    local_docs, local_chunks, local_vectors = store_state(local_db, embedder.dim)
    ray_docs, ray_chunks, ray_vectors = store_state(ray_db, embedder.dim)
    assert ray_docs == local_docs
    assert ray_chunks == local_chunks  # text, pages, char offsets, piece spans
    assert any(len(c[-1]) > 2 for c in ray_chunks)  # some chunks embed several pieces
    for chunk_id, (vector, pieces) in local_vectors.items():
        assert pieces.shape == ray_vectors[chunk_id][1].shape, chunk_id
        assert np.allclose(ray_vectors[chunk_id][0], vector, atol=1e-4), chunk_id
        assert np.allclose(ray_vectors[chunk_id][1], pieces, atol=1e-4), chunk_id

    status, err, again = rag_ingest(str(folder), "--db", str(ray_db), "--ray", env=env)
    assert status == 0, err
    assert again["counts"]["unchanged"] == len(ray_docs) and again["counts"]["ingested"] == 0
    assert store_state(ray_db, embedder.dim)[:2] == (ray_docs, ray_chunks)

    changed = folder / "sourdough-log.txt"
    changed.write_text("Sourdough log, revised\n\nThe starter doubled in six hours at 24 C.")
    status, err, third = rag_ingest(str(folder), "--db", str(ray_db), "--ray", env=env)
    assert status == 0, err
    assert third["counts"]["replaced"] == 1 and third["counts"]["unchanged"] == len(ray_docs) - 1
    before = {Path(d[1]).name: d[0] for d in ray_docs}
    after = {Path(d[1]).name: d[0] for d in store_state(ray_db, embedder.dim)[0]}
    assert after.keys() == before.keys()  # the old version is gone
    assert after["sourdough-log.txt"] != before["sourdough-log.txt"]


@needs_ray
@pytest.mark.slow
def test_a_bad_file_fails_alone_with_the_local_paths_reason_and_exit_status(env, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(2):
        (folder / f"note{i}.txt").write_text(
            "\n\n".join(f"Note {i}, paragraph {p}: the harbour lantern burned {p} hours."
                        for p in range(5)), encoding="utf-8")
    (folder / "bad.pdf").write_bytes(b"not a pdf at all")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))

    runs = [rag_ingest(str(folder), "--db", str(tmp_path / db), *flags, env=env)
            for db, flags in (("local", ()), ("ray", ("--ray",)))]
    (local_status, local_err, local), (ray_status, ray_err, distributed) = runs
    assert local_status == 1, local_err
    assert ray_status == 1, ray_err
    assert report_rows(distributed) == report_rows(local)
    by_name = {Path(f["path"]).name: f for f in distributed["files"]}
    assert {n for n, f in by_name.items() if f["status"] == "ingested"} == {"note0.txt",
                                                                            "note1.txt"}
    assert by_name["picture.png"]["status"] == "skipped"
    for name in ("bad.pdf", "broken.pdf", "empty.txt"):
        assert by_name[name]["status"] == "failed", name
        assert by_name[name]["reason"] and "\n" not in by_name[name]["reason"], name


@pytest.mark.slow
def test_without_ray_the_option_fails_in_one_line_and_nothing_else_needs_it(env, tmp_path):
    # A `ray` that cannot be imported, as in an install without the cluster extra.
    stand_in = tmp_path / "no-ray" / "ray"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = dict(env, PYTHONPATH=str(stand_in.parent))
    note = tmp_path / "note.txt"
    note.write_text("The lantern at Orlow harbour burned for nine hours.")

    status, err, report = rag_ingest(str(note), "--db", str(tmp_path / "db"), "--ray", env=env)
    assert status == 2 and report is None
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["Error: --ray needs Ray, an optional extra:"
                     " pip install 'rag-local[cluster]'"]
    assert not (tmp_path / "db").exists()  # it failed before opening anything

    status, err, report = rag_ingest(str(note), "--db", str(tmp_path / "db"), env=env)
    assert status == 0, err
    assert report["counts"]["ingested"] == 1
    loaded = subprocess.run([sys.executable, "-c", "import sys, rag.cli.ingest, ingest.pipeline,"
                             " ingest.distributed; print('ray' in sys.modules)"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert loaded.stdout.strip() == "False", loaded.stderr


def test_batch_copies_of_a_killed_worker_are_swept_and_a_live_ones_kept(tmp_path, monkeypatch):
    from ingest.ray_worker import COPIES, sweep_copies

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = tmp_path / f"{COPIES}{ended.stdout.strip()}-abc"
    live = tmp_path / f"{COPIES}{os.getpid()}-def"
    for folder in (dead, live):
        (folder / "0").mkdir(parents=True)
        (folder / "0" / "paper.pdf").write_bytes(b"%PDF-1.7")
    sweep_copies()
    assert not dead.exists() and (live / "0" / "paper.pdf").exists()
