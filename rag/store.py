"""LanceDB storage: a documents table, a chunks table (vectors + full-text), original files.

Each chunk row holds the vectors of its sentence pieces (`pieces`, a
multivector column: search ranks chunks by their best piece) and `vector`,
their normalised mean, for the chunk as a whole.

Visibility rule: chunks are written first and the document row last, so a
document exists for search only once all its chunks are stored. Chunks whose
document row is missing (a crash mid-document) are ignored by search and
deleted by `sweep_orphans()`, which ingestion runs before it starts.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from rag.lexical import fts_text
from rag.types import Chunk, Document, Passage

SCHEMA_VERSION = 2  # 2: per-piece vectors (`pieces`)
ANN_THRESHOLD = 100_000  # past this many chunks, build an approximate vector index


class StoreError(RuntimeError):
    """The store cannot be opened or does not match the embedder."""


@dataclass(frozen=True)
class DocRecord:
    id: str
    path: str
    title: str
    mime: str
    pages: int
    chunks: int
    empty_pages: int
    size: int
    added_at: float
    file: str  # stored copy of the original, relative to the store's files/ folder


def _documents_schema() -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string()), pa.field("path", pa.string()),
        pa.field("title", pa.string()), pa.field("mime", pa.string()),
        pa.field("pages", pa.int32()), pa.field("chunks", pa.int32()),
        pa.field("empty_pages", pa.int32()), pa.field("size", pa.int64()),
        pa.field("added_at", pa.float64()), pa.field("file", pa.string()),
    ])


def _chunks_schema(dim: int) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string()), pa.field("doc_id", pa.string()),
        pa.field("ordinal", pa.int32()), pa.field("text", pa.string()),
        pa.field("page_start", pa.int32()), pa.field("page_end", pa.int32()),
        pa.field("char_start", pa.int32()), pa.field("char_end", pa.int32()),
        pa.field("heading", pa.string()), pa.field("fts", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), dim)),
        pa.field("pieces", pa.list_(pa.list_(pa.float32(), dim))),
    ], metadata={"embedder": "", "schema_version": str(SCHEMA_VERSION)})


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Store:
    """Open (or create) the store under `root`; `dim` comes from the embedder."""

    def __init__(self, root: Path | str, dim: int, embedder: str = ""):
        import lancedb

        self.root = Path(root)
        self.files = self.root / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self.db = lancedb.connect(str(self.root / "lance"))
        names = set(self.db.list_tables().tables if hasattr(self.db.list_tables(), "tables")
                    else self.db.list_tables())
        if "documents" in names:
            self.documents = self.db.open_table("documents")
        else:
            self.documents = self.db.create_table("documents", schema=_documents_schema())
        if "chunks" in names:
            self.chunks = self.db.open_table("chunks")
            stored = self.chunks.schema.field("vector").type.list_size
            meta = self.chunks.schema.metadata or {}
            was = meta.get(b"embedder", b"").decode()
            if stored != dim:
                raise StoreError(f"{self.root}: built with a {stored}-dimension embedder"
                                 f" ({was or 'unknown'}), the configured one has {dim};"
                                 " use another --db or re-ingest")
        else:
            schema = _chunks_schema(dim).with_metadata({"embedder": embedder,
                                                        "schema_version": str(SCHEMA_VERSION)})
            self.chunks = self.db.create_table("chunks", schema=schema)
        self.dim = dim
        # Stores written before schema 2 have no piece vectors: search ranks by `vector`.
        self.has_pieces = "pieces" in self.chunks.schema.names
        indices = self.chunks.list_indices()
        self._fts_ready = any(i.index_type == "FTS" for i in indices)
        self._ann_ready = any(i.index_type.startswith("IVF") for i in indices)
        self._pieces: _PieceIndex | None = None  # loaded on the first search, per table version

    # -- documents ---------------------------------------------------------
    def list_documents(self) -> list[DocRecord]:
        rows = self.documents.to_arrow().to_pylist()
        return sorted((DocRecord(**r) for r in rows), key=lambda d: d.added_at)

    def get_document(self, doc_id: str) -> DocRecord | None:
        rows = self.documents.search().where(f"id = {_quote(doc_id)}").limit(1).to_list()
        return DocRecord(**{k: rows[0][k] for k in DocRecord.__annotations__}) if rows else None

    def ready_ids(self) -> set[str]:
        return set(self.documents.to_arrow().column("id").to_pylist())

    def documents_at(self, path: str) -> list[DocRecord]:
        rows = self.documents.search().where(f"path = {_quote(path)}").to_list()
        return [DocRecord(**{k: r[k] for k in DocRecord.__annotations__}) for r in rows]

    def file_path(self, record: DocRecord) -> Path:
        return self.files / record.file

    # -- writing -----------------------------------------------------------
    def add_document(self, doc: Document, chunks: Sequence[Chunk], vectors,
                     source: Path | bytes | None = None) -> DocRecord:
        """Store one complete document: original file, chunks, then the document row.

        `vectors` has one entry per chunk: the chunk's vector, or an (n, dim)
        array of its pieces' vectors.
        """
        return self.add_documents([(doc, chunks, vectors, source)])[0]

    def add_documents(self, items: Sequence[tuple[Document, Sequence[Chunk], np.ndarray,
                                                  Path | bytes | None]]) -> list[DocRecord]:
        """Store complete documents: original files, all their chunks, then their rows.

        Rows go last, in one write: until it lands none of these documents is
        visible, and a crash before it leaves only orphan chunks (swept later).
        """
        records, tables = [], []
        for doc, chunks, vectors, source in items:
            if len(chunks) != len(vectors):
                raise ValueError(f"{doc.path}: {len(chunks)} chunks but {len(vectors)} vectors")
            stored = self._keep_file(doc, source)
            if chunks:
                tables.append(self._chunk_table(doc, chunks, vectors))
            size = (self.files / stored).stat().st_size if (self.files / stored).exists() else 0
            records.append(DocRecord(id=doc.id, path=doc.path, title=doc.title, mime=doc.mime,
                                     pages=len(doc.pages), chunks=len(chunks),
                                     empty_pages=doc.empty_pages, size=size,
                                     added_at=time.time(), file=stored))
        ids = ", ".join(_quote(r.id) for r in records)
        self.chunks.delete(f"doc_id IN ({ids})")  # leftovers of an interrupted run
        if tables:
            self.chunks.add(pa.concat_tables(tables))
        self.documents.delete(f"id IN ({ids})")
        self.documents.add([r.__dict__ for r in records])
        return records

    def _keep_file(self, doc: Document, source: Path | bytes | None) -> str:
        stored = f"{doc.id}{Path(doc.path).suffix.lower()[:10]}"
        target = self.files / stored
        if isinstance(source, (bytes, bytearray)):
            target.write_bytes(source)
        elif source is not None and not target.exists():
            tmp = self.files / (stored + ".part")
            shutil.copyfile(source, tmp)
            tmp.replace(target)
        return stored

    def _chunk_table(self, doc: Document, chunks: Sequence[Chunk], vectors) -> pa.Table:
        pieces = [np.atleast_2d(np.asarray(v, dtype=np.float32)) for v in vectors]
        if any(len(p) == 0 for p in pieces):
            raise ValueError(f"{doc.path}: a chunk without vectors")
        means = np.stack([p.mean(axis=0) for p in pieces]) if pieces else np.zeros((0, self.dim))
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        columns = {
            "id": [f"{doc.id}:{c.ordinal}" for c in chunks],
            "doc_id": [doc.id] * len(chunks),
            "ordinal": [c.ordinal for c in chunks],
            "text": [c.text for c in chunks],
            "page_start": [c.page_start for c in chunks],
            "page_end": [c.page_end for c in chunks],
            "char_start": [c.char_start for c in chunks],
            "char_end": [c.char_end for c in chunks],
            "heading": [c.heading for c in chunks],
            "fts": [fts_text(" ".join(filter(None, (doc.title, c.heading, c.text))))
                    for c in chunks],
            "vector": self._vectors(means),
        }
        if self.has_pieces:
            offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int32)
            flat = np.concatenate(pieces) if pieces else np.zeros((0, self.dim), np.float32)
            columns["pieces"] = pa.ListArray.from_arrays(pa.array(offsets), self._vectors(flat))
        return pa.table(columns, schema=self.chunks.schema)

    def _vectors(self, rows: np.ndarray) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(
            pa.array(np.asarray(rows, dtype=np.float32).reshape(-1)), self.dim)

    def delete_document(self, doc_id: str) -> bool:
        record = self.get_document(doc_id)
        # Row first: the document disappears from search at once, chunks follow.
        self.documents.delete(f"id = {_quote(doc_id)}")
        self.chunks.delete(f"doc_id = {_quote(doc_id)}")
        if record and record.file and not self._file_shared(record):
            (self.files / record.file).unlink(missing_ok=True)
        return record is not None

    def _file_shared(self, record: DocRecord) -> bool:
        return any(r.file == record.file for r in self.list_documents())

    def sweep_orphans(self) -> int:
        """Delete chunks whose document row is missing (an interrupted ingestion)."""
        ready = self.ready_ids()
        column = self.chunks.search().select(["doc_id"]).limit(None).to_arrow()
        ids = set(column.column("doc_id").to_pylist())
        orphans = ids - ready
        for doc_id in orphans:
            self.chunks.delete(f"doc_id = {_quote(doc_id)}")
        for path in self.files.glob("*.part"):
            path.unlink(missing_ok=True)
        return len(orphans)

    def refresh_indexes(self) -> None:
        """Keep the full-text index current and build a vector index past ANN_THRESHOLD."""
        n = self.chunks.count_rows()
        if n == 0:
            return
        if not self._fts_ready:
            # English stemming: +1 point hit@5 on covidqa and xquad-en, no change on
            # zh/th/hi (their tokens are bigrams or non-Latin words the stemmer leaves alone).
            self.chunks.create_fts_index("fts", base_tokenizer="whitespace", stem=True,
                                         language="English", remove_stop_words=False,
                                         ascii_folding=True, replace=True)
            self._fts_ready = True
        else:
            self.chunks.optimize()  # folds new rows into the existing indexes
        if n >= ANN_THRESHOLD and not self._ann_ready:
            self.chunks.create_index(metric="dot", index_type="IVF_HNSW_SQ",
                                     vector_column_name="vector")
            self._ann_ready = True

    def count_chunks(self) -> int:
        return self.chunks.count_rows()

    # -- reading -----------------------------------------------------------
    def vector_search(self, vector: np.ndarray, k: int,
                      doc_ids: Iterable[str] | None = None) -> list[dict]:
        """The k chunks closest to `vector`, best first, optionally only of `doc_ids`:
        by their best piece where the store has pieces and no approximate index,
        else by the chunk vector (past ANN_THRESHOLD chunks the indexed chunk
        vectors find the candidates)."""
        vector = np.asarray(vector, dtype=np.float32)
        only = set(doc_ids) if doc_ids else None
        where = doc_filter(only)
        if self.has_pieces and not self._ann_ready:
            ids = self._piece_index().search(vector, k, only)
            if not ids:
                return []
            query = self.chunks.search().where(f"id IN ({', '.join(map(_quote, ids))})")
            rows = {r["id"]: r for r in self._rows(query.select(self._read_columns())
                                                   .limit(len(ids)))}
            return [rows[i] for i in ids if i in rows]
        query = self.chunks.search(vector, vector_column_name="vector").metric("dot").limit(k)
        if where:
            query = query.where(where, prefilter=True)
        return self._rows(query.select(self._read_columns() + ["_distance"]))

    def _piece_index(self) -> _PieceIndex:
        version = self.chunks.version
        if self._pieces is None or self._pieces.version != version:
            self._pieces = _PieceIndex.load(self.chunks, self.dim, version)
        return self._pieces

    def _read_columns(self) -> list[str]:
        return _COLUMNS + ["vector"] + (["pieces"] if self.has_pieces else [])

    def _rows(self, query) -> list[dict]:
        """Result rows as dicts, `vector` (dim,) and `pieces` (n, dim) as NumPy arrays
        (Python float lists would cost more than the search)."""
        table = query.to_arrow()
        vectors = _matrix(table.column("vector"), self.dim)
        if "pieces" in table.column_names:
            flat, offsets = _pieces(table.column("pieces"), self.dim)
            split = [flat[a:b] for a, b in itertools.pairwise(offsets)]
        else:
            split = [v[None, :] for v in vectors]
        rows = table.drop_columns([c for c in ("vector", "pieces") if c in table.column_names])
        return [dict(row, vector=v, pieces=p)
                for row, v, p in zip(rows.to_pylist(), vectors, split)]

    def text_search(self, text: str, k: int, doc_ids: Iterable[str] | None = None) -> list[dict]:
        terms = fts_text(text)
        where = doc_filter(doc_ids)
        if not terms or not self._fts_ready:
            return []
        query = self.chunks.search(terms, query_type="fts", fts_columns="fts").limit(k)
        if where:
            query = query.where(where, prefilter=True)
        return self._rows(query.select(self._read_columns() + ["_score"]))

    def chunks_of(self, doc_id: str) -> list[dict]:
        rows = self.chunks.search().where(f"doc_id = {_quote(doc_id)}").select(_COLUMNS) \
            .limit(1_000_000).to_list()
        return sorted(rows, key=lambda r: r["ordinal"])

    def passage(self, row: dict, titles: dict[str, DocRecord]) -> Passage:
        doc = titles.get(row["doc_id"])
        return Passage(chunk_id=row["id"], doc_id=row["doc_id"],
                       title=doc.title if doc else "", path=doc.path if doc else "",
                       text=row["text"], page_start=row["page_start"], page_end=row["page_end"],
                       char_start=row["char_start"], char_end=row["char_end"],
                       heading=row["heading"])


_COLUMNS = ["id", "doc_id", "ordinal", "text", "page_start", "page_end", "char_start",
            "char_end", "heading"]


class _PieceIndex:
    """Every piece vector of the store in one matrix, for the best-piece search.

    LanceDB's flat search over a multivector column took 95 ms for 10k chunks
    of 6 pieces on a 2-core machine; one matrix product and a per-chunk max
    take ~6 ms. Memory: 4 bytes x dim per piece (~90 MB for 10k chunks with
    MiniLM); past ANN_THRESHOLD chunks the store searches chunk vectors instead.
    """

    def __init__(self, version: int, ids: list[str], doc_ids: np.ndarray, starts: np.ndarray,
                 matrix: np.ndarray):
        self.version, self.ids, self.doc_ids = version, ids, doc_ids
        self.starts, self.matrix = starts, matrix

    @classmethod
    def load(cls, table, dim: int, version: int) -> _PieceIndex:
        data = table.search().select(["id", "doc_id", "pieces"]).limit(None).to_arrow()
        matrix, offsets = _pieces(data.column("pieces"), dim)
        return cls(version, data.column("id").to_pylist(),
                   np.array(data.column("doc_id").to_pylist(), dtype=object),
                   offsets[:-1], matrix)

    def search(self, vector: np.ndarray, k: int, doc_ids: set[str] | None) -> list[str]:
        if not self.ids:
            return []
        best = np.maximum.reduceat(self.matrix @ vector, self.starts)
        if doc_ids is not None:
            best[~np.isin(self.doc_ids, list(doc_ids))] = -np.inf
        k = min(k, len(best))
        top = np.argpartition(-best, k - 1)[:k]
        top = top[np.argsort(-best[top], kind="stable")]
        return [self.ids[i] for i in top if best[i] > -np.inf]


def _pieces(column, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A `pieces` column as one (total, dim) matrix and row offsets into it (n + 1, from 0)."""
    pieces = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = pieces.offsets.to_numpy()
    return _matrix(pieces.flatten(), dim), offsets - offsets[0]  # a slice's need not start at 0


def _matrix(column, dim: int) -> np.ndarray:
    """A fixed-size-list column of float32 vectors as an (n, dim) array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def doc_filter(doc_ids: Iterable[str] | None) -> str | None:
    ids = list(doc_ids or [])
    return f"doc_id IN ({', '.join(_quote(i) for i in ids)})" if ids else None
