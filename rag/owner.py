"""One thread that owns a piece of work: callers hand it calls and wait for the results.

The embedder's MLX and NumPy work all happens on its owner's thread (MLX streams
belong to one thread, and two callers must not interleave on one model).
Interactive calls (a question's embedding, citation checks) have priority 0
and run before bulk ones (ingestion, priority 1), which are cut into slices so
that a question never waits behind a whole document. While `yield_to()` says
answers are being generated, bulk slices run at a lower duty cycle, leaving
the cores to the generator (ingestion yields to answering, never the reverse).

MLX keeps per-thread streams whose C++ threads must be released while the
interpreter still runs (`mx.clear_streams()`, on the thread that used them, the
main thread included): left to process teardown they abort it now and then
("terminate called without an active exception"). `at_exit` stops an MLX thread
before the interpreter finalizes, after which the main thread releases its own.
"""

from __future__ import annotations

import atexit
import itertools
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

INTERACTIVE, BULK = 0, 1
_STOP = -1  # priority of the stop request: ahead of any waiting work

_main_release_registered = False
_registration = threading.Lock()


def release_mlx_streams() -> None:
    """Free the calling thread's MLX streams (no-op where MLX was never imported)."""
    mx = sys.modules.get("mlx.core")
    if mx is not None and hasattr(mx, "clear_streams"):
        mx.clear_streams()


def at_exit(stop: Callable[[], None]) -> None:
    """Run `stop` (which ends an MLX-using thread) at interpreter exit, before the
    main thread releases its own MLX streams (atexit runs last-registered first)."""
    global _main_release_registered
    with _registration:
        if not _main_release_registered:
            atexit.register(release_mlx_streams)
            _main_release_registered = True
    atexit.register(stop)


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

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread (work still queued is dropped) and release its MLX streams."""
        with self._lock:
            thread = self._thread
        if thread is None or thread is threading.current_thread() or not thread.is_alive():
            return
        self._queue.put((_STOP, next(self._order), None, (), Future()))
        thread.join(timeout)

    def pending(self) -> int:
        """Calls waiting for the owner's thread."""
        return self._queue.qsize()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
                at_exit(self.close)

    def _loop(self) -> None:
        try:
            self._serve()
        finally:
            release_mlx_streams()

    def _serve(self) -> None:
        while True:
            priority, _, fn, args, future = self._queue.get()
            if priority == _STOP:
                return
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
