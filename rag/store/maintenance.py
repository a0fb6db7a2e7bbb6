"""Store maintenance: compaction, index folding and removal of old versions, on a schedule.

What a write leaves. Every LanceDB write (an append, a delete, an upsert) adds
a version: a manifest listing every fragment (data file) of the table, about
100 bytes per fragment, plus the new files. An append of one document is one
small fragment; nothing is rewritten. New rows are searchable at once (the
indexes cover unindexed rows by a flat scan), so after an ingestion the store
only needs its indexes to exist (Chunks.refresh_indexes).

What maintenance does. lancedb 0.40 has one tool, `Table.optimize`, which in
one call (1) compacts: merges adjacent fragments of under a million rows that
the same indexes cover, so below a million chunks it rewrites nearly the
whole table; (2) removes the versions older than `cleanup_older_than`, with
the files only they use; (3) folds unindexed rows into the indexes. Run after
every ingestion (as before) it rewrote the whole table per upload, and with
the default cleanup of 7 days every rewrite stayed on disk for a week: a store
of 140 MB held 7.3 GB.

The schedule (`due`). Optimizing a table below a million rows costs about
its size in rewritten bytes, which stay on disk until a later cleanup. Not
optimizing costs the manifests: each new version lists every fragment, so k
small appends since the last optimization write about k * k / 2 * 100 bytes
of manifests, quadratic in k. A table is optimized when either cost passes
the other's share (the rent-or-buy balance):

- the manifests written since the last optimization reach OVERHEAD (half) of
  the table's bytes: many small appends (one per uploaded document). Then an
  optimization comes every sqrt(2 * 0.5 * size / 100) appends: about 400 for a
  17 MB table of 1,000 small documents; it rewrites size / k per append
  (30 KB per small upload there, 140 MB per upload before);
- the rows outside its largest fragment reach GROWTH (half) of that fragment:
  large appends (`rag ingest` of a folder). Rewrites are then geometric: over a
  table's life, at most 1 + 1/GROWTH = 3 times its final size;
- deleted rows still on disk reach GROWTH of the live rows.

Each of these bounds what the store holds beyond its live data: a pre-image
of at most one table size, and manifests of at most OVERHEAD of it per cycle.
A single optimize leaves the old fragments and the newly merged ones side by
side (lance never merges indexed with unindexed fragments); a second one
merges those, so a table leaves maintenance as one fragment per million rows.
`Store.maintain()` checks every table (about a millisecond each when nothing
is due); the web server calls it on its ingestion worker between jobs,
`rag ingest` at the end of a run.

Cleanup (`cleanup_age`). A version may be removed once it was *superseded*
more than KEEP_S ago. LanceDB's own cutoff looks at when a version was
written, so a version written a day ago and replaced a second ago would go at
once, under a reader that just opened it; we compute the age that spares it.
KEEP_S is 20 seconds: a reader holds a version for one query (milliseconds;
a flat scan of 100k chunks takes seconds) after checking for a newer one at
most READ_CONSISTENCY_S (5 s) earlier; a writer holds one for one append or
delete (a compaction's own time is added to the cutoff, COMPACT_BYTES_PER_S).
Longer is not free: every version inside the window stays on disk, and with
uploads arriving several a second a minute's window kept the previous
compaction's pre-image too (disk 4-5x live data in `rag bench storage`). Cleanup runs inside
an optimization (lancedb 0.40 has no cleanup alone without the `pylance`
package). Data files of an unfinished write belong to no version and are
never touched (LanceDB keeps unreferenced files for 7 days unless told
otherwise, and we never tell it).

Live data (what `live_bytes` counts): the Arrow size of the rows of the latest
version of every table (deleted rows excluded), plus the size of every index,
plus the originals (rag/store/files.py) that documents refer to. Disk is
everything under the store folder (`disk_bytes`).

On object storage the same schedule runs (every replica calls it between jobs;
two optimizing one table at once cost a wasted compaction, never data: the
loser's commit conflicts and it stops until next time). The original files and
queued uploads are tables there too (`files`, `uploads`), so deleted ones leave
storage by the same compaction and cleanup. Sizes come from `Table.stats()` (the
latest version's files): listing every object of a bucket to measure old
versions would cost a request per thousand objects.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

log = logging.getLogger("rag.store")

GROWTH = 0.5  # optimize a table once it grew by half (rows outside its largest fragment)
OVERHEAD = 0.5  # ... or once the manifests written since reach half its bytes
MANIFEST_BYTES = 100  # per fragment per version (measured: 27 KB manifests of 250 fragments)
KEEP_S = 20.0  # a version superseded longer ago than this may be removed
# Inside `optimize` the cutoff is taken after the compaction: allow for it, slowly
# (measured here: 11 MB compacted in 0.55 s, 20 MB/s).
COMPACT_BYTES_PER_S = 5e6
READ_CONSISTENCY_S = 5.0  # a table handle looks for a newer version at most this late


@dataclass
class TableMaintenance:
    table: str
    reason: str  # why it was optimized
    seconds: float
    fragments_before: int
    fragments_after: int
    bytes_before: int  # of the table's folder
    bytes_after: int
    error: str = ""  # why it stopped (a commit conflict with another writer: next time)


@dataclass
class Maintenance:
    """What `Store.maintain()` did: one entry per table it optimized."""
    tables: list[TableMaintenance] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.tables)

    def __str__(self) -> str:
        if not self.tables:
            return "nothing due"
        return "; ".join(f"{t.table}: {t.reason}, {t.fragments_before} -> {t.fragments_after}"
                         f" fragments, {t.bytes_before / 1e6:.1f} -> {t.bytes_after / 1e6:.1f} MB"
                         f" in {t.seconds:.2f} s" + (f" ({t.error})" if t.error else "")
                         for t in self.tables)


def due(stats) -> str | None:
    """Why the table should be optimized now (from `Table.stats()`), or None."""
    fragments = stats["fragment_stats"]["num_fragments"]
    lengths = stats["fragment_stats"]["lengths"]
    live, largest = stats["num_rows"], lengths["max"]
    appends = fragments - 1 - live // (1 << 20)  # beyond one per million rows
    manifests = appends * (appends + 1) // 2 * MANIFEST_BYTES
    if appends >= 1 and manifests >= OVERHEAD * stats["total_bytes"]:
        return f"{fragments} fragments (~{manifests / 1e6:.1f} MB of manifests since)"
    if fragments >= 2 and live - largest >= GROWTH * largest:
        return f"grew by {live - largest} rows beside {largest}"
    # Rows in data files, deleted ones included, from the mean length (an integer: off
    # by up to one row per fragment).
    deleted = lengths["mean"] * fragments - live
    if deleted > fragments and deleted >= GROWTH * live:
        return f"~{deleted} deleted rows beside {live} live"
    return None


def cleanup_age(timestamps: list[float], now: float, keep_s: float = KEEP_S,
                margin_s: float = 0.1) -> timedelta:
    """The `cleanup_older_than` that removes only versions superseded more than `keep_s` ago.

    `timestamps`: when each version was written, oldest first. LanceDB removes the
    versions written before now - age (never the latest). Version i was superseded
    when version i + 1 was written; so keep the newest version written more than
    `keep_s` ago (those after it replaced it recently) and remove the ones before it.
    `margin_s` covers the time between this call and LanceDB's reading of its clock
    (after the compaction that comes first in `optimize`).
    """
    settled = [t for t in timestamps if t <= now - keep_s]
    oldest_kept = settled[-1] if settled else min(timestamps, default=now)
    return timedelta(seconds=max(now - oldest_kept + margin_s, keep_s))


def optimize(table, name: str, folder: Path | None, reason: str,
             keep_s: float = KEEP_S) -> TableMaintenance:
    """Compact `table`, fold its indexes and remove versions superseded over `keep_s` ago.
    `folder`: the table's folder, to measure; None on object storage (see above)."""
    def size() -> int:
        return disk_bytes(folder) if folder is not None else table.stats()["total_bytes"]

    started = time.perf_counter()
    before, size_before, error = _fragments(table), size(), ""
    try:
        for _ in range(2):  # the second merges what the first merged beside the old fragments
            stamps = sorted(v["timestamp"].timestamp() for v in table.list_versions())
            margin = 0.1 + table.stats()["total_bytes"] / COMPACT_BYTES_PER_S
            table.optimize(cleanup_older_than=cleanup_age(stamps, time.time(), keep_s, margin))
            if _fragments(table) <= 1:
                break
    except RuntimeError as exc:  # lance's errors; a write that lost a race commits nothing
        error = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("maintenance of %s stopped: %s", name, error)
    return TableMaintenance(table=name, reason=reason, seconds=time.perf_counter() - started,
                            fragments_before=before, fragments_after=_fragments(table),
                            bytes_before=size_before, bytes_after=size(),
                            error=error)


def _fragments(table) -> int:
    return table.stats()["fragment_stats"]["num_fragments"]


def disk_bytes(folder: Path) -> int:
    """Bytes of every file under `folder` (what `du` counts, less block rounding)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except FileNotFoundError:  # removed by a cleanup while we walked
                pass
    return total


def table_live_bytes(table) -> int:
    """Arrow size of the latest version's rows, plus the size of its indexes."""
    indexes = sum(getattr(i, "size_bytes", 0) or 0 for i in table.list_indices())
    return table.to_arrow().nbytes + indexes
