"""Who wrote a chunk row (or holds a job), whether that writer is provably gone, and
retrying a write that lost a commit race.

Every chunk row records `writer`, "host:pid:start": the machine (its host name,
plus the pid namespace on Linux, so two containers that share a host name are
still told apart), the process id and the process's start time. The orphan
sweep (rag/store/__init__.py) deletes a document's leftover chunks only when
their writer is provably dead or they are older than a grace period: a writer
that is still running may be between its chunks and its document row.

Provably dead means: the same machine, and no process with that id, or one
with another start time (the id was reused). A writer on another machine can
never be proven dead from here; its leftovers wait for the grace period.
Without /proc (macOS) the start time is unknown and only a missing pid counts.

The same string names a web replica when it claims an upload job
(rag/store/jobs.py): a restarted replica is a new writer, and on the same
machine it can prove its predecessor dead and take over that one's jobs at once.

Commit races: LanceDB commits a write as the next table version, and when
another process committed first it checks the two for conflicts and retries by
itself (appends never conflict; deletes and updates of other rows are
rebased; an update whose rows changed is re-run). `retrying` covers the rare
case where its own retries run out under heavy contention: the write did not
happen, and writing it again is safe for every write the store makes (appends
of new rows, deletes and updates by condition, upserts by id).
"""

from __future__ import annotations

import functools
import os
import random
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
# What lance says when a commit lost its race and its own retries did not settle it.
_CONFLICT = re.compile(r"commit conflict|concurrent writ|write contention", re.I)


def _proc_start(pid: int) -> str:
    """The process's start time in seconds since the epoch (2 decimals), "" if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration):
        return ""
    # Field 22 (starttime, clock ticks since boot) counts from the ')' closing the name.
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return f"{int(boot.split()[1]) + ticks / os.sysconf('SC_CLK_TCK'):.2f}"


@functools.cache
def machine() -> str:
    name = socket.gethostname().replace(":", "_") or "localhost"
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return name
    return f"{name}/{''.join(c for c in namespace if c.isdigit())}"


def identity(pid: int | None = None) -> str:
    """This process's writer string (or that of `pid` on this machine)."""
    pid = os.getpid() if pid is None else pid
    return f"{machine()}:{pid}:{_proc_start(pid)}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def provably_dead(writer: str) -> bool:
    """True only when `writer` ran on this machine and is certainly no longer running."""
    parts = writer.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != machine() or not parts[1].isdigit():
        return False
    pid, start = int(parts[1]), parts[2]
    if pid == 0:
        return False
    if not _running(pid):
        return True
    now = _proc_start(pid)
    return bool(start and now and now != start)


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, (RuntimeError, OSError, ValueError)) and bool(
        _CONFLICT.search(str(exc)))


def retrying(write: Callable[[], T], attempts: int = 6, pause: float = 0.05) -> T:
    """`write()`, again (with a growing random pause) while it fails with a commit
    conflict; any other error, or the last conflict, is raised."""
    for attempt in range(attempts):
        try:
            return write()
        except (RuntimeError, OSError, ValueError) as exc:
            if attempt == attempts - 1 or not is_conflict(exc):
                raise
            time.sleep(pause * (2 ** attempt) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")
