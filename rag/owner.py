"""One thread that owns a piece of work: callers hand it calls and wait for the results.

The embedder's MLX and NumPy work all happens on its owner's thread (MLX streams
belong to one thread, and two callers must not interleave on one model).
Interactive calls (a question's embedding, citation checks) have priority 0
and run before bulk ones (ingestion, priority 1), which are cut into slices so
that a question never waits behind a whole document. While `yield_to()` says
answers are being generated, bulk slices run at a lower duty cycle, leaving
the cores to the generator (ingestion yields to answering, never the reverse).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

INTERACTIVE, BULK = 0, 1


class Owner:
    def __init__(self, name: str, yield_to: Callable[[], bool] = lambda: False):
        self.name = name
        self.yield_to = yield_to
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.yielded_s = 0.0  # time bulk work spent waiting for answers (benchmarks)

    def run(self, fn: Callable[..., Any], *args: Any, priority: int = INTERACTIVE) -> Any:
        """fn(*args) on the owner's thread; its result or its exception."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        future: Future = Future()
        self._queue.put((priority, next(self._order), fn, args, future))
        self._start()
        return future.result()

    def pending(self) -> int:
        """Calls waiting for the owner's thread."""
        return self._queue.qsize()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            priority, _, fn, args, future = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            start = time.perf_counter()
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)
            if priority == BULK and self.yield_to():
                # Give the generator as long again as the slice took (50% duty cycle),
                # unless a question is waiting for this thread.
                pause = time.perf_counter() - start
                self.yielded_s += pause
                deadline = time.monotonic() + pause
                while time.monotonic() < deadline and not self._interactive_waiting():
                    time.sleep(0.01)

    def _interactive_waiting(self) -> bool:
        with self._queue.mutex:
            return bool(self._queue.queue) and self._queue.queue[0][0] == INTERACTIVE
