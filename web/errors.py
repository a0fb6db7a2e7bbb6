"""What a client may read of a failure: one line, no internal paths.

Storage libraries put their own source locations and the store's paths in
their messages ("... /root/.cargo/registry/src/.../commit.rs:120:9"); a client
gets the reason only, and the full text goes to the server's log under the
request's id.
"""

from __future__ import annotations

import errno
import re

_FULL = ("no space left on device", "disk quota exceeded", "file too large")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/|\\)[^\s,;:'\")]+(?::\d+)*")


def is_storage_full(exc: BaseException) -> bool:
    """A full disk (or quota), whichever layer reported it."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        if any(words in str(exc).lower() for words in _FULL):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def storage_error_text(exc: BaseException) -> str:
    """One line for a client: "storage full: ..." for a full disk, else the reason
    without paths."""
    if is_storage_full(exc):
        return "storage full: no space left for the store; delete documents or free disk space"
    if isinstance(exc, OSError) and exc.strerror:
        return f"storage error: {exc.strerror.lower()}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = _PATH.sub("<path>", text)
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."
