"""Best-piece search: a chunk ranks by its best sentence piece's cosine to the question.

Two ways, chosen by the store's size (`PieceSearch.table_chunks`, config
`piece_table_chunks`):

- Small stores: every piece vector in one in-memory matrix (`PieceIndex`).
  LanceDB's flat search over a multivector column took 95 ms for 10k chunks
  of 6 pieces on a 2-core machine; one matrix product and a per-chunk max take
  ~6 ms. Memory: 4 bytes x dim per piece (~90 MB for 10k chunks with MiniLM).
  The matrix is loaded on the first search after a write (per table version).
- Past the threshold: a `pieces` table, one row per piece (vector, chunk id,
  document id, piece number) with an IVF-PQ index (`PieceTable`). A search
  reads the index's centroids and codes and the `refine` x limit candidates'
  full vectors, never the whole matrix, so a serving process's memory stays
  bounded as the store grows; a write appends its pieces and reloads nothing.
  LanceDB searches the rows its index does not cover yet by a flat scan (and
  honours deletes); maintenance (Table.optimize) folds them in, and the index
  is retrained once the table has doubled since it was trained.

Why IVF-PQ and not IVF-HNSW-SQ, and the settings: `rag bench scale`
(rag/cli/bench/scale.py, figures in the README, "Search at scale"). HNSW-SQ
took 255 s to index 600k pieces here (IVF-PQ 59 s) and keeps a byte per
dimension per piece in memory; PQ codes are 48 bytes a piece at 384
dimensions, and the refine step (exact distances for the best candidates,
read from the table) restores the recall PQ alone loses (index_config).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

TABLE = "pieces"
INDEX = "piece_vectors_"  # + the number of rows it was trained on
RETRAIN = 2.0  # retrain the index once the table holds this many times its trained rows
MIN_INDEX_ROWS = 1024  # PQ trains 256 centroids per sub-vector: fewer rows cannot train it
FETCH = 4  # pieces asked for per chunk wanted (a chunk's pieces often come together)
FLAT_ROWS = 50_000  # a document filter matching fewer pieces is searched exactly
CHECK_S = 5.0  # how often a process not yet using the table looks whether it is ready
BATCH = 8192  # chunks per batch when the table is built
TABLE_CHUNKS = 50_000  # the default threshold (see PieceSearch)


@dataclass(frozen=True)
class PieceSearch:
    """Where piece search switches to the indexed table, and its recall/latency knobs
    (config: piece_table_chunks, piece_nprobes, piece_refine)."""
    table_chunks: int = TABLE_CHUNKS  # chunks past which pieces move to the indexed table
    nprobes: int = 80  # IVF partitions searched per question
    refine: int = 5  # candidates re-ranked with exact distances: refine x the limit


DEFAULT_SEARCH = PieceSearch()


class PieceIndex:
    """`search(vector, k, doc_ids)`: chunk ids ranked by their best piece's cosine."""

    def __init__(self, table, dim: int):
        self.table, self.dim = table, dim
        self.clear()

    def clear(self) -> None:
        """Forget the matrix (the store moved to the piece table)."""
        self._version: int | None = None
        self._ids: list[str] = []
        self._doc_ids = np.zeros(0, dtype=object)
        self._starts = np.zeros(0, dtype=np.int64)
        self._matrix = np.zeros((0, self.dim), dtype=np.float32)

    @property
    def loaded_bytes(self) -> int:
        return self._matrix.nbytes

    def search(self, vector: np.ndarray, k: int, doc_ids: set[str] | None = None) -> list[str]:
        self._load()
        if not self._ids:
            return []
        best = np.maximum.reduceat(self._matrix @ vector, self._starts)
        if doc_ids is not None:
            best[~np.isin(self._doc_ids, list(doc_ids))] = -np.inf
        k = min(k, len(best))
        top = np.argpartition(-best, k - 1)[:k]
        top = top[np.argsort(-best[top], kind="stable")]
        return [self._ids[i] for i in top if best[i] > -np.inf]

    def _load(self) -> None:
        version = self.table.version
        if version == self._version:
            return
        data = self.table.search().select(["id", "doc_id", "pieces"]).limit(None).to_arrow()
        self._matrix, offsets = piece_matrix(data.column("pieces"), self.dim)
        self._ids = data.column("id").to_pylist()
        self._doc_ids = np.array(data.column("doc_id").to_pylist(), dtype=object)
        self._starts = offsets[:-1]
        self._version = version


def table_schema(dim: int) -> pa.Schema:
    return pa.schema([pa.field("vector", pa.list_(pa.float32(), dim)),
                      pa.field("chunk_id", pa.string()), pa.field("doc_id", pa.string()),
                      pa.field("piece", pa.int32())])


def piece_rows(chunks: pa.Table | pa.RecordBatch, dim: int) -> pa.Table:
    """One row per piece of the given chunk rows (columns id, doc_id, pieces)."""
    pieces = chunks.column("pieces")
    if isinstance(pieces, pa.ChunkedArray):
        pieces = pieces.combine_chunks()
    counts = pieces.value_lengths().to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(len(counts)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return pa.table({"vector": vector_array(vector_matrix(pieces.flatten(), dim), dim),
                     "chunk_id": chunks.column("id").take(owner),
                     "doc_id": chunks.column("doc_id").take(owner),
                     "piece": pa.array(np.arange(len(owner)) - first, pa.int32())},
                    schema=table_schema(dim))


class PieceTable:
    """The `pieces` table of a store past the threshold, and search through its index."""

    def __init__(self, db, dim: int, settings: PieceSearch = DEFAULT_SEARCH):
        self.db, self.dim, self.settings = db, dim, settings
        self._table = None
        self._ready = False
        self._next_check = 0.0

    def handle(self):
        """The open table, or None while there is none."""
        if self._table is None and TABLE in _names(self.db):
            self._table = self.db.open_table(TABLE)
        return self._table

    def ready(self, recheck: bool = False) -> bool:
        """Whether the table is complete and indexed: from then on search uses it. A
        process that is not using it yet looks again every CHECK_S seconds (another
        process, a `rag ingest`, may have built it), or now with `recheck`."""
        if not self._ready and (recheck or time.monotonic() >= self._next_check):
            self._next_check = time.monotonic() + CHECK_S
            table = self.handle()
            if table is not None:
                table.checkout_latest()
                self._ready = trained_rows(table) > 0
        return self._ready

    # -- writing -----------------------------------------------------------
    def add(self, chunks: pa.Table) -> None:
        """Append the pieces of new chunk rows (nothing while there is no table)."""
        table = self.handle()
        if table is not None and chunks.num_rows:
            table.add(piece_rows(chunks, self.dim))

    def delete(self, condition: str) -> None:
        table = self.handle()
        if table is not None and table.count_rows(condition):
            table.delete(condition)

    def build(self, chunks) -> bool:
        """Create the table from every chunk's pieces (streamed: memory stays at a batch)
        and its document index; `refresh` trains the vector index. False if another
        process created it first."""
        source = chunks.search().select(["id", "doc_id", "pieces"]).limit(None)
        batches = (piece_rows(b, self.dim).to_batches()[0]
                   for b in source.to_batches(BATCH) if b.num_rows)
        reader = pa.RecordBatchReader.from_batches(table_schema(self.dim), batches)
        try:
            table = self.db.create_table(TABLE, data=reader)
        except (ValueError, OSError, RuntimeError):
            if TABLE not in _names(self.db):
                raise
            return False
        self._table = table
        _reconcile(chunks, table, self.dim)
        from lancedb.index import BTree

        table.create_index("doc_id", config=BTree())
        return True

    def refresh(self) -> None:
        """Train the vector index if it is missing or the table has doubled since."""
        table = self.handle()
        if table is None:
            return
        rows, trained = table.count_rows(), trained_rows(table)
        if rows < MIN_INDEX_ROWS or (trained and rows < RETRAIN * trained):
            return
        old = [i.name for i in table.list_indices() if i.name.startswith(INDEX)]
        table.create_index("vector", config=index_config(self.dim), name=f"{INDEX}{rows}")
        for name in old:
            table.drop_index(name)

    # -- reading -----------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, doc_ids: set[str] | None = None) -> list[str]:
        """Chunk ids ranked by their best piece, the best `k`."""
        table = self.handle()
        where = f"doc_id IN ({_id_list(doc_ids)})" if doc_ids else None
        exact = where is not None and table.count_rows(where) <= FLAT_ROWS
        limit = FETCH * k
        while True:
            query = table.search(vector, vector_column_name="vector").distance_type("l2") \
                .limit(limit).select(["chunk_id", "_distance"])
            if exact:
                query = query.bypass_vector_index()
            else:
                query = query.nprobes(self.settings.nprobes)
                if self.settings.refine > 1:
                    query = query.refine_factor(self.settings.refine)
            if where:
                query = query.where(where, prefilter=True)
            found = query.to_arrow().column("chunk_id").to_pylist()
            ids = list(dict.fromkeys(found))
            if len(ids) >= k or len(found) < limit:
                return ids[:k]
            limit *= 4  # many pieces of the same chunks: ask for more


def index_config(dim: int):
    """IVF-PQ, L2, a PQ code byte per 8 dimensions (48 bytes a piece at 384).

    L2 on unit vectors ranks as the cosine does, and its PQ codes kept more of the
    ranking than dot products did (recall@10 0.95 vs 0.84 at refine 2, 100k chunks).
    LanceDB's default of a byte per 16 dimensions lost recall as the store grew
    (300k chunks: 0.95 at refine 10, whatever nprobes); a byte per 8 gave 0.99 at
    nprobes 40, refine 5, and trained faster than it at 1.8M pieces here (134 s)."""
    from lancedb.index import IvfPq

    return IvfPq(distance_type="l2", num_sub_vectors=dim // 8 if dim % 8 == 0 else None)


def trained_rows(table) -> int:
    """Rows the table's piece-vector index was trained on (from its name); 0 if none."""
    names = [i.name[len(INDEX):] for i in table.list_indices() if i.name.startswith(INDEX)]
    return max((int(n) for n in names if n.isdigit()), default=0)


def _reconcile(chunks, table, dim: int) -> None:
    """Make the new table's documents those of the chunks table: a writer that looked
    for the table just before it was created wrote (or deleted) chunks without it."""
    want, have = _doc_ids(chunks), _doc_ids(table)
    gone = sorted(have - want)
    for group in _groups(gone):
        table.delete(f"doc_id IN ({_id_list(group)})")
    for group in _groups(sorted(want - have)):
        rows = chunks.search().where(f"doc_id IN ({_id_list(group)})") \
            .select(["id", "doc_id", "pieces"]).limit(None).to_arrow()
        table.add(piece_rows(rows, dim))


def _doc_ids(table) -> set[str]:
    found: set[str] = set()
    for batch in table.search().select(["doc_id"]).limit(None).to_batches(65536):
        found.update(batch.column("doc_id").unique().to_pylist())
    return found


def _groups(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _id_list(ids: Iterable[str]) -> str:
    return ", ".join("'" + i.replace("'", "''") + "'" for i in ids)


def _names(db) -> set[str]:
    listed = db.list_tables()
    return set(listed.tables if hasattr(listed, "tables") else listed)


def piece_matrix(column, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A `pieces` column as one (total, dim) matrix and row offsets into it (n + 1, from 0)."""
    pieces = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = pieces.offsets.to_numpy()
    return vector_matrix(pieces.flatten(), dim), offsets - offsets[0]  # a slice may not start at 0


def vector_matrix(column, dim: int) -> np.ndarray:
    """A fixed-size-list column of float32 vectors as an (n, dim) array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def vector_array(rows: np.ndarray, dim: int) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(
        pa.array(np.asarray(rows, dtype=np.float32).reshape(-1)), dim)


def list_array(offsets, values) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(np.asarray(offsets, dtype=np.int32)), values)
