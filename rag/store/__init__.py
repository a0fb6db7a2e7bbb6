"""The store: a documents table, a chunks table (vectors + full text), original files.

`Store` opens (or creates) them under one folder or object-store URI
(rag/store/location.py: `s3://bucket/prefix`, `gs://...`, `az://...`), runs
schema migrations (rag/store/migrations.py), and does the few things that span
them:

- Visibility rule: chunks are written first and the document row last, so a
  document exists for search only once all its chunks are stored. Chunks whose
  document row is missing (a crash mid-document) are ignored by search and
  deleted by `sweep_orphans()` (a server start, a `rag ingest` run) once their
  writer is provably dead or they are older than GRACE_S: another process
  (a `rag ingest` beside `rag serve`) may be between its chunks and its row.
- Deleting a document removes its row first (it leaves search at once), then
  its chunks, then its original unless another document shares it.
- Writes only append; `maintain()` compacts, folds indexes and removes old
  versions on the schedule of rag/store/maintenance.py.
- Several processes, on one machine or many, may write at once: LanceDB's
  commit protocol orders their commits, and a write that still lost its race is
  written again (rag/store/writers.py: retrying).

Each part is also usable alone: `store.documents` (rag/store/documents.py),
`store.chunks` (rag/store/chunks.py, with the piece index of
rag/store/pieces.py), `store.originals` and `store.uploads` (rag/store/files.py).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rag.config import is_object_store, store_location
from rag.profiles import profile_text, vocabulary
from rag.store import chunks as chunk_table
from rag.store import documents as doc_table
from rag.store import maintenance
from rag.store.chunks import ANN_THRESHOLD, Chunks
from rag.store.documents import DocRecord, Documents
from rag.store.files import BlobTable, Files, Folder, Originals
from rag.store.location import StoreError, cannot_open, connect
from rag.store.maintenance import Maintenance
from rag.store.migrations import (
    VERSION,
    MigrationError,
    migrate,
    open_or_create,
    record_version,
    table_names,
)
from rag.store.pieces import PieceSearch
from rag.store.writers import provably_dead, retrying
from rag.types import Chunk, Document, Passage

__all__ = ["ANN_THRESHOLD", "DocRecord", "GRACE_S", "Maintenance", "PieceSearch", "Store",
           "StoreError", "VERSION", "open_store"]

# Leftovers of a writer that may still run are kept this long. A writer stores a
# document's chunks and then its row within a second or two (one append, one
# upsert); a quarter of an hour is far past that, short enough that what a
# crashed writer on another machine left does not linger.
GRACE_S = 15 * 60.0


class Store:
    """Open (or create) the store at `root` (a folder or an object-store URI); `dim` comes
    from the embedder; `storage_options` go to LanceDB (rag/store/location.py)."""

    def __init__(self, root: Path | str, dim: int, embedder: str = "",
                 storage_options: Mapping[str, str] | None = None,
                 pieces: PieceSearch | None = None):
        self.root = store_location(root)
        self.remote = is_object_store(self.root)  # object storage, shared by every replica
        try:
            self.db = connect(self.root, storage_options)
            migrate(self.db)
            names = table_names(self.db)
        except MigrationError as exc:
            raise StoreError(f"{self.root}: {exc}") from exc
        except StoreError:
            raise
        except (ValueError, OSError, RuntimeError) as exc:  # unreachable, refused, no bucket
            raise cannot_open(self.root, exc) from exc
        # Several processes may open a new store at once: whoever creates a table first wins.
        documents = open_or_create(self.db, "documents", doc_table.SCHEMA)
        table = open_or_create(self.db, "chunks", chunk_table.schema(dim, embedder))
        stored = table.schema.field("vector").type.list_size
        was = (table.schema.metadata or {}).get(b"embedder", b"").decode()
        if stored != dim:
            raise StoreError(f"{self.root}: built with a {stored}-dimension embedder"
                             f" ({was or 'unknown'}), the configured one has {dim};"
                             " use another --db or re-ingest")
        if "chunks" not in names:
            record_version(self.db, VERSION)
        self.dim = dim
        # Original files: a folder beside the tables, or a table of the object store.
        self.originals = Originals(BlobTable(self.db, "files") if self.remote
                                   else Folder(self.root / "files"))
        self.documents = Documents(documents)
        # Past pieces.table_chunks chunks, sentence search moves to an indexed table.
        self.chunks = Chunks(table, dim, self.db, pieces or PieceSearch())

    @functools.cached_property
    def uploads(self) -> Files:
        """Where accepted uploads wait for their job (made on first use: a store that
        only answers questions never creates it)."""
        return BlobTable(self.db, "uploads") if self.remote else Folder(self.root / "uploads")

    def add_documents(self, items: Sequence[tuple[Document, Sequence[Chunk], np.ndarray,
                                                  Path | bytes | None]]) -> list[DocRecord]:
        """Store complete documents: original files, all their chunks, then their rows.

        Rows go last, in one write: until it lands none of these documents is
        visible, and a crash before it leaves only orphan chunks (swept later).
        `vectors` has one entry per chunk: an (n, dim) array of its pieces' vectors
        (or the chunk's one vector).
        """
        records, tables, vocabularies = [], [], {}
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
                                     added_at=time.time(), file=stored,
                                     profile=profile_text(doc.title, doc.path,
                                                          [p.text for p in doc.pages]),
                                     ocr_pages=tuple(doc.ocr_pages)))
            vocabularies[doc.id] = vocabulary(c.text for c in chunks)
        ids = [r.id for r in records]
        retrying(lambda: self.chunks.delete_docs(ids))  # leftovers of an interrupted run
        retrying(lambda: self.chunks.add(tables))
        retrying(lambda: self.documents.put(records, vocabularies))
        return records

    def delete_document(self, doc_id: str) -> bool:
        record = self.documents.get(doc_id)
        retrying(lambda: self.documents.delete(doc_id))
        retrying(lambda: self.chunks.delete_docs([doc_id]))
        if record and not any(r.file == record.file for r in self.documents.list()):
            self.originals.delete(record.file)
        return record is not None

    def sweep_orphans(self, grace_s: float = GRACE_S) -> int:
        """Delete what interrupted ingestions left: chunks without a document row whose
        writer is provably dead or that are older than `grace_s`, and unreferenced
        originals older than that. The number of documents whose chunks went."""
        # Chunks first: a document completed between the two reads then looks complete
        # (read the other way round, it would look orphaned).
        candidates = self.chunks.doc_ids() - self.documents.ids()
        cutoff = time.time() - grace_s
        rows = self.chunks.writers(candidates)
        dead = sorted({r["writer"] for r in rows if r["writer"] and provably_dead(r["writer"])})
        doomed = {r["doc_id"] for r in rows
                  if (r["written_at"] or 0) < cutoff or r["writer"] in dead}
        # Only the rows judged: a live writer's newer rows of the same document stay.
        condition = f"written_at < {cutoff!r}" + (
            f" OR writer IN ({doc_table.id_list(dead)})" if dead else "")
        retrying(lambda: self.chunks.delete_docs(doomed, where=condition))
        self.originals.sweep(self.documents.files(), grace_s)
        return len(doomed)

    def maintain(self, keep_s: float = maintenance.KEEP_S, force: bool = False) -> Maintenance:
        """Optimize the tables that are due (rag/store/maintenance.py), or all of them
        with `force`; what it did."""
        done = Maintenance()
        for name in sorted(table_names(self.db)):
            table = self.table(name)
            reason = "asked" if force else maintenance.due(table.stats())
            if reason:
                folder = None if self.remote else self.root / "lance" / f"{name}.lance"
                done.tables.append(maintenance.optimize(table, name, folder, reason, keep_s))
        return done

    def table(self, name: str):
        """The open handle of table `name` (chunks, documents, meta, jobs...)."""
        known = {"chunks": self.chunks.table, "documents": self.documents.table}
        return known[name] if name in known else self.db.open_table(name)

    def live_bytes(self) -> int:
        """Live data, as rag/store/maintenance.py defines it."""
        names = table_names(self.db) - ({"files", "uploads"} if self.remote else set())
        tables = sum(maintenance.table_live_bytes(self.table(n)) for n in names)
        return tables + self.originals.total_bytes(self.documents.files())

    def latest_bytes(self) -> int:
        """The latest versions' files (`stats().total_bytes` of every table) + the originals
        (on object storage: a table among the others)."""
        return sum(self.table(n).stats()["total_bytes"] for n in table_names(self.db)) \
            + (0 if self.remote else self.originals.total_bytes())

    def disk_bytes(self) -> int:
        """Every file under the store folder: tables, old versions, originals, uploads. On
        object storage the latest versions only (maintenance.py: listing a bucket is not
        free)."""
        return self.latest_bytes() if self.remote else maintenance.disk_bytes(self.root)

    def file_path(self, record: DocRecord) -> Path:
        """The original's file (a local store only; `original()` works for both)."""
        return self.originals.path(record.file)

    def original(self, record: DocRecord) -> Path | bytes | None:
        """A document's original: its file on this machine's disk (a local store), its
        bytes (object storage), or None when it is missing."""
        local = self.originals.local_path(record.file)
        return local if local is not None or not self.remote else \
            self.originals.read(record.file)

    def passage(self, row: dict, docs: dict[str, DocRecord]) -> Passage:
        """A search result row as a Passage, titled from `docs` (id -> record)."""
        doc = docs.get(row["doc_id"])
        return Passage(chunk_id=row["id"], doc_id=row["doc_id"],
                       title=doc.title if doc else "", path=doc.path if doc else "",
                       text=row["text"], page_start=row["page_start"], page_end=row["page_end"],
                       char_start=row["char_start"], char_end=row["char_end"],
                       heading=row["heading"],
                       ocr=bool(doc and any(row["page_start"] <= n <= row["page_end"]
                                            for n in doc.ocr_pages)))


def open_store(root: Path | str, dim: int, embedder: str = "",
               storage_options: Mapping[str, str] | None = None) -> Store:
    return Store(root, dim, embedder, storage_options)
