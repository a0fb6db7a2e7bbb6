"""What a generator engine takes and gives back, for the in-process and the remote engine.

A caller submits a `GenRequest` and gets a `GenStream`: an iterator of
`GenEvent`s, usable from a thread (`for event in stream`) or from an event
loop (`async for event in stream`, never blocking it). The engine's own thread
feeds the stream; the caller never runs model code. The last event has
`finish` set: "stop" (end of text), "length" (max_tokens), "cancelled",
"timeout" (the request's time limit) or "error" (with a one-line `error`).
Closing or cancelling a stream takes its sequence out at the engine's next step.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GenRequest:
    tokens: list[int]  # the rendered prompt (in-process engine)
    max_tokens: int
    temperature: float = 0.0
    prefix_len: int = 0  # leading tokens every prompt shares (their KV cache is reused)
    time_limit_s: float | None = None  # None: the engine's default
    # For chat endpoints (remote engine): the same prompt as messages.
    messages: tuple[dict, ...] = ()


@dataclass(frozen=True)
class GenEvent:
    text: str = ""
    tokens: tuple[int, ...] = ()  # the token ids behind `text` (stop tokens never appear)
    finish: str | None = None  # see the module doc
    error: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    generation_tokens: int = 0
    prompt_tps: float = 0.0
    generation_tps: float = 0.0


class Busy(RuntimeError):
    """The engine's queue is full; try again after `retry_after` seconds."""

    def __init__(self, reason: str, retry_after: float = 1.0):
        super().__init__(reason)
        self.retry_after = retry_after


class EngineError(RuntimeError):
    """The engine failed (a remote endpoint down, a model error); the message is one line."""


@dataclass
class GenStream:
    """The events of one request, fed by the engine's thread."""

    on_cancel: Callable[[GenStream], None] = lambda stream: None
    _queue: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    _loop: asyncio.AbstractEventLoop | None = None
    _async: asyncio.Queue | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    cancelled: bool = False
    finished: bool = False

    def put(self, event: GenEvent) -> None:
        """Called by the engine (any thread)."""
        with self._lock:  # one lock with _aiter's switch, so no event falls between the two
            if self.finished:
                return
            self.finished = event.finish is not None
            loop, target = self._loop, self._async
            if loop is None:
                self._queue.put(event)
                return
        try:
            loop.call_soon_threadsafe(target.put_nowait, event)
        except RuntimeError:  # the caller's event loop is closed: nobody is listening
            self.cancel()

    def cancel(self) -> None:
        if not self.cancelled and not self.finished:
            self.cancelled = True
            self.on_cancel(self)

    close = cancel

    def __iter__(self) -> Iterator[GenEvent]:
        try:
            while True:
                event = self._queue.get()
                yield event
                if event.finish is not None:
                    return
        finally:
            self.cancel()

    def __aiter__(self) -> AsyncIterator[GenEvent]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[GenEvent]:
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._async = asyncio.Queue()
            while not self._queue.empty():  # events put before we started listening
                self._async.put_nowait(self._queue.get())
        try:
            while True:
                event = await self._async.get()
                yield event
                if event.finish is not None:
                    return
        finally:
            self.cancel()
