"""Numbered schema migrations, run when a store is opened.

A store records its schema version in the `meta` table. Stores written before
that table existed are recognised by their columns. `MIGRATIONS[n]` brings a
store from version n - 1 to n; each is written once and never changed, so a
store of any earlier version opens (tests/test_store.py builds one of each).

1. documents + chunks (`vector` per chunk, full-text column)
2. `pieces`: the vectors of each chunk's sentence pieces
3. `piece_spans`: where each piece lies in the chunk's text
4. `written_at`, `writer`: when and by which process each chunk was written
   (rag/store/writers.py). Added with `Table.add_columns`, which writes only the
   two new columns beside each existing data file: the table is not rewritten.
   Old rows get written_at 0 (long ago) and no writer.
5. documents: `profile` (rag/profiles.py) and `ocr_pages`. The documents table
   (one row per document) is rewritten; old documents' profiles come from their
   stored chunks of the first pages, and no page of theirs came from OCR.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from rag.store.chunks import create_fts_index
from rag.store.pieces import list_array, piece_matrix
from rag.text import chunk_piece_spans, flatten

VERSION = 5
META = pa.schema([pa.field("key", pa.string()), pa.field("value", pa.string())])


class MigrationError(RuntimeError):
    """The store was written by a newer version of the program."""


def table_names(db) -> set[str]:
    listed = db.list_tables()
    return set(listed.tables if hasattr(listed, "tables") else listed)


def open_or_create(db, name: str, schema: pa.Schema):
    """Table `name`, created empty with `schema` if missing (another thread or process
    may create it at the same moment: then theirs is opened)."""
    if name in table_names(db):
        return db.open_table(name)
    try:
        return db.create_table(name, schema=schema)
    except (ValueError, OSError, RuntimeError):
        if name not in table_names(db):
            raise
        return db.open_table(name)


def stored_version(db) -> int | None:
    """The store's schema version; None for an empty folder."""
    names = table_names(db)
    if "meta" in names:
        rows = db.open_table("meta").to_arrow().to_pylist()
        values = {r["key"]: r["value"] for r in rows}
        if "schema_version" in values:
            return int(values["schema_version"])
    if "chunks" not in names:
        return None
    if "documents" in names and "profile" in db.open_table("documents").schema.names:
        return 5
    columns = db.open_table("chunks").schema.names
    for version, column in ((4, "writer"), (3, "piece_spans"), (2, "pieces")):
        if column in columns:
            return version
    return 1


def record_version(db, version: int) -> None:
    meta = open_or_create(db, "meta", META)
    meta.delete("key = 'schema_version'")
    meta.add([{"key": "schema_version", "value": str(version)}])


def migrate(db, log: Callable[[str], None] = lambda _: None) -> int:
    """Bring the store up to VERSION; the version it had."""
    found = stored_version(db)
    if found is None:
        return VERSION
    if found > VERSION:
        raise MigrationError(f"store schema {found} is newer than this program's {VERSION}:"
                             " upgrade the program")
    for version in range(found + 1, VERSION + 1):
        log(f"store: migrating schema {version - 1} -> {version}")
        MIGRATIONS[version](db)
        record_version(db, version)
    return found


def _rewrite_chunks(db, add: Callable[[pa.Table, int], dict[str, pa.Array]]) -> None:
    """Rewrite the chunks table with new columns (one atomic commit), then its FTS index."""
    table = db.open_table("chunks")
    data = table.to_arrow()
    dim = table.schema.field("vector").type.list_size
    meta = table.schema.metadata or {}
    for name, column in add(data, dim).items():
        data = data.append_column(name, column)
    data = data.replace_schema_metadata(meta)
    table = db.create_table("chunks", data, mode="overwrite")
    if table.count_rows():
        create_fts_index(table)


def _add_pieces(db) -> None:
    """Version 2: each chunk's one vector becomes its only piece."""
    def add(data: pa.Table, dim: int) -> dict[str, pa.Array]:
        vectors = data.column("vector").combine_chunks()
        offsets = np.arange(len(vectors) + 1)
        return {"pieces": list_array(offsets, vectors)}

    _rewrite_chunks(db, add)


def _add_piece_spans(db) -> None:
    """Version 3: piece spans. Where today's splitter finds as many pieces as were
    embedded, its spans are those pieces' (the splitter of version 2 wrote them);
    otherwise each piece spans the whole text and search scores the chunk as one."""
    def add(data: pa.Table, dim: int) -> dict[str, pa.Array]:
        _, offsets = piece_matrix(data.column("pieces"), dim)
        counts = np.diff(offsets)
        spans, lengths = [], []
        for text, n in zip(data.column("text").to_pylist(), counts):
            found = chunk_piece_spans(text)
            if len(found) != n:
                found = [((0, len(text)),)] * int(n)
            spans.extend(flatten(found))
            lengths.append(len(found))
        starts = np.concatenate([[0], np.cumsum(lengths)])
        return {"piece_spans": list_array(starts, pa.array(spans, pa.list_(pa.int32())))}

    _rewrite_chunks(db, add)


def _add_writer(db) -> None:
    """Version 4: who wrote each chunk and when (the orphan sweep reads them)."""
    db.open_table("chunks").add_columns({"written_at": "CAST(0 AS DOUBLE)",
                                         "writer": "CAST('' AS STRING)"})


def _add_profiles(db) -> None:
    """Version 5: document profiles (text and vocabulary) and OCR pages."""
    from rag.profiles import PROFILE_PAGES, profile_text, vocabulary
    from rag.store.documents import SCHEMA

    docs = db.open_table("documents").to_arrow().to_pylist()
    chunks = (db.open_table("chunks").search().select(["doc_id", "ordinal", "page_start", "text"])
              .limit(None).to_list())
    by_doc: dict[str, list[tuple[int, int, str]]] = {}
    for row in chunks:
        by_doc.setdefault(row["doc_id"], []).append(
            (row["page_start"], row["ordinal"], row["text"]))
    for doc in docs:
        rows = sorted(by_doc.get(doc["id"], []), key=lambda r: r[1])
        by_page: dict[int, list[str]] = {}
        for page, _, text in rows:
            if page <= PROFILE_PAGES:
                by_page.setdefault(page, []).append(text)
        doc["profile"] = profile_text(doc["title"], doc["path"],
                                      [" ".join(by_page[p]) for p in sorted(by_page)])
        doc["ocr_pages"] = []
        vocab = vocabulary(text for _, _, text in rows)
        doc["terms"], doc["term_counts"] = list(vocab), list(vocab.values())
    db.create_table("documents", pa.Table.from_pylist(docs, schema=SCHEMA), mode="overwrite")


MIGRATIONS: dict[int, Callable] = {2: _add_pieces, 3: _add_piece_spans, 4: _add_writer,
                                   5: _add_profiles}
