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
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa

from rag.lexical import fts_text
from rag.store.documents import id_list, quote
from rag.store.pieces import PieceIndex, list_array, piece_matrix, vector_array, vector_matrix
from rag.store.writers import identity
from rag.text import chunk_piece_spans, flatten
from rag.types import Chunk, Document

ANN_THRESHOLD = 100_000  # past this many chunks, build an approximate vector index
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
    def __init__(self, table, dim: int):
        self.table, self.dim = table, dim
        self.writer = identity()
        self._fts_ready = self._ann_ready = False
        self._check_indexes()
        self.pieces = PieceIndex(table, dim)

    def _check_indexes(self) -> None:
        # Another process (a `rag ingest` beside `rag serve`) may have built them since.
        indices = self.table.list_indices()
        self._fts_ready = any(i.index_type == "FTS" for i in indices)
        self._ann_ready = any(i.index_type.startswith("IVF") for i in indices)

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
        if tables:
            self.table.add(pa.concat_tables(tables))

    def delete_docs(self, doc_ids: Iterable[str], where: str = "") -> None:
        """Delete the rows of `doc_ids` (and matching `where`, if given). A delete that
        matches nothing is skipped: it would still write a new table version."""
        ids = list(doc_ids)
        if not ids:
            return
        condition = f"doc_id IN ({id_list(ids)})" + (f" AND ({where})" if where else "")
        if self.table.count_rows(condition):
            self.table.delete(condition)

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
        """What search needs after a write: a full-text index once the table has rows, a
        vector index past ANN_THRESHOLD. Rows the indexes do not cover yet are searched
        by a flat scan until maintenance folds them in; nothing is rewritten here."""
        n = self.table.count_rows()
        if n == 0:
            return
        if not self._fts_ready:
            self._check_indexes()
        if not self._fts_ready:
            create_fts_index(self.table)
            self._fts_ready = True
        if n >= ANN_THRESHOLD and not self._ann_ready:
            self.table.create_index(metric="dot", index_type="IVF_HNSW_SQ",
                                    vector_column_name="vector")
            self._ann_ready = True

    # -- reading -----------------------------------------------------------
    def vector_search(self, vector: np.ndarray, k: int,
                      doc_ids: Iterable[str] | None = None) -> list[dict]:
        """The k chunks closest to `vector`, best first, optionally only of `doc_ids`:
        by their best piece below ANN_THRESHOLD chunks, else by the indexed chunk vector."""
        vector = np.asarray(vector, dtype=np.float32)
        only = set(doc_ids) if doc_ids else None
        if not self._ann_ready:
            ids = self.pieces.search(vector, k, only)
            if not ids:
                return []
            query = self.table.search().where(f"id IN ({id_list(ids)})")
            rows = {r["id"]: r for r in self._rows(query.select(self._read).limit(len(ids)))}
            return [rows[i] for i in ids if i in rows]
        query = self.table.search(vector, vector_column_name="vector").metric("dot").limit(k)
        where = filter_docs(only)
        if where:
            query = query.where(where, prefilter=True)
        return self._rows(query.select(self._read + ["_distance"]))

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

    def of_document(self, doc_id: str) -> list[dict]:
        rows = self.table.search().where(f"doc_id = {quote(doc_id)}").select(COLUMNS) \
            .limit(None).to_list()
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
