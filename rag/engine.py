"""The generation engine: one thread owns the model, and requests decode together.

Every MLX call for the generator happens on the engine's thread (MLX streams
are per thread, and one model must not be evaluated from two at once). Callers
`submit()` a GenRequest and read a GenStream (rag/streams.py) from any thread or
event loop. The thread runs mlx-lm's BatchGenerator (continuous batching): a
new request is prefilled in steps of `prefill_step` tokens between decode
steps, then joins the running batch (a burst that arrives while nothing is
decoding is prefilled side by side, see PREFILL_BATCH); a cancelled or timed-out request leaves
it at the next step and its KV cache is freed. Each sequence starts from a copy
of the shared system-prefix cache (rag/generate.py), so prefill covers only the
sources and the question.

Bounds: `max_running` sequences decode together; `max_waiting` more may wait;
past that `submit` raises Busy at once (the web app answers 503).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from rag.generate import Generator
from rag.owner import at_exit, release_mlx_streams
from rag.streams import Busy, EngineError, GenEvent, GenRequest, GenStream

log = logging.getLogger("rag.engine")
# Prompts prefilled side by side while answers are being decoded: each prefill step
# costs their tokens together, so more of them would stall the readers longer. When
# nothing is decoding yet (a burst of questions), every waiting prompt is prefilled
# together: nobody is reading, and batched decoding then starts for all at once
# (`rag bench serve`, 8 questions at once: decode rate 17 -> 36 tokens/s, the round's
# wall time unchanged, the median first token 12.6 -> 20.9 s).
PREFILL_BATCH = 2


class Engine(Protocol):
    name: str
    tokenizer: Any  # what prompts are counted and rendered with (rag/prompt.py)

    def submit(self, request: GenRequest) -> GenStream:
        """Queue a request; raises streams.Busy when the queue is full."""

    def stats(self) -> dict[str, Any]:
        """At least {"running": n, "waiting": n}."""

    def busy(self) -> bool:
        """Whether any request is being answered (ingestion yields while it is)."""

    def close(self) -> None:
        """Finish every stream (finish="cancelled") and stop the engine."""


@dataclass
class _Sequence:
    stream: GenStream
    request: GenRequest
    deadline: float
    submitted: float
    uid: int = -1
    detokenizer: Any = None
    cached: int = 0
    first_token: float = 0.0
    tokens: int = 0
    text_len: int = 0
    pending: list = field(default_factory=list)  # token ids not yet sent


@dataclass
class LocalEngine:
    generator: Generator
    max_running: int = 8
    max_waiting: int = 32
    prefill_step: int = 256
    time_limit_s: float = 600.0
    name: str = ""
    _waiting: deque = field(default_factory=deque)
    _active: dict = field(default_factory=dict)  # uid -> _Sequence
    _cancelled: set = field(default_factory=set)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _closed: bool = False
    _thread: threading.Thread | None = None
    steps: int = 0  # engine steps run (tests count these, not seconds)

    def __post_init__(self) -> None:
        self.name = self.name or self.generator.name
        self.tokenizer = self.generator.tokenizer
        self._thread = threading.Thread(target=self._run, name="rag-engine", daemon=True)
        self._thread.start()
        # Stop the thread (it releases its MLX streams) before the interpreter ends.
        at_exit(self.close)

    # -- callers' side (any thread) ------------------------------------------
    def submit(self, request: GenRequest) -> GenStream:
        if not request.tokens:
            raise ValueError("prompt: no tokens")
        if request.max_tokens < 1:
            raise ValueError("max_tokens: at least 1")
        stream = GenStream(on_cancel=self._cancel)
        now = time.monotonic()
        limit = request.time_limit_s or self.time_limit_s
        with self._cond:
            if self._closed:
                raise EngineError("the generation engine is stopped")
            queued = len(self._waiting) + len(self._active)
            if queued >= self.max_running + self.max_waiting:
                raise Busy(f"busy: {len(self._active)} answers running and"
                           f" {len(self._waiting)} waiting; try again shortly",
                           retry_after=max(1.0, min(30.0, len(self._waiting) * 2.0)))
            self._waiting.append(_Sequence(stream, request, now + limit, now))
            self._cond.notify()
        return stream

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"running": len(self._active), "waiting": len(self._waiting),
                    "max_running": self.max_running, "max_waiting": self.max_waiting,
                    "steps": self.steps, "prefix_hits": self.generator.prefix_hits}

    def busy(self) -> bool:
        with self._cond:
            return bool(self._active or self._waiting)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def _cancel(self, stream: GenStream) -> None:
        with self._cond:
            self._cancelled.add(id(stream))
            self._cond.notify()

    # -- the engine's thread -------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        finally:
            release_mlx_streams()

    def _serve(self) -> None:
        batch = None
        while True:
            with self._cond:
                while not (self._closed or self._waiting or self._active or self._cancelled):
                    self._cond.wait()
                if self._closed:
                    break
                cancelled, self._cancelled = self._cancelled, set()
                room = self.max_running - len(self._active)
                new = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                self._drop_waiting(cancelled)
            try:
                batch = batch or self._batch()
                self._retire(batch, cancelled)
                for seq in new:
                    self._insert(batch, seq, cancelled)
                if self._active:
                    decoding = any(seq.tokens for seq in self._active.values())
                    batch.prefill_batch_size = PREFILL_BATCH if decoding else self.max_running
                    self._step(batch)
            except Exception as exc:  # noqa: BLE001 - every stream hears of it; the engine goes on
                log.exception("generation engine step failed")
                reason = f"generation failed: {' '.join(str(exc).split())[:300]}"
                self._fail_all(reason)
                for seq in new:  # taken from the queue but not in the batch yet
                    seq.stream.put(GenEvent(finish="error", error=reason))
                batch = None
        self._fail_all("", finish="cancelled")
        with self._cond:
            for seq in self._waiting:
                seq.stream.put(GenEvent(finish="cancelled"))
            self._waiting.clear()

    def _batch(self):
        import mlx.core as mx
        from mlx_lm.generate import BatchGenerator

        # A stream made on this thread: MLX streams belong to the thread that made them.
        eos = [[t] for t in self.generator.eos_ids]
        return BatchGenerator(self.generator.model, max_tokens=512, stop_tokens=eos,
                              completion_batch_size=self.max_running,
                              prefill_batch_size=PREFILL_BATCH,
                              prefill_step_size=self.prefill_step,
                              stream=mx.new_stream(mx.default_device()))

    def _drop_waiting(self, cancelled: set) -> None:
        """(Under the lock) Finish waiting requests that were cancelled."""
        keep = deque()
        for seq in self._waiting:
            if id(seq.stream) in cancelled:
                seq.stream.put(GenEvent(finish="cancelled"))
            else:
                keep.append(seq)
        self._waiting = keep

    def _insert(self, batch, seq: _Sequence, cancelled: set) -> None:
        from mlx_lm.sample_utils import make_sampler

        if id(seq.stream) in cancelled:
            seq.stream.put(GenEvent(finish="cancelled"))
            return
        tokens = list(seq.request.tokens)
        prefix = min(seq.request.prefix_len, len(tokens) - 1)  # at least one token to prefill
        cache = self.generator.prefix_cache(tokens[:prefix]) if prefix > 0 else None
        seq.cached = max(prefix, 0)
        sampler = make_sampler(temp=seq.request.temperature)
        (seq.uid,) = batch.insert([tokens[seq.cached:]], max_tokens=[seq.request.max_tokens],
                                  caches=[cache] if cache is not None else None,
                                  samplers=[sampler])
        seq.detokenizer = self.tokenizer.detokenizer
        with self._cond:
            self._active[seq.uid] = seq

    def _retire(self, batch, cancelled: set) -> None:
        """Take cancelled and timed-out sequences out of the batch (their caches go too)."""
        now = time.monotonic()
        gone = []
        for seq in list(self._active.values()):
            if id(seq.stream) in cancelled:
                gone.append((seq, GenEvent(finish="cancelled")))
            elif now > seq.deadline:
                limit = seq.deadline - seq.submitted
                gone.append((seq, self._final(seq, "timeout",
                                              f"stopped after the {limit:.0f} s time limit")))
        if not gone:
            return
        batch.remove([seq.uid for seq, _ in gone])
        with self._cond:
            for seq, _ in gone:
                self._active.pop(seq.uid, None)
        for seq, event in gone:
            seq.stream.put(event)

    def _step(self, batch) -> None:
        _, responses = batch.next()
        self.steps += 1
        now = time.monotonic()
        for r in responses:
            seq = self._active.get(r.uid)
            if seq is None:
                continue
            if seq.tokens == 0:
                seq.first_token = now
            seq.tokens += 1
            if r.finish_reason != "stop":  # a stop token is never shown
                seq.detokenizer.add_token(r.token)
                seq.pending.append(r.token)
            if r.finish_reason is not None:
                seq.detokenizer.finalize()
            text = seq.detokenizer.text[seq.text_len:]
            seq.text_len += len(text)
            if r.finish_reason is None:
                if text:
                    seq.stream.put(GenEvent(text=text, tokens=tuple(seq.pending)))
                    seq.pending.clear()
                continue
            with self._cond:
                self._active.pop(r.uid, None)
            seq.stream.put(self._final(seq, r.finish_reason, text=text))

    def _final(self, seq: _Sequence, finish: str, error: str = "", text: str = "") -> GenEvent:
        now = time.monotonic()
        prefill = len(seq.request.tokens) - seq.cached
        prefill_s = (seq.first_token or now) - seq.submitted
        decode_s = now - seq.first_token if seq.first_token else 0.0
        tokens, seq.pending = tuple(seq.pending), []
        return GenEvent(text=text, tokens=tokens, finish=finish, error=error,
                        prompt_tokens=len(seq.request.tokens), cached_tokens=seq.cached,
                        generation_tokens=seq.tokens,
                        prompt_tps=prefill / prefill_s if prefill_s > 0 else 0.0,
                        generation_tps=(seq.tokens - 1) / decode_s if decode_s > 0 else 0.0)

    def _fail_all(self, reason: str, finish: str = "error") -> None:
        with self._cond:
            active, self._active = self._active, {}
        for seq in active.values():
            seq.stream.put(self._final(seq, finish, reason))

