"""A generator engine that streams answers from any OpenAI-compatible chat endpoint.

`open_remote(config)` builds a `RemoteEngine` for `config.generator_url` (a base
URL such as "http://gpu-box:8080/v1"): each `submit()` becomes one
`POST {url}/chat/completions` with `stream: true`, and the server-sent events
come back as `GenEvent`s on the request's `GenStream` (rag/streams.py).

One thread owns all the network work: it runs an asyncio event loop with one
`httpx.AsyncClient`, and every request is a task on that loop (no thread per
request). At most `max_running` requests are in flight and `max_waiting` queue
behind them; past that `submit()` raises `streams.Busy`. Cancelling a stream
cancels its task, which closes its HTTP connection, so the endpoint sees the
client leave and (mlx_lm.server does) stops generating.

Nothing hangs: connection failures, non-2xx answers, malformed streams, an
endpoint that goes quiet (`read_timeout` between chunks) or dies mid-answer
each end the stream with one `GenEvent(finish="error")` whose `error` is one
line naming the URL and the reason; the request's time limit ends it with
finish="timeout".

The wire protocol (the request, reading the answer, errors in words) is
rag/openai_chat.py; this module schedules requests and reports their end.

The prompt budget (rag/prompt.py) is counted with `engine.tokenizer`: the
tokenizer named by `config.generator_tokenizer` when set, else `CharTokenizer`,
a conservative count from characters (see its docstring).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rag.config import DEFAULT_GENERATOR, Config
from rag.openai_chat import (
    DEFAULT_MODEL,
    ChatAnswer,
    ChatClient,
    RequestFailed,
    chat_messages,
    error_message,
    root_cause,
)
from rag.streams import Busy, EngineError, GenEvent, GenRequest, GenStream
from rag.tokencount import CharTokenizer, load_tokenizer

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
READ_TIMEOUT = 120.0  # seconds of silence between two chunks of a stream


@dataclass(eq=False)
class _Job:
    request: GenRequest
    stream: GenStream
    deadline: float  # time.monotonic()
    submitted: float = field(default_factory=time.monotonic)
    reason: str = "cancelled"  # the finish reported when the task is cancelled
    task: asyncio.Task | None = None
    state: str = "waiting"  # then "running", then "done"
    ended: bool = False
    cancelling: bool = False
    answer: ChatAnswer = field(init=False)  # what the endpoint has said so far

    def __post_init__(self) -> None:
        self.answer = ChatAnswer(on_text=lambda text: self.stream.put(GenEvent(text=text)))


class RemoteEngine:
    """The Engine protocol (rag/engine.py) over an OpenAI-compatible chat endpoint."""

    def __init__(self, url: str, *, api_key: str = "", model: str | None = None,
                 tokenizer: Any = None, max_running: int = 8, max_waiting: int = 32,
                 time_limit_s: float = 600.0, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"generator_url must start with http:// or https://, not {url!r}")
        if max_running < 1 or max_waiting < 0:
            raise ValueError("max_running must be at least 1 and max_waiting at least 0")
        self.url = url.rstrip("/")
        self.chat_url = self.url + "/chat/completions"
        self.model = model or None  # None: the endpoint's first model, asked once
        self._sent_model: str | None = None  # the model the last request asked for
        self.name = self.model or self.url
        self.tokenizer = tokenizer if tokenizer is not None else CharTokenizer()
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.time_limit_s = time_limit_s
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._chat = ChatClient(self.url, api_key=api_key, connections=max_running,
                                connect_timeout=connect_timeout, read_timeout=read_timeout)
        self._lock = threading.Lock()
        self._jobs: set[_Job] = set()
        self._running = 0
        self._waiting = 0
        self._counts = {"completed": 0, "errors": 0, "cancelled": 0, "timeouts": 0}
        self._seconds = 0.0  # a moving average of request durations, for retry_after
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._slots: asyncio.Semaphore | None = None
        self._model_lock: asyncio.Lock | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,),
                                        name="rag-remote-generator", daemon=True)
        self._thread.start()
        started.wait()

    # -- the Engine protocol (any thread) -----------------------------------

    def submit(self, request: GenRequest) -> GenStream:
        if not request.messages:
            raise ValueError("RemoteEngine needs GenRequest.messages (the chat messages)")
        limit = request.time_limit_s if request.time_limit_s is not None else self.time_limit_s
        with self._lock:
            if self._closed:
                raise EngineError(f"generator {self.url}: the engine is closed")
            if self._waiting + self._running >= self.max_running + self.max_waiting:
                retry = min(30.0, max(1.0, round(self._seconds or 1.0, 1)))
                raise Busy(f"generator busy: {self._running} answers running and "
                           f"{self._waiting} waiting at {self.url}", retry_after=retry)
            job = _Job(request, GenStream(), time.monotonic() + limit)
            job.stream.on_cancel = lambda stream: self._cancel_soon(job, "cancelled")
            self._waiting += 1
            self._jobs.add(job)
        self._loop.call_soon_threadsafe(self._start, job)
        return job.stream

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"running": self._running, "waiting": self._waiting,
                    "max_running": self.max_running, "max_waiting": self.max_waiting,
                    "url": self.url, "model": self.model or self._sent_model,
                    **self._counts}

    def busy(self) -> bool:
        """Whether any request is in flight or queued (the Engine protocol's signal for
        ingestion to yield; the endpoint may well share this machine's CPU)."""
        with self._lock:
            return bool(self._running or self._waiting)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if threading.current_thread() is self._thread:
            raise RuntimeError("RemoteEngine.close() called from its own thread")
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the owner thread ---------------------------------------------------

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._slots = asyncio.Semaphore(self.max_running)
        self._model_lock = asyncio.Lock()
        started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _cancel_soon(self, job: _Job, reason: str) -> None:
        try:
            self._loop.call_soon_threadsafe(self._cancel, job, reason)
        except RuntimeError:  # the loop is closed: the job ended with it
            pass

    def _cancel(self, job: _Job, reason: str) -> None:
        # The first reason sticks: a stream closed after its time ran out timed out.
        if job.task is not None and not job.task.done() and not job.cancelling:
            job.cancelling = True
            job.reason = reason
            job.task.cancel()

    def _start(self, job: _Job) -> None:
        job.task = self._loop.create_task(self._run(job))
        delay = max(0.0, job.deadline - time.monotonic())
        timer = self._loop.call_later(delay, self._cancel, job, "timeout")

        def done(task: asyncio.Task) -> None:
            timer.cancel()
            if not job.ended:  # cancelled before its first step: _run never ran
                self._end(job, self._final(job, job.reason), job.reason)

        job.task.add_done_callback(done)

    async def _shutdown(self) -> None:
        jobs = list(self._jobs)
        for job in jobs:
            self._cancel(job, "cancelled")
        await asyncio.gather(*(job.task for job in jobs if job.task is not None),
                             return_exceptions=True)
        await self._chat.aclose()

    async def _run(self, job: _Job) -> None:
        try:
            assert self._slots is not None
            async with self._slots:
                with self._lock:
                    self._waiting -= 1
                    self._running += 1
                    job.state = "running"
                await self._generate(job)
            final = self._final(job, "length" if job.answer.finish == "length" else "stop")
        except asyncio.CancelledError:
            final = self._final(job, job.reason)
        except RequestFailed as exc:
            final = GenEvent(finish="error",
                             error=f"generator {exc.url or self.chat_url}: {exc}")
        except Exception as exc:  # noqa: BLE001 - never leave a stream without its end
            final = GenEvent(finish="error",
                             error=f"generator {self.chat_url}: {self._chat.reason(exc)}")
        self._end(job, final, final.finish or "error")

    def _end(self, job: _Job, final: GenEvent, finish: str) -> None:
        """Account for a finished job and give its stream the last event (once)."""
        outcome = {"stop": "completed", "length": "completed", "timeout": "timeouts",
                   "cancelled": "cancelled"}.get(finish, "errors")
        with self._lock:
            if job.ended:
                return
            job.ended = True
            if job.state == "waiting":
                self._waiting -= 1
            elif job.state == "running":
                self._running -= 1
            job.state = "done"
            self._jobs.discard(job)
            self._counts[outcome] += 1
            spent = time.monotonic() - job.submitted
            self._seconds = spent if not self._seconds else 0.8 * self._seconds + 0.2 * spent
        job.stream.put(final)

    def _final(self, job: _Job, finish: str) -> GenEvent:
        answer = job.answer
        usage = answer.usage
        prompt = usage.get("prompt_tokens")
        if not isinstance(prompt, int):
            prompt = len(job.request.tokens)  # our own count of the prompt
        generated = usage.get("completion_tokens")
        if not isinstance(generated, int):
            generated = answer.text_chunks
        details = usage.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else 0
        prompt_tps = generation_tps = 0.0
        if answer.first_at and answer.sent_at:
            prompt_tps = prompt / max(answer.first_at - answer.sent_at, 1e-6)
            spent = time.monotonic() - answer.first_at
            if generated > 1 and spent > 0:
                generation_tps = (generated - 1) / spent
        return GenEvent(finish=finish, prompt_tokens=prompt,
                        cached_tokens=cached if isinstance(cached, int) else 0,
                        generation_tokens=generated, prompt_tps=prompt_tps,
                        generation_tps=generation_tps)

    # -- the endpoint ---------------------------------------------------------

    async def _model_name(self) -> str:
        if self.model:
            return self.model
        assert self._model_lock is not None
        async with self._model_lock:
            if self.model:
                return self.model
            models = await self._chat.models()
            if not models:
                # No list (or an empty one): mlx_lm.server's name for its own model; any
                # other endpoint will say what it wants in the chat answer's error.
                return DEFAULT_MODEL
            self.model = models[0]
            self.name = self.model
            return self.model

    async def _generate(self, job: _Job) -> None:
        model = self._sent_model = await self._model_name()
        await self._chat.chat(model, job.request, job.answer)


def open_remote(config: Config, **overrides: Any) -> RemoteEngine:
    """The engine for `config.generator_url`.

    The model asked for is `config.generator` when it was changed from the
    default (the local model's name means nothing to a remote endpoint), else the
    endpoint's first model from GET {url}/models. `overrides` go to RemoteEngine
    (model, connect_timeout, read_timeout, ...).
    """
    if not config.generator_url:
        raise ValueError("generator_url is not set")
    tokenizer = (load_tokenizer(config.generator_tokenizer, config)
                 if config.generator_tokenizer else None)
    options: dict[str, Any] = {
        "api_key": config.generator_api_key,
        "model": config.generator if config.generator != DEFAULT_GENERATOR else None,
        "tokenizer": tokenizer, "max_running": config.max_running,
        "max_waiting": config.max_waiting, "time_limit_s": config.answer_time_limit,
    }
    options.update(overrides)
    return RemoteEngine(config.generator_url, **options)


__all__ = ["CharTokenizer", "RemoteEngine", "chat_messages", "error_message", "load_tokenizer",
           "open_remote", "root_cause"]
