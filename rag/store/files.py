"""Original files, kept beside the tables so a citation can open the document itself.

A stored copy is named by the document's id (the hash of its bytes) and its
suffix; a copy is written to `NAME.part` and renamed, so a crash never leaves a
half-written original under a real name. `sweep` removes what interrupted
writes left: `.part` files, and originals no document refers to, once they are
older than a grace period (a writer stores the original before its document
row, so a young unreferenced original may be one in flight).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Container, Iterable
from pathlib import Path


class Originals:
    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)

    def keep(self, doc_id: str, name: str, source: Path | bytes | None) -> str:
        """Store the original (bytes, or a file copied once); the stored name."""
        stored = f"{doc_id}{Path(name).suffix.lower()[:10]}"
        target = self.folder / stored
        if source is None or (target.exists() and not isinstance(source, (bytes, bytearray))):
            return stored
        # A name per writer: two processes storing the same document never share a .part.
        tmp = self.folder / f"{stored}.{os.getpid()}.part"
        if isinstance(source, (bytes, bytearray)):
            tmp.write_bytes(source)
        else:
            shutil.copyfile(source, tmp)
        tmp.replace(target)
        return stored

    def path(self, stored: str) -> Path:
        return self.folder / stored

    def size(self, stored: str) -> int:
        target = self.folder / stored
        return target.stat().st_size if target.exists() else 0

    def delete(self, stored: str) -> None:
        if stored:
            (self.folder / stored).unlink(missing_ok=True)

    def sweep(self, referenced: Container[str], grace_s: float) -> list[str]:
        """Delete `.part` leftovers and originals not in `referenced` that are older than
        `grace_s` seconds; the names deleted."""
        cutoff = time.time() - grace_s
        removed = []
        for path in self.folder.iterdir():
            if path.name in referenced or not path.is_file():
                continue
            try:
                old = path.stat().st_mtime < cutoff
            except FileNotFoundError:  # another process swept it first
                continue
            if old:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed

    def total_bytes(self, names: Iterable[str] | None = None) -> int:
        """Bytes of the stored originals (of `names` only, if given)."""
        paths = self.folder.iterdir() if names is None else (self.folder / n for n in names if n)
        return sum(p.stat().st_size for p in paths if p.is_file())
