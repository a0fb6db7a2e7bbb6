"""Conversations over HTTP: create, list, read and delete threads, and ask within one.

A question asked in a thread is answered like /api/ask (same admission, engine,
citation checks, JSON or server-sent events) with the thread's earlier turns as
its history; the turn is stored once its answer is complete (an answer cut off
by a client that left is not kept).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException

from web.asking import MAX_JSON, answer_request, question_options, read_json


def _threads(state: State):
    if state.get("threads") is None:
        from rag.store.threads import Threads

        state.threads = Threads(state.runtime.store.db)
    return state.threads


def _thread(state: State, thread_id: str):
    record = _threads(state).get(thread_id)
    if record is None:
        raise NotFoundException(f"no thread {thread_id}")
    return record


@post("/threads", status_code=201, sync_to_thread=True, request_max_body_size=MAX_JSON)
def create_thread(state: State, data: dict[str, Any] | None = None) -> dict:
    """A new, empty thread; `title` is optional (the first question names it otherwise)."""
    title = (data or {}).get("title", "")
    if not isinstance(title, str):
        raise HTTPException(status_code=422, detail="title: a string")
    return dict(_threads(state).create(title).to_json(), turns=[])


@get("/threads", sync_to_thread=True)
def list_threads(state: State) -> dict:
    """Threads, the most recently used first."""
    return {"threads": [t.to_json() for t in _threads(state).list()]}


@get("/threads/{thread_id:str}", sync_to_thread=True)
def get_thread(state: State, thread_id: str) -> dict:
    """A thread with its turns, oldest first: each a question and its answer's JSON."""
    record = _thread(state, thread_id)
    return dict(record.to_json(), turns=_threads(state).turns_of(thread_id))


@delete("/threads/{thread_id:str}", status_code=204, sync_to_thread=True)
def delete_thread(state: State, thread_id: str) -> None:
    if not _threads(state).delete(thread_id):
        raise NotFoundException(f"no thread {thread_id}")


@post("/threads/{thread_id:str}/ask", status_code=200, request_max_body_size=MAX_JSON)
async def ask_in_thread(request: Request, state: State, thread_id: str) -> Any:
    """Ask within a thread: the body and answer of /api/ask; the earlier turns are the
    question's history, and the completed answer becomes the thread's next turn."""
    import asyncio

    data = await read_json(request)
    options = question_options(data)
    threads = _threads(state)
    loop = asyncio.get_running_loop()
    if await loop.run_in_executor(state.runtime.worker, threads.get, thread_id) is None:
        raise NotFoundException(f"no thread {thread_id}")
    history = await loop.run_in_executor(state.runtime.worker, threads.history, thread_id)

    def keep(answer) -> None:
        threads.add_turn(thread_id, options["question"], answer.to_json())

    return await answer_request(request, state, options, stream=bool(data.get("stream")),
                                history=history, on_done=keep)


ROUTES = [create_thread, list_threads, get_thread, delete_thread, ask_in_thread]
