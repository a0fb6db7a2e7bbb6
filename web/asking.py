"""Answering a question over HTTP, shared by every route that asks (/api/ask, threads, /v1).

`answer_request` admits the question (bounded: past the engine's running +
waiting limits, 503 with Retry-After before any work), retrieves and queues it
on the engine from the runtime's worker pool, then returns the answer as JSON
or as server-sent events. A client that leaves cancels its generation, streamed
or not. `on_done(answer)` runs (on the worker pool) once an answer is complete,
for routes that keep it (a conversation's turn).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.response import ServerSentEvent, ServerSentEventMessage

from web.requests import request_id

MAX_QUESTION = 2000  # characters of a question or search query
MAX_JSON = 256 * 1024  # bytes of a JSON request body (a question, its options)
log = logging.getLogger("web")


async def read_json(request: Request) -> Any:
    """The request's JSON body; 400 when it is not JSON, 413 past MAX_JSON (the route's)."""
    try:
        return await request.json()
    except HTTPException:  # the body is over its bound (413)
        raise
    except Exception as exc:  # noqa: BLE001
        raise HTTPException(status_code=400, detail="body must be JSON") from exc


def question_options(data: Any) -> dict:
    """The question and its options from a request body, or a 4xx naming the field."""
    if not isinstance(data, dict):
        raise HTTPException(status_code=400, detail="body must be a JSON object")
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise HTTPException(status_code=422, detail="question: required, a non-empty string")
    if len(question) > MAX_QUESTION:
        raise HTTPException(status_code=422, detail=f"question: longer than {MAX_QUESTION}"
                            " characters")
    k = data.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 20):
        raise HTTPException(status_code=422, detail="k: an integer from 1 to 20")
    doc_ids = data.get("doc_ids")
    if doc_ids is not None and (not isinstance(doc_ids, list)
                                or not all(isinstance(d, str) for d in doc_ids)):
        raise HTTPException(status_code=422, detail="doc_ids: a list of document ids")
    return {"question": question.strip(), "k": k, "doc_ids": doc_ids or None}


def event_json(event) -> tuple[str, dict]:
    """An answer event as (SSE event name, JSON payload)."""
    from rag import source_json

    if event.type == "token":
        return "token", {"text": event.text}
    if event.type == "sources":
        return "sources", {"sources": [source_json(i + 1, p)
                                       for i, p in enumerate(event.sources)]}
    if event.type == "citation":
        return "citation", event.citation.to_json()
    return "done", event.answer.to_json()


class EventStream(ServerSentEvent):
    """An SSE response from a handler that also returns JSON: keep text/event-stream."""

    def to_asgi_response(self, *args: Any, **kwargs: Any):
        kwargs["media_type"] = "text/event-stream"
        return super().to_asgi_response(*args, **kwargs)


def busy(reason: str, retry_after: float) -> HTTPException:
    return HTTPException(status_code=503, detail=reason,
                         headers={"Retry-After": str(max(1, round(retry_after)))})


class Admission:
    """Questions in flight (retrieving, queued or generating), bounded by the engine's
    running + waiting limits, so a flood is refused at the door before any work."""

    def __init__(self, state: State):
        self.state, self.held = state, False

    def enter(self) -> None:
        config = self.state.runtime.config
        limit = config.max_running + config.max_waiting
        if self.state.asks >= limit:
            raise busy(f"busy: {self.state.asks} questions in progress (limit {limit});"
                       " try again shortly", retry_after=5)
        self.state.asks += 1
        self.held = True

    def leave(self) -> None:
        if self.held:
            self.state.asks -= 1
            self.held = False


async def start_run(state: State, question: str, **options):
    """Retrieve and queue the answer on the engine (rag.start_answer's options); Busy
    becomes 503 before any output."""
    from rag import Busy, start_answer

    loop = asyncio.get_running_loop()
    runtime = state.runtime
    try:
        return await loop.run_in_executor(runtime.worker, functools.partial(
            start_answer, question, runtime, **options))
    except Busy as exc:
        raise busy(str(exc), exc.retry_after) from exc


async def admitted_run(state: State, question: str, **options):
    """(run, admission): the question admitted and queued; the caller leaves the
    admission once the answer ends (or its client leaves)."""
    admission = Admission(state)
    admission.enter()
    try:
        return await start_run(state, question, **options), admission
    except BaseException:
        admission.leave()
        raise


def short_error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:500]


async def cancel_on_disconnect(request: Request, run) -> None:
    """A client that hangs up on a non-streamed answer cancels its generation."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    if run.stream is not None:
        run.stream.cancel()


async def finished(state: State, answer, on_done: Callable | None) -> None:
    if on_done is not None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(state.runtime.worker, on_done, answer)


async def answer_request(request: Request, state: State, options: dict, *, stream: bool,
                         history: Sequence = (), on_done: Callable | None = None) -> Any:
    """Answer `options` (from question_options) as JSON or server-sent events."""
    from rag import DoneEvent, EngineError

    run, admission = await admitted_run(state, options["question"], k=options["k"],
                                        doc_ids=options["doc_ids"], history=history)
    if stream:  # the stream leaves the admission when it ends
        return _stream(state, run, admission, on_done, request_id(request))
    watch = asyncio.create_task(cancel_on_disconnect(request, run))
    try:
        done = [e async for e in run.aevents() if isinstance(e, DoneEvent)]
    except EngineError as exc:  # logged with the request id by the error handler
        raise HTTPException(status_code=502, detail=short_error(exc)) from exc
    finally:
        watch.cancel()
        admission.leave()
    await finished(state, done[-1].answer, on_done)
    return done[-1].answer.to_json()


def _stream(state: State, run, admission: Admission, on_done: Callable | None,
            rid: str) -> EventStream:
    async def messages():
        from rag import DoneEvent

        try:
            async for event in run.aevents():
                if isinstance(event, DoneEvent):
                    await finished(state, event.answer, on_done)
                name, payload = event_json(event)
                yield ServerSentEventMessage(event=name, data=json.dumps(payload))
        except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
            log.warning("answer failed [request %s]: %s", rid, short_error(exc))
            yield ServerSentEventMessage(event="error", data=json.dumps(
                {"error": short_error(exc), "request_id": rid}))
        finally:  # also when the client leaves: closing this generator cancels the answer
            admission.leave()

    return EventStream(messages(), headers={"Cache-Control": "no-cache",
                                            "X-Accel-Buffering": "no"})
