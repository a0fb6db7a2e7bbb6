"""The JSON API: documents, upload jobs, questions (JSON or server-sent events), search."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from litestar import Request, Router, delete, get, post
from litestar.datastructures import State, UploadFile
from litestar.exceptions import HTTPException, NotFoundException
from litestar.response import File, ServerSentEvent, ServerSentEventMessage

from web.jobs import ascii_filename

MAX_QUESTION = 2000


def doc_json(record) -> dict:
    return {"id": record.id, "filename": Path(record.path).name, "path": record.path,
            "title": record.title, "mime": record.mime, "pages": record.pages,
            "chunks": record.chunks, "empty_pages": record.empty_pages, "size": record.size,
            "added_at": record.added_at, "status": "ready"}


def _record(state: State, doc_id: str):
    record = state.runtime.store.documents.get(doc_id)
    if record is None:
        raise NotFoundException(f"no document {doc_id}")
    return record


# -- documents -------------------------------------------------------------
@post("/documents", status_code=202)
async def upload(request: Request, state: State) -> dict:
    form = await request.form()
    files = [f for f in form.getall("files") if isinstance(f, UploadFile)] \
        if "files" in form else []
    if not files:
        raise HTTPException(status_code=400, detail="no files: send multipart field 'files'")
    limit = state.config.max_upload_mb * 1024 * 1024
    blobs = []
    for f in files:
        data = await f.read()
        await f.close()
        if len(data) > limit:
            raise HTTPException(status_code=413, detail=f"{f.filename}: larger than"
                                f" {state.config.max_upload_mb} MB")
        blobs.append((f.filename, data))
    jobs = [state.jobs.submit(name, data) for name, data in blobs]
    return {"jobs": [j.to_json() for j in jobs]}


@get("/documents", sync_to_thread=True)
def list_documents(state: State) -> dict:
    return {"documents": [doc_json(r) for r in state.runtime.store.documents.list()]}


@get("/documents/{doc_id:str}", sync_to_thread=True)
def get_document(state: State, doc_id: str) -> dict:
    return doc_json(_record(state, doc_id))


@delete("/documents/{doc_id:str}", status_code=204, sync_to_thread=True)
def delete_document(state: State, doc_id: str) -> None:
    if not state.runtime.store.delete_document(doc_id):
        raise NotFoundException(f"no document {doc_id}")


@get("/documents/{doc_id:str}/file", sync_to_thread=True)
def document_file(state: State, doc_id: str) -> File:
    record = _record(state, doc_id)
    path = state.runtime.store.file_path(record)
    if not path.is_file():
        raise NotFoundException(f"document {doc_id}: original file is missing")
    pdf = record.mime == "application/pdf"
    # Stored HTML is served as text: never rendered on this origin.
    media = "application/pdf" if pdf else "text/plain"
    name = ascii_filename(Path(record.path).name)
    return File(path=path, media_type=media, content_disposition_type="inline", filename=name,
                headers={"X-Content-Type-Options": "nosniff",
                         "Content-Security-Policy": "sandbox"})


# -- jobs --------------------------------------------------------------------
@get("/jobs/{job_id:str}")
async def get_job(state: State, job_id: str) -> dict:
    job = state.jobs.get(job_id)
    if job is None:
        raise NotFoundException(f"no job {job_id}")
    return job.to_json()


@get("/jobs")
async def list_jobs(state: State) -> dict:
    return {"jobs": [j.to_json() for j in state.jobs.recent()], "pending": state.jobs.pending()}


# -- questions ---------------------------------------------------------------
def _options(data: Any) -> dict:
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


def _event_json(event) -> tuple[str, dict]:
    from rag import source_json

    if event.type == "token":
        return "token", {"text": event.text}
    if event.type == "sources":
        return "sources", {"sources": [source_json(i + 1, p)
                                       for i, p in enumerate(event.sources)]}
    if event.type == "citation":
        return "citation", event.citation.to_json()
    return "done", event.answer.to_json()


class _SSE(ServerSentEvent):
    """An SSE response from a handler that also returns JSON: keep text/event-stream."""

    def to_asgi_response(self, *args: Any, **kwargs: Any):
        kwargs["media_type"] = "text/event-stream"
        return super().to_asgi_response(*args, **kwargs)


def _stream(runtime, options: dict) -> ServerSentEvent:
    from rag import stream_answer

    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down)
            cancelled.set()

    def produce() -> None:
        stream = stream_answer(options["question"], runtime, k=options["k"],
                               doc_ids=options["doc_ids"])
        try:
            for event in stream:
                if cancelled.is_set():  # the client went away: stop generating
                    break
                put(_event_json(event))
        except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
            put(("error", {"error": _short(exc)}))
        finally:
            stream.close()  # releases the generator's lock at once
            put(None)

    async def messages():
        import json

        threading.Thread(target=produce, name="ask-stream", daemon=True).start()
        try:
            while (item := await events.get()) is not None:
                name, payload = item
                yield ServerSentEventMessage(event=name, data=json.dumps(payload))
        finally:
            cancelled.set()

    return _SSE(messages(), headers={"Cache-Control": "no-cache",
                                                "X-Accel-Buffering": "no"})


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:500]


@post("/ask", status_code=200)
async def ask(request: Request, state: State) -> Any:
    try:
        data = await request.json()
    except Exception as exc:  # noqa: BLE001
        raise HTTPException(status_code=400, detail="body must be JSON") from exc
    options = _options(data)
    if data.get("stream"):
        return _stream(state.runtime, options)
    from anyio import to_thread

    from rag import answer

    result = await to_thread.run_sync(lambda: answer(options["question"], state.runtime,
                                                     k=options["k"],
                                                     doc_ids=options["doc_ids"]))
    return result.to_json()


@get("/search", sync_to_thread=True)
def search(state: State, q: str, k: int = 6) -> dict:
    from rag import search as retrieve
    from rag import source_json

    if not q.strip():
        raise HTTPException(status_code=422, detail="q: required")
    if not 1 <= k <= 50:
        raise HTTPException(status_code=422, detail="k: an integer from 1 to 50")
    passages = retrieve(q, state.runtime, k=k)
    return {"query": q, "passages": [source_json(i + 1, p) for i, p in enumerate(passages)]}


def api_router(guards: list) -> Router:
    return Router(path="/api", guards=guards, route_handlers=[
        upload, list_documents, get_document, delete_document, document_file, get_job,
        list_jobs, ask, search])
