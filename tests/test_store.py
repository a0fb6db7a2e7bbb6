"""The store on a real LanceDB: stores of every earlier schema version open and work, and the
orphan sweep removes only what no live writer may still be writing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from rag.retrieve import stored_pieces
from rag.store import GRACE_S, Store, StoreError
from rag.store.chunks import create_fts_index
from rag.store.migrations import VERSION, record_version, stored_version
from rag.store.writers import identity, machine
from rag.text import chunk_piece_spans, flatten, sentence_pieces
from rag.types import Chunk, Document

pytestmark = pytest.mark.slow

TEXTS = [
    "The XK-4471 relief valve is serviced every nine hundred operating hours. It was "
    "installed in 1987 by the harbour authority.",
    "Glaciers carve U-shaped valleys as they slowly move downhill. Their weight grinds the "
    "bedrock into fine flour.",
    "Photosynthesis converts light energy into chemical energy. Plants store it in sugars.",
]


def _v1_chunks(dim: int) -> pa.Schema:
    """The chunks table as version 1 wrote it: one vector per chunk."""
    return pa.schema([
        pa.field("id", pa.string()), pa.field("doc_id", pa.string()),
        pa.field("ordinal", pa.int32()), pa.field("text", pa.string()),
        pa.field("page_start", pa.int32()), pa.field("page_end", pa.int32()),
        pa.field("char_start", pa.int32()), pa.field("char_end", pa.int32()),
        pa.field("heading", pa.string()), pa.field("fts", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ], metadata={"embedder": "old", "schema_version": "1"})


def _v2_chunks(dim: int) -> pa.Schema:
    """Version 2 added the vectors of each chunk's sentence pieces."""
    schema = _v1_chunks(dim).append(pa.field("pieces", pa.list_(pa.list_(pa.float32(), dim))))
    return schema.with_metadata({"embedder": "old", "schema_version": "2"})


def _v3_chunks(dim: int) -> pa.Schema:
    """Version 3 added where each piece lies in the chunk's text."""
    schema = _v2_chunks(dim).append(pa.field("piece_spans", pa.list_(pa.list_(pa.int32()))))
    return schema.with_metadata({"embedder": "old"})


# The documents table of versions 1-4.
DOCUMENTS = pa.schema([
    pa.field("id", pa.string()), pa.field("path", pa.string()),
    pa.field("title", pa.string()), pa.field("mime", pa.string()),
    pa.field("pages", pa.int32()), pa.field("chunks", pa.int32()),
    pa.field("empty_pages", pa.int32()), pa.field("size", pa.int64()),
    pa.field("added_at", pa.float64()), pa.field("file", pa.string()),
])


def write_old_store(root, version: int, embedder) -> list[str]:
    """A store as version 1, 2 or 3 of the program left it; the document ids."""
    from rag.lexical import fts_text

    db = lancedb.connect(str(root / "lance"))
    dim = embedder.dim
    rows, docs = [], []
    for i, text in enumerate(TEXTS):
        doc_id = hashlib.sha256(text.encode()).hexdigest()
        pieces = embedder.embed_batch(sentence_pieces(text))
        mean = pieces.mean(axis=0)
        row = {"id": f"{doc_id}:0", "doc_id": doc_id, "ordinal": 0, "text": text,
               "page_start": 1, "page_end": 1, "char_start": 0, "char_end": len(text),
               "heading": "", "fts": fts_text(text),
               "vector": (mean / np.linalg.norm(mean)).tolist()}
        if version >= 2:
            row["pieces"] = pieces.tolist()
        if version >= 3:
            row["piece_spans"] = flatten(chunk_piece_spans(text))
        rows.append(row)
        docs.append({"id": doc_id, "path": f"/old/{i}.txt", "title": f"Old {i}",
                     "mime": "text/plain", "pages": 1, "chunks": 1, "empty_pages": 0,
                     "size": len(text), "added_at": float(i), "file": ""})
    schema = {1: _v1_chunks, 2: _v2_chunks, 3: _v3_chunks}[version](dim)
    table = db.create_table("chunks", pa.Table.from_pylist(rows, schema=schema))
    create_fts_index(table)
    db.create_table("documents", pa.Table.from_pylist(docs, schema=DOCUMENTS))
    if version == 3:  # version 3 recorded its version in a meta table
        record_version(db, 3)
    return [d["id"] for d in docs]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_store_of_every_earlier_version_opens_migrates_and_searches(version, embedder,
                                                                      tmp_path):
    from rag.config import load_config
    from rag.retrieve import search
    from rag.runtime import Runtime

    ids = write_old_store(tmp_path, version, embedder)
    assert stored_version(lancedb.connect(str(tmp_path / "lance"))) == version
    store = Store(tmp_path, embedder.dim, embedder.name)
    assert stored_version(store.db) == VERSION
    assert store.documents.ids() == set(ids) and store.chunks.count() == len(TEXTS)

    question = embedder.embed_batch(["When is the relief valve serviced?"], query=True)[0]
    top = store.chunks.vector_search(question, 3)
    assert top[0]["doc_id"] == ids[0]
    assert store.chunks.text_search("glaciers bedrock", 3)[0]["doc_id"] == ids[1]
    for row in top:
        # Version 1 had one vector per chunk: it becomes the only piece, spanning the text.
        # Version 2's pieces came from the splitter, whose spans the migration recovers.
        expected = [row["text"]] if version == 1 else sentence_pieces(row["text"])
        assert stored_pieces(row) == expected
        assert len(row["pieces"]) == len(expected)

    stamps = store.chunks.table.search().select(["writer", "written_at"]).to_list()
    assert {(r["writer"], r["written_at"]) for r in stamps} == {("", 0.0)}  # long ago
    # Version 5: profiles from the stored first pages; no page came from OCR.
    old = {d.id: d for d in store.documents.list()}
    assert old[ids[0]].profile == f"Old 0\n0\n{TEXTS[0]}"
    assert all(d.ocr_pages == () for d in old.values())

    runtime = Runtime(config=load_config({"db": str(tmp_path)}, env={}), embedder=embedder,
                      store=store)
    passages = search("How often is the XK-4471 valve serviced?", runtime, k=2)
    assert passages[0].doc_id == ids[0] and passages[0].title == "Old 0"

    # New documents go in with the current schema beside the migrated ones.
    text = "The lighthouse keeper logged every passing ship in a green ledger."
    doc = Document(path="/new.txt", title="New", mime="text/plain",
                   sha256=hashlib.sha256(text.encode()).hexdigest(), pages=[])
    chunk = Chunk(doc.id, 0, text, 1, 1, 0, len(text))
    store.add_documents([(doc, [chunk], [embedder.embed_batch([text])], text.encode())])
    store.chunks.refresh_indexes()
    assert Store(tmp_path, embedder.dim, embedder.name).chunks.count() == len(TEXTS) + 1


def test_the_current_version_opens_without_migrating(embedder, tmp_path):
    Store(tmp_path, embedder.dim, embedder.name)
    db = lancedb.connect(str(tmp_path / "lance"))
    assert stored_version(db) == VERSION
    before = db.open_table("chunks").version
    Store(tmp_path, embedder.dim, embedder.name)
    assert db.open_table("chunks").version == before


def test_a_store_from_a_newer_program_is_refused_whole(embedder, tmp_path):
    Store(tmp_path, embedder.dim, embedder.name)
    record_version(lancedb.connect(str(tmp_path / "lance")), VERSION + 1)
    with pytest.raises(StoreError, match="newer than this program"):
        Store(tmp_path, embedder.dim, embedder.name)


def test_another_embedder_dimension_is_refused(embedder, tmp_path):
    Store(tmp_path, embedder.dim, embedder.name)
    with pytest.raises(StoreError, match=f"{embedder.dim}-dimension"):
        Store(tmp_path, embedder.dim + 1, "other")


def test_version_4_adds_the_writer_columns_without_rewriting_the_table(embedder, tmp_path):
    write_old_store(tmp_path, 3, embedder)
    data = tmp_path / "lance" / "chunks.lance" / "data"
    before = {p.name: p.stat().st_size for p in data.iterdir()}
    store = Store(tmp_path, embedder.dim, embedder.name)
    assert stored_version(store.db) == VERSION
    after = {p.name: p.stat().st_size for p in data.iterdir()}
    assert {k: after[k] for k in before} == before  # the old data files stay as they were
    assert len(after) == len(before) + 1  # one file with the two new columns beside them
    rows = store.chunks.table.search().select(["writer", "written_at"]).to_list()
    assert {(r["writer"], r["written_at"]) for r in rows} == {("", 0.0)}


# -- the orphan sweep -----------------------------------------------------------------

DIM = 8


def _document(store: Store, text: str, *, writer: str | None = None,
              written_at: float | None = None, complete: bool = False) -> str:
    """Chunks of one document as `writer` left them at `written_at` (now, by this
    process, unless given); with `complete`, its document row too."""
    doc = Document(path=f"/{text}.txt", title=text, mime="text/plain",
                   sha256=hashlib.sha256(text.encode()).hexdigest(), pages=[])
    chunk = Chunk(doc.id, 0, text, 1, 1, 0, len(text))
    if complete:
        store.add_documents([(doc, [chunk], [np.ones((1, DIM))], text.encode())])
    rows = store.chunks.rows(doc, [chunk], [np.ones((1, DIM))])
    if writer is not None:
        rows = rows.set_column(rows.schema.get_field_index("writer"), "writer",
                               pa.array([writer]))
    if written_at is not None:
        rows = rows.set_column(rows.schema.get_field_index("written_at"), "written_at",
                               pa.array([written_at]))
    if not complete:
        store.originals.keep(doc.id, doc.path, text.encode())
        store.chunks.add([rows])
    elif writer is not None or written_at is not None:  # re-stamp its stored rows
        store.chunks.delete_docs([doc.id])
        store.chunks.add([rows])
    return doc.id


def _dead_writer() -> str:
    child = subprocess.Popen(["sleep", "0"])
    writer = identity(child.pid)
    child.wait()
    return writer


@pytest.fixture
def sleeper():
    """A live process on this machine: a writer that may still be writing."""
    child = subprocess.Popen(["sleep", "60"])
    yield identity(child.pid)
    child.kill()
    child.wait()


def test_orphans_of_a_dead_writer_are_swept(tmp_path):
    store = Store(tmp_path, DIM, "test")
    orphan = _document(store, "crashed", writer=_dead_writer())
    assert store.sweep_orphans() == 1
    assert orphan not in store.chunks.doc_ids()


def test_orphans_of_a_live_writer_within_the_grace_are_kept(tmp_path, sleeper):
    store = Store(tmp_path, DIM, "test")
    own = _document(store, "mine")  # this process: it is alive
    other = _document(store, "in-flight", writer=sleeper)
    remote = _document(store, "remote", writer="elsewhere:42:1.00")  # never provably dead
    assert store.sweep_orphans() == 0
    assert {own, other, remote} <= store.chunks.doc_ids()
    assert len(list(store.originals.folder.iterdir())) == 3  # young: theirs, maybe in flight


def test_old_orphans_are_swept_whoever_wrote_them(tmp_path, sleeper):
    store = Store(tmp_path, DIM, "test")
    long_ago = time.time() - GRACE_S - 60
    ids = {_document(store, "stale", writer=sleeper, written_at=long_ago),
           _document(store, "remote", writer="elsewhere:42:1.00", written_at=long_ago),
           _document(store, "pre-v4", writer="", written_at=0.0)}
    young = _document(store, "young", writer=sleeper)
    for path in store.originals.folder.iterdir():  # their originals are as old
        if path.stem in ids:
            os.utime(path, (long_ago, long_ago))
    (store.originals.folder / "x.txt.123.part").write_bytes(b"half")
    os.utime(store.originals.folder / "x.txt.123.part", (long_ago, long_ago))
    assert store.sweep_orphans() == 3
    assert store.chunks.doc_ids() == {young}
    assert {p.stem for p in store.originals.folder.iterdir()} == {young}


def test_a_document_with_its_row_is_never_touched(tmp_path):
    store = Store(tmp_path, DIM, "test")
    long_ago = time.time() - GRACE_S - 60
    kept = _document(store, "complete", writer=_dead_writer(), written_at=long_ago,
                     complete=True)
    record = store.documents.get(kept)
    os.utime(store.file_path(record), (long_ago, long_ago))
    assert store.sweep_orphans() == 0
    assert store.chunks.doc_ids() == {kept} and store.file_path(record).exists()


def test_the_writer_identity_names_this_machine_and_process():
    host, pid, start = identity().rsplit(":", 2)
    assert host == machine() and int(pid) == os.getpid()
