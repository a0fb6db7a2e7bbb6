"""The JSON API: documents, upload jobs, questions (JSON or server-sent events), search."""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, delete, get, post
from litestar.datastructures import State, UploadFile
from litestar.exceptions import HTTPException, NotFoundException
from litestar.response import File

from web.asking import MAX_JSON, MAX_QUESTION, answer_request, question_options, read_json
from web.errors import is_storage_full
from web.jobs import ascii_filename
from web.requests import request_id
from web.threads import ROUTES as THREAD_ROUTES

log = logging.getLogger("web")


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
MAX_QUERY = MAX_QUESTION  # characters of a search query


def upload_body_limit(config) -> int:
    """The bytes one upload request may carry: every file at its limit, plus the form."""
    return config.max_upload_mb * 1024 * 1024 * min(config.max_request_files, 10) + (1 << 20)


@post("/documents", status_code=202)
async def upload(request: Request, state: State) -> Any:
    """Upload files (multipart field `files`, repeated) as ingestion jobs.

    Each file is judged alone: one past a limit is refused with its own status and
    reason (413 larger than `max_upload_mb` or past `max_request_files` in one
    request, 429 past `max_queued_jobs` waiting jobs, 507 past `max_pending_mb` of
    waiting uploads or when the disk is nearly full) while the others are accepted.
    202 `{"jobs": [...], "refused": [{"filename", "status", "error"}]}`; when none is
    accepted, the status of the first refusal with `{"error", "refused"}`.

    Names: a file whose name is already in the library becomes its own document named
    "name (2).ext" (the first free number; the job's `result.path` says which), unless
    the form field `replace=true` is sent: then it replaces the documents of that
    name once stored. A file whose bytes are already stored is that document
    (`result.status` "unchanged"); no other document is touched.
    """
    form = await request.form()
    files = [f for f in form.getall("files") if isinstance(f, UploadFile)] \
        if "files" in form else []
    if not files:
        raise HTTPException(status_code=400, detail="no files: send multipart field 'files'")
    replace = str(form.get("replace", "")).strip().lower() in ("1", "true", "yes", "on")
    try:
        streams = [(f.filename, f.file, _size(f.file)) for f in files]
        jobs, refused = await asyncio.to_thread(state.jobs.accept, streams, replace)
    finally:
        for f in files:
            await f.close()
    if not jobs:
        first = refused[0]
        return Response({"error": first.error, "refused": [r.to_json() for r in refused],
                         "request_id": request_id(request)}, status_code=first.status)
    return {"jobs": jobs, "refused": [r.to_json() for r in refused]}


def _size(stream) -> int:
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    return size


@get("/documents", sync_to_thread=True)
def list_documents(state: State) -> dict:
    return {"documents": [doc_json(r) for r in state.runtime.store.documents.list()]}


@get("/documents/{doc_id:str}", sync_to_thread=True)
def get_document(state: State, doc_id: str) -> dict:
    return doc_json(_record(state, doc_id))


@delete("/documents/{doc_id:str}", status_code=204, sync_to_thread=True)
def delete_document(state: State, doc_id: str) -> None:
    """Delete a document; on a full disk its original goes first to make room."""
    store = state.runtime.store
    try:
        found = store.delete_document(doc_id)
    except Exception as exc:
        if not is_storage_full(exc):
            raise
        record = store.documents.get(doc_id)
        if record is None:
            raise
        log.warning("delete %s: storage full, freeing its original first", doc_id)
        if not any(r.file == record.file and r.id != doc_id for r in store.documents.list()):
            store.originals.delete(record.file)
        found = store.delete_document(doc_id)
    if not found:
        raise NotFoundException(f"no document {doc_id}")


@get("/documents/{doc_id:str}/file", sync_to_thread=True)
def document_file(state: State, doc_id: str) -> File | Response:
    """The original file: from this machine's disk, or from the store's object storage
    (any replica serves it)."""
    record = _record(state, doc_id)
    original = state.runtime.store.original(record)
    if original is None:
        raise NotFoundException(f"document {doc_id}: original file is missing")
    pdf = record.mime == "application/pdf"
    # Stored HTML is served as text: never rendered on this origin.
    media = "application/pdf" if pdf else "text/plain"
    name = ascii_filename(Path(record.path).name)
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
    if isinstance(original, Path):
        return File(path=original, media_type=media, content_disposition_type="inline",
                    filename=name, headers=headers)
    return Response(original, media_type=media, headers=dict(
        headers, **{"Content-Disposition": f'inline; filename="{name}"'}))


# -- jobs --------------------------------------------------------------------
@get("/jobs/{job_id:str}", sync_to_thread=True)
def get_job(state: State, job_id: str) -> dict:
    job = state.jobs.get(job_id)
    if job is None:
        raise NotFoundException(f"no job {job_id}")
    return job


@post("/jobs/{job_id:str}/cancel", status_code=200, sync_to_thread=True,
      request_max_body_size=MAX_JSON)
def cancel_job(state: State, job_id: str) -> dict:
    """Cancel a queued job (at once) or a running one (at its next step: the job then
    reads "cancelled", or "done" if its document was already stored); 409 once finished."""
    from web.jobs import Finished

    try:
        job = state.jobs.cancel(job_id)
    except Finished as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    if job is None:
        raise NotFoundException(f"no job {job_id}")
    return job


@get("/jobs", sync_to_thread=True)
def list_jobs(state: State) -> dict:
    return {"jobs": state.jobs.recent(), "pending": state.jobs.pending()}


# -- questions ---------------------------------------------------------------
@post("/ask", status_code=200, request_max_body_size=MAX_JSON)
async def ask(request: Request, state: State) -> Any:
    """Answer a question: JSON, or server-sent events with `"stream": true`."""
    data = await read_json(request)
    return await answer_request(request, state, question_options(data),
                                stream=bool(data.get("stream")))


@get("/search")
async def search(state: State, q: str, k: int = 6) -> dict:
    from rag import search as retrieve
    from rag import source_json

    if not q.strip():
        raise HTTPException(status_code=422, detail="q: required")
    if len(q) > MAX_QUERY:
        raise HTTPException(status_code=422, detail=f"q: longer than {MAX_QUERY} characters")
    if not 1 <= k <= 50:
        raise HTTPException(status_code=422, detail="k: an integer from 1 to 50")
    loop = asyncio.get_running_loop()
    passages = await loop.run_in_executor(state.runtime.worker,
                                          functools.partial(retrieve, q, state.runtime, k=k))
    return {"query": q, "passages": [source_json(i + 1, p) for i, p in enumerate(passages)]}


def api_router(guards: list) -> Router:
    return Router(path="/api", guards=guards, route_handlers=[
        upload, list_documents, get_document, delete_document, document_file, get_job,
        cancel_job, list_jobs, ask, search, *THREAD_ROUTES])
