"""The documents table: one row per complete document (written after its chunks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import pyarrow as pa


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
    file: str  # stored copy of the original (see rag/store/files.py)
    # What tells it from its neighbours (rag/profiles.py); searched beside the chunks.
    profile: str = ""
    ocr_pages: tuple[int, ...] = ()  # pages whose text came from OCR (1-based)


SCHEMA = pa.schema([
    pa.field("id", pa.string()), pa.field("path", pa.string()),
    pa.field("title", pa.string()), pa.field("mime", pa.string()),
    pa.field("pages", pa.int32()), pa.field("chunks", pa.int32()),
    pa.field("empty_pages", pa.int32()), pa.field("size", pa.int64()),
    pa.field("added_at", pa.float64()), pa.field("file", pa.string()),
    pa.field("profile", pa.string()), pa.field("ocr_pages", pa.list_(pa.int32())),
    # The document's vocabulary (rag/profiles.py: vocabulary): its most frequent
    # terms and their counts. Read only by profiles(), never by list().
    pa.field("terms", pa.list_(pa.string())), pa.field("term_counts", pa.list_(pa.int32())),
])
_NAMES = [f.name for f in fields(DocRecord)]


def quote(value: str) -> str:
    """A string literal for a LanceDB filter."""
    return "'" + value.replace("'", "''") + "'"


def id_list(ids) -> str:
    return ", ".join(quote(i) for i in ids)


class Documents:
    def __init__(self, table):
        self.table = table
        self._profiles: tuple[int, dict] | None = None

    def list(self) -> list[DocRecord]:
        rows = self.table.search().select(_NAMES).limit(None).to_list()
        return sorted((self._record(r) for r in rows), key=lambda d: d.added_at)

    def get(self, doc_id: str) -> DocRecord | None:
        rows = (self.table.search().where(f"id = {quote(doc_id)}").select(_NAMES)
                .limit(1).to_list())
        return self._record(rows[0]) if rows else None

    def profiles(self) -> dict[str, tuple[str, dict[str, int]]]:
        """id -> (profile text, vocabulary), read once per table version."""
        version = self.table.version
        if self._profiles is None or self._profiles[0] != version:
            rows = (self.table.search().select(["id", "profile", "terms", "term_counts"])
                    .limit(None).to_list())
            self._profiles = (version, {
                r["id"]: (r["profile"] or "", dict(zip(r["terms"] or (), r["term_counts"] or ())))
                for r in rows})
        return self._profiles[1]

    def ids(self) -> set[str]:
        return set(self.table.to_arrow().column("id").to_pylist())

    def at_path(self, path: str) -> list[DocRecord]:
        rows = self.table.search().where(f"path = {quote(path)}").to_list()
        return [self._record(r) for r in rows]

    def put(self, records: Sequence[DocRecord],
            vocabularies: Mapping[str, Mapping[str, int]]) -> None:
        """Write (or rewrite) the rows of `records` with their vocabularies (by id), in one
        commit (one table version)."""
        if not records:
            return
        rows = pa.Table.from_pylist(
            [{**asdict(r), "ocr_pages": list(r.ocr_pages),
              "terms": list(vocabularies.get(r.id, {})),
              "term_counts": list(vocabularies.get(r.id, {}).values())} for r in records],
            schema=self.table.schema)
        self.table.merge_insert("id").when_matched_update_all() \
            .when_not_matched_insert_all().execute(rows)

    def files(self) -> set[str]:
        """The stored originals that documents refer to."""
        return set(self.table.search().select(["file"]).limit(None).to_arrow()
                   .column("file").to_pylist())

    def delete(self, doc_id: str) -> None:
        self.table.delete(f"id = {quote(doc_id)}")

    @staticmethod
    def _record(row: dict) -> DocRecord:
        values = {k: row[k] for k in _NAMES}
        values["ocr_pages"] = tuple(values["ocr_pages"] or ())
        values["profile"] = values["profile"] or ""
        return DocRecord(**values)
