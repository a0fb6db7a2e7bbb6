"""The store on a real LanceDB: stores of every earlier schema version open and work."""

from __future__ import annotations

import hashlib

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from rag.retrieve import stored_pieces
from rag.store import Store, StoreError
from rag.store.chunks import create_fts_index
from rag.store.documents import SCHEMA as DOCUMENTS
from rag.store.migrations import VERSION, record_version, stored_version
from rag.text import sentence_pieces
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


def write_old_store(root, version: int, embedder) -> list[str]:
    """A store as version 1 or 2 of the program left it; the document ids."""
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
        rows.append(row)
        docs.append({"id": doc_id, "path": f"/old/{i}.txt", "title": f"Old {i}",
                     "mime": "text/plain", "pages": 1, "chunks": 1, "empty_pages": 0,
                     "size": len(text), "added_at": float(i), "file": ""})
    schema = _v1_chunks(dim) if version == 1 else _v2_chunks(dim)
    table = db.create_table("chunks", pa.Table.from_pylist(rows, schema=schema))
    create_fts_index(table)
    db.create_table("documents", pa.Table.from_pylist(docs, schema=DOCUMENTS))
    return [d["id"] for d in docs]


@pytest.mark.parametrize("version", [1, 2])
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
