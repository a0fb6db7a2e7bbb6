"""The store: a documents table, a chunks table (vectors + full text), original files.

`Store` opens (or creates) them under one folder, runs schema migrations
(rag/store/migrations.py), and does the few things that span them:

- Visibility rule: chunks are written first and the document row last, so a
  document exists for search only once all its chunks are stored. Chunks whose
  document row is missing (a crash mid-document) are ignored by search and
  deleted by `sweep_orphans()`, which ingestion runs before it starts.
- Deleting a document removes its row first (it leaves search at once), then
  its chunks, then its original unless another document shares it.

Each part is also usable alone: `store.documents` (rag/store/documents.py),
`store.chunks` (rag/store/chunks.py, with the piece index of
rag/store/pieces.py) and `store.originals` (rag/store/files.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.store import chunks as chunk_table
from rag.store import documents as doc_table
from rag.store.chunks import ANN_THRESHOLD, Chunks
from rag.store.documents import DocRecord, Documents
from rag.store.files import Originals
from rag.store.migrations import VERSION, MigrationError, migrate, record_version, table_names
from rag.types import Chunk, Document, Passage

__all__ = ["ANN_THRESHOLD", "DocRecord", "Store", "StoreError", "VERSION", "open_store"]


class StoreError(RuntimeError):
    """The store cannot be opened or does not match the embedder."""


class Store:
    """Open (or create) the store under `root`; `dim` comes from the embedder."""

    def __init__(self, root: Path | str, dim: int, embedder: str = ""):
        import lancedb

        self.root = Path(root)
        self.originals = Originals(self.root / "files")
        self.db = lancedb.connect(str(self.root / "lance"))
        try:
            migrate(self.db)
        except MigrationError as exc:
            raise StoreError(f"{self.root}: {exc}") from exc
        names = table_names(self.db)
        if "documents" not in names:
            self.db.create_table("documents", schema=doc_table.SCHEMA)
        if "chunks" in names:
            table = self.db.open_table("chunks")
            stored = table.schema.field("vector").type.list_size
            was = (table.schema.metadata or {}).get(b"embedder", b"").decode()
            if stored != dim:
                raise StoreError(f"{self.root}: built with a {stored}-dimension embedder"
                                 f" ({was or 'unknown'}), the configured one has {dim};"
                                 " use another --db or re-ingest")
        else:
            table = self.db.create_table("chunks", schema=chunk_table.schema(dim, embedder))
            record_version(self.db, VERSION)
        self.dim = dim
        self.documents = Documents(self.db.open_table("documents"))
        self.chunks = Chunks(table, dim)

    def add_documents(self, items: Sequence[tuple[Document, Sequence[Chunk], np.ndarray,
                                                  Path | bytes | None]]) -> list[DocRecord]:
        """Store complete documents: original files, all their chunks, then their rows.

        Rows go last, in one write: until it lands none of these documents is
        visible, and a crash before it leaves only orphan chunks (swept later).
        `vectors` has one entry per chunk: an (n, dim) array of its pieces' vectors
        (or the chunk's one vector).
        """
        records, tables = [], []
        for doc, chunks, vectors, source in items:
            if len(chunks) != len(vectors):
                raise ValueError(f"{doc.path}: {len(chunks)} chunks but {len(vectors)} vectors")
            stored = self.originals.keep(doc.id, doc.path, source)
            if chunks:
                tables.append(self.chunks.rows(doc, chunks, vectors))
            records.append(DocRecord(id=doc.id, path=doc.path, title=doc.title, mime=doc.mime,
                                     pages=len(doc.pages), chunks=len(chunks),
                                     empty_pages=doc.empty_pages,
                                     size=self.originals.size(stored),
                                     added_at=time.time(), file=stored))
        self.chunks.delete_docs(r.id for r in records)  # leftovers of an interrupted run
        self.chunks.add(tables)
        self.documents.put(records)
        return records

    def delete_document(self, doc_id: str) -> bool:
        record = self.documents.get(doc_id)
        self.documents.delete(doc_id)
        self.chunks.delete_docs([doc_id])
        if record and not any(r.file == record.file for r in self.documents.list()):
            self.originals.delete(record.file)
        return record is not None

    def sweep_orphans(self) -> int:
        """Delete chunks whose document row is missing (an interrupted ingestion)."""
        orphans = self.chunks.doc_ids() - self.documents.ids()
        self.chunks.delete_docs(orphans)
        self.originals.sweep()
        return len(orphans)

    def file_path(self, record: DocRecord) -> Path:
        return self.originals.path(record.file)

    def passage(self, row: dict, docs: dict[str, DocRecord]) -> Passage:
        """A search result row as a Passage, titled from `docs` (id -> record)."""
        doc = docs.get(row["doc_id"])
        return Passage(chunk_id=row["id"], doc_id=row["doc_id"],
                       title=doc.title if doc else "", path=doc.path if doc else "",
                       text=row["text"], page_start=row["page_start"], page_end=row["page_end"],
                       char_start=row["char_start"], char_end=row["char_end"],
                       heading=row["heading"])


def open_store(root: Path | str, dim: int, embedder: str = "") -> Store:
    return Store(root, dim, embedder)
