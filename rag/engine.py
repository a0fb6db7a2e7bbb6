"""The generation engine: one thread owns the model; requests decode together.

(Stub: the interface the rest of the code programs against; the batching
engine replaces this body.)
"""

from __future__ import annotations

from typing import Any, Protocol

from rag.streams import GenRequest, GenStream


class Engine(Protocol):
    name: str
    tokenizer: Any  # what prompts are counted and rendered with (rag/prompt.py)

    def submit(self, request: GenRequest) -> GenStream:
        """Queue a request; raises streams.Busy when the queue is full."""

    def stats(self) -> dict[str, Any]:
        """At least {"running": n, "waiting": n}."""

    def close(self) -> None:
        """Finish every stream (finish="cancelled") and stop the engine's thread."""
