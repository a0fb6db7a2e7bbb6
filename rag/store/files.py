"""Original files, kept beside the tables so a citation can open the document itself.

A stored copy is named by the document's id (the hash of its bytes) and its
suffix; a copy is written to `NAME.part` and renamed, so a crash never leaves a
half-written original under a real name (`sweep` removes the leftovers).
"""

from __future__ import annotations

import shutil
from pathlib import Path


class Originals:
    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)

    def keep(self, doc_id: str, name: str, source: Path | bytes | None) -> str:
        """Store the original (bytes, or a file copied once); the stored name."""
        stored = f"{doc_id}{Path(name).suffix.lower()[:10]}"
        target = self.folder / stored
        if isinstance(source, (bytes, bytearray)):
            target.write_bytes(source)
        elif source is not None and not target.exists():
            tmp = self.folder / (stored + ".part")
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

    def sweep(self) -> None:
        for path in self.folder.glob("*.part"):
            path.unlink(missing_ok=True)
