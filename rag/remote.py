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

The prompt budget (rag/prompt.py) is counted with `engine.tokenizer`: the
tokenizer named by `config.generator_tokenizer` when set, else `CharTokenizer`,
a conservative count from characters (see its docstring).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from rag.config import DEFAULT_GENERATOR, Config
from rag.prompt import SYSTEM_PROMPT
from rag.streams import Busy, EngineError, GenEvent, GenRequest, GenStream
from rag.tokencount import CharTokenizer, load_tokenizer

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
READ_TIMEOUT = 120.0  # seconds of silence between two chunks of a stream
DEFAULT_MODEL = "default_model"  # mlx_lm.server's name for the model it was started with
ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error answer read for its message
JSON_BODY_LIMIT = 16 * 1024 * 1024  # an endpoint that ignores stream: true answers in one JSON


def chat_messages(user: str, system: str = SYSTEM_PROMPT) -> tuple[dict, ...]:
    """GenRequest.messages for a prompt: the system message, then `prompt.user`."""
    return ({"role": "system", "content": system}, {"role": "user", "content": user})


def one_line(value: Any, limit: int = 300) -> str:
    text = " ".join(str(value).split()) or type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# The engine


class _Failed(Exception):
    """A request failed: `str()` is the reason, `url` what was asked (default: the chat URL)."""

    def __init__(self, reason: str, url: str = ""):
        super().__init__(reason)
        self.url = url


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
    text_chunks: int = 0
    usage: dict = field(default_factory=dict)
    finish: str | None = None  # the endpoint's finish_reason
    sent_at: float = 0.0
    first_at: float = 0.0


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
        headers = {"Accept": "text/event-stream, application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            headers=headers, follow_redirects=True,
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout,
                                  write=connect_timeout, pool=connect_timeout),
            limits=httpx.Limits(max_connections=max_running + 1,
                                max_keepalive_connections=max_running))
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
        await self._client.aclose()

    async def _run(self, job: _Job) -> None:
        try:
            assert self._slots is not None
            async with self._slots:
                with self._lock:
                    self._waiting -= 1
                    self._running += 1
                    job.state = "running"
                await self._generate(job)
            final = self._final(job, "length" if job.finish == "length" else "stop")
        except asyncio.CancelledError:
            final = self._final(job, job.reason)
        except _Failed as exc:
            final = GenEvent(finish="error",
                             error=f"generator {exc.url or self.chat_url}: {exc}")
        except Exception as exc:  # noqa: BLE001 - never leave a stream without its end
            final = GenEvent(finish="error",
                             error=f"generator {self.chat_url}: {self._reason(exc)}")
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
        usage = job.usage
        prompt = usage.get("prompt_tokens")
        if not isinstance(prompt, int):
            prompt = len(job.request.tokens)  # our own count of the prompt
        generated = usage.get("completion_tokens")
        if not isinstance(generated, int):
            generated = job.text_chunks
        details = usage.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else 0
        prompt_tps = generation_tps = 0.0
        if job.first_at and job.sent_at:
            prompt_tps = prompt / max(job.first_at - job.sent_at, 1e-6)
            spent = time.monotonic() - job.first_at
            if generated > 1 and spent > 0:
                generation_tps = (generated - 1) / spent
        return GenEvent(finish=finish, prompt_tokens=prompt,
                        cached_tokens=cached if isinstance(cached, int) else 0,
                        generation_tokens=generated, prompt_tps=prompt_tps,
                        generation_tps=generation_tps)

    # -- HTTP -----------------------------------------------------------------

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, httpx.ConnectTimeout):
            return f"no connection within {self.connect_timeout:g} s"
        if isinstance(exc, httpx.ReadTimeout):
            return f"no data for {self.read_timeout:g} s"
        if isinstance(exc, httpx.PoolTimeout):
            return f"no free connection within {self.connect_timeout:g} s"
        if isinstance(exc, httpx.TimeoutException):
            return f"timed out ({one_line(exc)})"
        if isinstance(exc, httpx.ConnectError):
            return f"cannot connect ({root_cause(exc)})"
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return f"connection lost mid-answer ({one_line(exc)})"
        if isinstance(exc, httpx.HTTPError):
            return f"{type(exc).__name__} ({one_line(exc)})"
        return f"{type(exc).__name__}: {one_line(exc)}"

    async def _model_name(self) -> str:
        if self.model:
            return self.model
        assert self._model_lock is not None
        async with self._model_lock:
            if self.model:
                return self.model
            try:
                response = await self._client.get(self.url + "/models")
            except httpx.HTTPError as exc:
                raise _Failed(self._reason(exc), self.url + "/models") from exc
            models = []
            if response.is_success:
                try:
                    data = response.json().get("data")
                    models = [m["id"] for m in data if isinstance(m.get("id"), str)]
                except (ValueError, AttributeError, TypeError, KeyError):
                    models = []
            if not models:
                # No list (or an empty one): mlx_lm.server's name for its own model; any
                # other endpoint will say what it wants in the chat answer's error.
                return DEFAULT_MODEL
            self.model = models[0]
            self.name = self.model
            return self.model

    async def _generate(self, job: _Job) -> None:
        request = job.request
        model = self._sent_model = await self._model_name()
        body = {"model": model, "messages": list(request.messages),
                "max_tokens": request.max_tokens, "temperature": request.temperature,
                "stream": True, "stream_options": {"include_usage": True}}
        job.sent_at = time.monotonic()
        async with self._client.stream("POST", self.chat_url, json=body) as response:
            if not response.is_success:
                raise _Failed(await self._http_error(response))
            kind = response.headers.get("content-type", "text/event-stream").lower()
            if "event-stream" in kind:
                await self._read_events(job, response)
            elif "json" in kind:
                await self._read_json(job, response)
            else:
                raise _Failed(f"unexpected answer of type {kind!r} (not an event stream)")

    async def _http_error(self, response: httpx.Response) -> str:
        data = b""
        try:
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) >= ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            pass
        message = error_message(data)
        status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        return f"{status} ({message})" if message else status

    async def _read_events(self, job: _Job, response: httpx.Response) -> None:
        data: list[str] = []
        try:
            async for line in response.aiter_lines():
                if line == "":
                    if data and self._event(job, "\n".join(data)):
                        return
                    data = []
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                # other fields ("event:", "id:") and comments (": keepalive") are skipped
        except httpx.ReadTimeout:
            if job.finish is None:
                raise
            return  # the answer was complete; only the usage or [DONE] did not come
        if data and self._event(job, "\n".join(data)):
            return
        if job.finish is None:
            raise _Failed("the stream ended before the answer did (the endpoint closed it)")

    def _event(self, job: _Job, payload: str) -> bool:
        """Handle one event; True at the end of the stream."""
        if payload.strip() == "[DONE]":
            if job.finish is None:
                job.finish = "stop"
            return True
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise _Failed(f"malformed stream (not JSON: {one_line(payload, 80)!r})") from None
        if not isinstance(chunk, dict):
            raise _Failed(f"malformed stream (not an object: {one_line(payload, 80)!r})")
        if chunk.get("error"):
            raise _Failed(f"error in stream ({error_message(chunk) or 'no message'})")
        if isinstance(chunk.get("usage"), dict):
            job.usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise _Failed(f"malformed stream (choices: {one_line(choices, 80)!r})")
        for choice in choices[:1]:
            if not isinstance(choice, dict):
                raise _Failed(f"malformed stream (choice: {one_line(choice, 80)!r})")
            delta = choice.get("delta") or choice.get("message") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if text is None and isinstance(choice.get("text"), str):
                text = choice["text"]  # a completions-style chunk
            if text is not None and not isinstance(text, str):
                raise _Failed(f"malformed stream (content: {one_line(text, 80)!r})")
            if text:
                self._text(job, text)
            if choice.get("finish_reason"):
                job.finish = str(choice["finish_reason"])
        return False

    def _text(self, job: _Job, text: str) -> None:
        if not job.first_at:
            job.first_at = time.monotonic()
        job.text_chunks += 1
        job.stream.put(GenEvent(text=text))

    async def _read_json(self, job: _Job, response: httpx.Response) -> None:
        """An endpoint that ignored stream: true: the whole answer in one JSON object."""
        data = b""
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > JSON_BODY_LIMIT:
                raise _Failed(f"answer larger than {JSON_BODY_LIMIT} bytes")
        try:
            answer = json.loads(data)
            choice = answer["choices"][0]
            text = (choice.get("message") or {}).get("content") or choice.get("text") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Failed(f"malformed answer ({one_line(data[:80], 80)!r})") from None
        if isinstance(answer.get("usage"), dict):
            job.usage = answer["usage"]
        if text:
            self._text(job, str(text))
        job.finish = str(choice.get("finish_reason") or "stop")


def root_cause(exc: BaseException) -> str:
    """The innermost OS error behind `exc` in words ("Connection refused" rather than
    httpx's "All connection attempts failed"), else `exc` on one line."""
    found = ""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            errno = current.errno or 0
            found = os.strerror(errno) if errno > 0 else current.strerror
        current = current.__cause__ or current.__context__
    return found or one_line(exc)


def error_message(body: bytes | str | dict) -> str:
    """The message in an endpoint's error answer (OpenAI, mlx_lm.server, FastAPI shapes)."""
    data: Any = body
    if isinstance(body, (bytes, str)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            data = json.loads(text)
        except ValueError:
            return one_line(text, 200) if text.strip() else ""
    for key in ("error", "detail", "message"):
        if isinstance(data, dict) and key in data:
            value = data[key]
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail") or value
            return one_line(value if isinstance(value, str) else json.dumps(value), 200)
    return one_line(json.dumps(data), 200)


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
