"""The chunks table: text, place in the document, vectors, full-text column and indexes.

Each row holds the vectors of its sentence pieces (`pieces`: search ranks a
chunk by its best piece), the spans of those pieces in its text
(`piece_spans`: see rag/text.py; search reads back what was embedded and never
splits again) and `vector`, their normalised mean, for the chunk as a whole.
`written_at` and `writer` say when and by which process (rag/store/writers.py)
the row was written: the orphan sweep never deletes what a live writer is
still writing.

Appending rows writes a new fragment and rewrites nothing. Search covers new
rows at once: the full-text and vector indexes search the rows they do not
cover yet by a flat scan (tests/test_maintenance.py checks it), and the piece
index reads every row. Folding new rows into the indexes and compacting
fragments is maintenance (rag/store/maintenance.py), run on its own schedule.

Past `PieceSearch.table_chunks` chunks (ANN_THRESHOLD by default) the piece
vectors also live in the indexed `pieces` table (rag/store/pieces.py), built
once by `refresh_indexes`; from then on every write and delete goes to both
tables, search ranks by sentences through that table's index, and the chunk
`id` has a B-tree index so that fetching the found rows reads only them.
Between crossing the threshold and the table being ready (another process may
be building it), search ranks by the chunk vectors without loading the matrix.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa

from rag.lexical import fts_text
from rag.store.documents import id_list, quote
from rag.store.pieces import (
    DEFAULT_SEARCH,
    TABLE_CHUNKS,
    PieceIndex,
    PieceSearch,
    PieceTable,
    list_array,
    piece_matrix,
    vector_array,
    vector_matrix,
)
from rag.store.writers import identity, retrying
from rag.text import chunk_piece_spans, flatten
from rag.types import Chunk, Document

ANN_THRESHOLD = TABLE_CHUNKS  # past this many chunks, pieces move to an indexed table
COLUMNS = ["id", "doc_id", "ordinal", "text", "page_start", "page_end", "char_start",
           "char_end", "heading"]


def schema(dim: int, embedder: str) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string()), pa.field("doc_id", pa.string()),
        pa.field("ordinal", pa.int32()), pa.field("text", pa.string()),
        pa.field("page_start", pa.int32()), pa.field("page_end", pa.int32()),
        pa.field("char_start", pa.int32()), pa.field("char_end", pa.int32()),
        pa.field("heading", pa.string()), pa.field("fts", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), dim)),
        pa.field("pieces", pa.list_(pa.list_(pa.float32(), dim))),
        pa.field("piece_spans", pa.list_(pa.list_(pa.int32()))),
        pa.field("written_at", pa.float64()), pa.field("writer", pa.string()),
    ], metadata={"embedder": embedder})


def filter_docs(doc_ids: Iterable[str] | None) -> str | None:
    ids = list(doc_ids or [])
    return f"doc_id IN ({id_list(ids)})" if ids else None


def create_fts_index(table) -> None:
    """The full-text index over the `fts` column (rag/lexical.py: fts_text).

    English stemming: +1 point hit@5 on covidqa and xquad-en, no change on zh/th/hi
    (their tokens are bigrams or non-Latin words the stemmer leaves alone).
    """
    table.create_fts_index("fts", base_tokenizer="whitespace", stem=True, language="English",
                           remove_stop_words=False, ascii_folding=True, replace=True)


class Chunks:
    """The chunks table; `db` (the store's connection) holds the piece table once the
    store passes `search.table_chunks` chunks (without it, the matrix at any size)."""

    def __init__(self, table, dim: int, db=None, search: PieceSearch = DEFAULT_SEARCH):
        self.table, self.dim, self.settings = table, dim, search
        self.writer = identity()
        self._fts_ready = self._keys_ready = False
        self._check_indexes()
        self.pieces = PieceIndex(table, dim)
        self.piece_table = PieceTable(db, dim, search) if db is not None else None
        self._counted: tuple[int | None, int] = (None, 0)  # (table version, rows)

    def _check_indexes(self) -> None:
        # Another process (a `rag ingest` beside `rag serve`) may have built them since.
        indices = self.table.list_indices()
        self._fts_ready = any(i.index_type == "FTS" for i in indices)
        self._keys_ready = {"id", "doc_id"} <= {c for i in indices for c in i.columns
                                                if i.index_type == "BTree"}

    # -- writing -----------------------------------------------------------
    def rows(self, doc: Document, chunks: Sequence[Chunk], vectors) -> pa.Table:
        """The rows of one document's chunks; `vectors` has one (n_pieces, dim) array (or
        one vector) per chunk, in the order of the chunk's pieces."""
        pieces = [np.atleast_2d(np.asarray(v, dtype=np.float32)) for v in vectors]
        if any(len(p) == 0 for p in pieces):
            raise ValueError(f"{doc.path}: a chunk without vectors")
        spans = []
        for chunk, vecs in zip(chunks, pieces):
            own = list(chunk.pieces) or chunk_piece_spans(chunk.text)
            if len(own) != len(vecs):  # one vector for the whole chunk
                own = [((0, len(chunk.text)),)] * len(vecs)
            spans.append(flatten(own))
        means = np.stack([p.mean(axis=0) for p in pieces]) if pieces else np.zeros((0, self.dim))
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])])
        flat = np.concatenate(pieces) if pieces else np.zeros((0, self.dim), np.float32)
        span_offsets = np.concatenate([[0], np.cumsum([len(s) for s in spans])])
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
            "vector": vector_array(means, self.dim),
            "pieces": list_array(offsets, vector_array(flat, self.dim)),
            "piece_spans": list_array(span_offsets, pa.array(
                [s for chunk in spans for s in chunk], pa.list_(pa.int32()))),
            "written_at": [time.time()] * len(chunks),
            "writer": [self.writer] * len(chunks),
        }
        return pa.table(columns, schema=self.table.schema)

    def add(self, tables: Sequence[pa.Table]) -> None:
        """Append chunk rows, then their pieces to the piece table if the store has one
        (a crash between the two leaves chunks of a document whose row is not written
        yet: invisible, and rewritten by the next run)."""
        if tables:
            rows = pa.concat_tables(tables)
            self.table.add(rows)
            if self.piece_table is not None:  # retried alone: the chunk rows are in
                retrying(lambda: self.piece_table.add(rows))

    def delete_docs(self, doc_ids: Iterable[str], where: str = "") -> None:
        """Delete the rows of `doc_ids` (and matching `where`, if given), and their pieces.
        A delete that matches nothing is skipped: it would still write a new table version."""
        ids = list(doc_ids)
        if not ids:
            return
        docs = f"doc_id IN ({id_list(ids)})"
        condition = docs + (f" AND ({where})" if where else "")
        if self.table.count_rows(condition):
            self.table.delete(condition)
        if self.piece_table is not None and self.piece_table.handle() is not None:
            # Pieces hold no writer columns: drop the documents' pieces and put back those
            # of the rows `where` spared (a live writer's).
            self.piece_table.delete(docs)
            if where:
                kept = self.table.search().where(docs).select(["id", "doc_id", "pieces"])
                self.piece_table.add(kept.limit(None).to_arrow())

    def doc_ids(self) -> set[str]:
        column = self.table.search().select(["doc_id"]).limit(None).to_arrow()
        return set(column.column("doc_id").to_pylist())

    def writers(self, doc_ids: Iterable[str]) -> list[dict]:
        """(doc_id, writer, written_at) of every row of `doc_ids`."""
        where = filter_docs(doc_ids)
        if not where:
            return []
        query = self.table.search().where(where).select(["doc_id", "writer", "written_at"])
        return query.limit(None).to_list()

    def count(self) -> int:
        return self.table.count_rows()

    def refresh_indexes(self) -> None:
        """What search needs after a write: a full-text index once the table has rows;
        past `settings.table_chunks` chunks, the indexed piece table (built once, from
        every chunk: minutes at a million) and B-tree indexes on `id` and `doc_id`, and
        the piece index retrained once its table has doubled. Rows the indexes do not
        cover yet are searched by a flat scan until maintenance folds them in."""
        n = self.table.count_rows()
        if n == 0:
            return
        if not self._fts_ready:
            self._check_indexes()
        if not self._fts_ready:
            create_fts_index(self.table)
            self._fts_ready = True
        if self.piece_table is None or n < self.settings.table_chunks:
            return
        if not self._keys_ready:
            from lancedb.index import BTree

            for column in ("id", "doc_id"):
                self.table.create_index(column, config=BTree(), replace=True)
            self._keys_ready = True
        if self.piece_table.handle() is None:
            self.piece_table.build(self.table)
        self.piece_table.refresh()

    # -- reading -----------------------------------------------------------
    def vector_search(self, vector: np.ndarray, k: int,
                      doc_ids: Iterable[str] | None = None) -> list[dict]:
        """The k chunks closest to `vector`, best first, optionally only of `doc_ids`,
        ranked by their best piece: through the in-memory matrix in a small store,
        through the piece table's index past the threshold (rag/store/pieces.py)."""
        vector = np.asarray(vector, dtype=np.float32)
        only = set(doc_ids) if doc_ids else None
        ids = self._piece_ids(vector, k, only)
        if ids is None:  # past the threshold, the piece table not ready yet
            query = self.table.search(vector, vector_column_name="vector") \
                .distance_type("dot").limit(k)
            where = filter_docs(only)
            if where:
                query = query.where(where, prefilter=True)
            return self._rows(query.select(self._read + ["_distance"]))
        if not ids:
            return []
        query = self.table.search().where(f"id IN ({id_list(ids)})")
        rows = {r["id"]: r for r in self._rows(query.select(self._read).limit(len(ids)))}
        return [rows[i] for i in ids if i in rows]

    def _piece_ids(self, vector: np.ndarray, k: int, only: set[str] | None) -> list[str] | None:
        """Chunk ids by best piece, or None where neither way applies: past the threshold
        (the matrix would not fit) before the piece table is ready."""
        tables = self.piece_table
        if tables is None:
            return self.pieces.search(vector, k, only)
        large = self._rows_now() >= self.settings.table_chunks
        if tables.ready(recheck=large):  # noticed without reopening the store
            if self.pieces.loaded_bytes:
                self.pieces.clear()
            return tables.search(vector, k, only)
        if not large:
            return self.pieces.search(vector, k, only)
        self.pieces.clear()
        return None

    def _rows_now(self) -> int:
        """The number of chunk rows, counted once per table version."""
        version = self.table.version
        if self._counted[0] != version:
            self._counted = (version, self.table.count_rows())
        return self._counted[1]

    def text_search(self, text: str, k: int, doc_ids: Iterable[str] | None = None) -> list[dict]:
        terms = fts_text(text)
        if terms and not self._fts_ready:
            self._check_indexes()
        if not terms or not self._fts_ready:
            return []
        query = self.table.search(terms, query_type="fts", fts_columns="fts").limit(k)
        where = filter_docs(doc_ids)
        if where:
            query = query.where(where, prefilter=True)
        return self._rows(query.select(self._read + ["_score"]))

    def of_document(self, doc_id: str, page: int | None = None) -> list[dict]:
        """A document's chunks in order; with `page`, only those that lie on that page."""
        where = f"doc_id = {quote(doc_id)}"
        if page is not None:
            where += f" AND page_start = {int(page)} AND page_end = {int(page)}"
        rows = self.table.search().where(where).select(COLUMNS).limit(None).to_list()
        return sorted(rows, key=lambda r: r["ordinal"])

    _read = COLUMNS + ["vector", "pieces", "piece_spans"]

    def _rows(self, query) -> list[dict]:
        """Result rows as dicts, `vector` (dim,) and `pieces` (n, dim) as NumPy arrays
        (Python float lists would cost more than the search)."""
        table = query.to_arrow()
        vectors = vector_matrix(table.column("vector"), self.dim)
        flat, offsets = piece_matrix(table.column("pieces"), self.dim)
        split = [flat[a:b] for a, b in itertools.pairwise(offsets)]
        rows = table.drop_columns(["vector", "pieces"])
        return [dict(row, vector=v, pieces=p)
                for row, v, p in zip(rows.to_pylist(), vectors, split)]
