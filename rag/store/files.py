"""Named files of the store: the original documents and the queued uploads.

Two places hold them, behind one small interface (`put`, `put_stream`, `read`,
`local_copy`, `size`, `delete`, `entries`):

- `Folder`, for a store on this machine's disk: plain files (`<store>/files`,
  `<store>/uploads`), served straight from disk. A file is written to a
  `.part` name and renamed, so a crash never leaves half a file under a real
  name.
- `BlobTable`, for a store on object storage: a LanceDB table of the store's
  own database (`files`, `uploads`) with one row per file (name, bytes, size,
  created_at). It is opened with the tables' URI and storage options, so
  whatever opens the store (any replica, `rag ask`, `rag ingest`) reads the
  same files; an append is atomic, so there is no `.part` either. Rows of a
  deleted file leave the disk when maintenance compacts the table
  (rag/store/maintenance.py), like deleted chunks.

`Originals` keeps a citation's source document: a stored copy is named by the
document's id (the hash of its bytes) and its suffix. `sweep` removes what
interrupted writes left: `.part` files, and originals no document refers to,
once they are older than a grace period (a writer stores the original before
its document row, so a young unreferenced original may be one in flight).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from rag.store.documents import id_list, quote
from rag.store.migrations import open_or_create
from rag.store.writers import retrying

BLOCK = 1 << 20


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    modified: float  # seconds since the epoch: a file's mtime, a row's created_at


class Folder:
    """Files in a folder of this machine."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _part(self, name: str) -> Path:
        # A name per writer: two processes (or threads) storing one file never share a .part.
        return self.folder / f"{name}.{os.getpid()}.{threading.get_ident()}.part"

    def put(self, name: str, source: Path | bytes) -> None:
        tmp = self._part(name)
        if isinstance(source, (bytes, bytearray)):
            tmp.write_bytes(source)
        else:
            shutil.copyfile(source, tmp)
        tmp.replace(self.folder / name)

    def put_stream(self, name: str, source: BinaryIO, limit: int) -> int:
        """Copy a binary stream, at most `limit` bytes, durably (fsync): its size, or -1
        (nothing kept) when it is longer."""
        part, size = self._part(name), 0
        try:
            with open(part, "wb") as out:
                while chunk := source.read(BLOCK):
                    size += len(chunk)
                    if size > limit:
                        break
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size > limit:
                part.unlink(missing_ok=True)
                return -1
            part.replace(self.folder / name)
            return size
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    def exists(self, name: str) -> bool:
        return bool(name) and (self.folder / name).is_file()

    def path(self, name: str) -> Path:
        return self.folder / name

    def local_path(self, name: str) -> Path | None:
        """The file itself, when it exists (served straight from disk)."""
        return self.folder / name if self.exists(name) else None

    @contextlib.contextmanager
    def local_copy(self, name: str) -> Iterator[Path | None]:
        """A path to read the file at (here: the file itself), None if it is missing."""
        yield self.local_path(name)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.folder / name).read_bytes() if name else None
        except (FileNotFoundError, IsADirectoryError):
            return None

    def size(self, name: str) -> int:
        try:
            return (self.folder / name).stat().st_size if name else 0
        except FileNotFoundError:
            return 0

    def delete(self, name: str) -> None:
        if name:
            (self.folder / name).unlink(missing_ok=True)

    def delete_many(self, names: Iterable[str]) -> None:
        for name in names:
            self.delete(name)

    def entries(self, names: Iterable[str] | None = None) -> list[Entry]:
        """The files (only `names`, if given), skipping any removed meanwhile."""
        paths = self.folder.iterdir() if names is None else (self.folder / n for n in names if n)
        out = []
        for path in paths:
            try:
                stat = path.stat()
            except FileNotFoundError:  # another process removed it
                continue
            if path.is_file():
                out.append(Entry(path.name, stat.st_size, stat.st_mtime))
        return out

    def free_bytes(self) -> int | None:
        return shutil.disk_usage(self.folder).free


BLOBS = pa.schema([pa.field("name", pa.string()), pa.field("data", pa.large_binary()),
                   pa.field("size", pa.int64()), pa.field("created_at", pa.float64())])


class BlobTable:
    """Files as rows of a LanceDB table of the store (the store is on object storage)."""

    folder = None  # nothing on this machine's disk

    def __init__(self, db, name: str):
        self.table = open_or_create(db, name, BLOBS)

    def put(self, name: str, source: Path | bytes) -> None:
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else \
            Path(source).read_bytes()
        self._add(name, data)

    def put_stream(self, name: str, source: BinaryIO, limit: int) -> int:
        """Store a binary stream of at most `limit` bytes: its size, or -1 (nothing kept)
        when it is longer. The bytes are held in memory for the one append."""
        data = source.read(limit + 1)
        if len(data) > limit:
            return -1
        self._add(name, data)
        return len(data)

    def _add(self, name: str, data: bytes) -> None:
        row = pa.table({"name": [name], "data": [data], "size": [len(data)],
                        "created_at": [time.time()]}, schema=BLOBS)
        retrying(lambda: self.table.add(row))

    def exists(self, name: str) -> bool:
        return bool(name) and self.table.count_rows(f"name = {quote(name)}") > 0

    def path(self, name: str) -> Path:
        raise FileNotFoundError(f"{name}: kept in the store's tables, not in a folder")

    def local_path(self, name: str) -> Path | None:
        return None

    @contextlib.contextmanager
    def local_copy(self, name: str) -> Iterator[Path | None]:
        """A temporary copy on this machine (loaders read files), removed afterwards;
        None if the file is missing. It keeps the stored name: loaders read its suffix."""
        data = self.read(name)
        if data is None:
            yield None
            return
        folder = Path(tempfile.mkdtemp(prefix="rag-file-"))
        try:
            path = folder / name
            path.write_bytes(data)
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def read(self, name: str) -> bytes | None:
        """The file's bytes, None if it is not stored. A miss looks at the latest version
        before it says so: another replica may have stored it a moment ago, within the
        handle's READ_CONSISTENCY_S (an upload accepted there, a document's original)."""
        if not name:
            return None
        for attempt in range(2):
            found = self.table.search().where(f"name = {quote(name)}").select(["data"]) \
                .limit(1).to_arrow()
            if found.num_rows or attempt:
                break
            self.table.checkout_latest()
        return found.column("data")[0].as_py() if found.num_rows else None

    def size(self, name: str) -> int:
        found = self.entries([name])
        return found[0].size if found else 0

    def delete(self, name: str) -> None:
        if name:
            self.delete_many([name])

    def delete_many(self, names: Iterable[str]) -> None:
        names = sorted({n for n in names if n})
        if names:
            retrying(lambda: self.table.delete(f"name IN ({id_list(names)})"))

    def entries(self, names: Iterable[str] | None = None) -> list[Entry]:
        query = self.table.search()
        if names is not None:
            wanted = sorted({n for n in names if n})
            if not wanted:
                return []
            query = query.where(f"name IN ({id_list(wanted)})")
        rows = query.select(["name", "size", "created_at"]).limit(None).to_list()
        return [Entry(r["name"], r["size"], r["created_at"]) for r in rows]

    def free_bytes(self) -> int | None:
        return None  # object storage has no free space to keep


Files = Folder | BlobTable


class Originals:
    """The stored original of each document (in a `Folder` or a `BlobTable`)."""

    def __init__(self, files: Files | Path):
        self.files = Folder(files) if isinstance(files, Path) else files
        self.folder = self.files.folder  # None when the store is on object storage

    def keep(self, doc_id: str, name: str, source: Path | bytes | None) -> str:
        """Store the original (bytes, or a file copied once); the stored name."""
        stored = f"{doc_id}{Path(name).suffix.lower()[:10]}"
        if source is None:
            return stored
        if self.files.exists(stored) and (self.folder is None
                                          or not isinstance(source, (bytes, bytearray))):
            return stored  # the same name is the same bytes
        self.files.put(stored, source)
        return stored

    def path(self, stored: str) -> Path:
        return self.files.path(stored)

    def local_path(self, stored: str) -> Path | None:
        return self.files.local_path(stored)

    def read(self, stored: str) -> bytes | None:
        return self.files.read(stored)

    def size(self, stored: str) -> int:
        return self.files.size(stored)

    def delete(self, stored: str) -> None:
        self.files.delete(stored)

    def sweep(self, referenced: Container[str], grace_s: float) -> list[str]:
        """Delete `.part` leftovers and originals not in `referenced` that are older than
        `grace_s` seconds; the names deleted."""
        cutoff = time.time() - grace_s
        doomed = [e.name for e in self.files.entries()
                  if e.name not in referenced and e.modified < cutoff]
        self.files.delete_many(doomed)
        return doomed

    def total_bytes(self, names: Iterable[str] | None = None) -> int:
        """Bytes of the stored originals (of `names` only, if given)."""
        return sum(e.size for e in self.files.entries(names))
