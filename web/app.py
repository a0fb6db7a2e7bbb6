"""The web app: `create_app(config, runtime=None) -> Litestar` (page, JSON API, OpenAPI at /schema).

Startup opens the runtime (unless given), loads the generator once and starts
the single ingestion worker; shutdown stops the worker. Errors are always JSON
`{"error": "..."}`; with `config.api_key` set, /api/*, /v1/* and /health need
`Authorization: Bearer KEY`.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from urllib.parse import urlsplit

from litestar import Litestar, Request, Response, get
from litestar.connection import ASGIConnection
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.handlers import asgi
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

import rag  # noqa: F401 - loads OpenBLAS before anything imports mlx
from rag import Config
from web.api import MAX_JSON, api_router, upload_body_limit
from web.errors import is_storage_full, storage_error_text
from web.jobs import JobQueue, Limits
from web.openai_api import openai_router
from web.requests import request_id, request_id_middleware
from web.schema import openapi_config

HERE = Path(__file__).resolve().parent
log = logging.getLogger("web")

PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}



def require_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    key = connection.app.state.config.api_key
    if not key:
        return
    header = connection.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             key.encode()):
        raise NotAuthorizedException("missing or wrong API key (Authorization: Bearer KEY)")


@get("/health", guards=[require_key], sync_to_thread=True)
def health(state: State) -> dict:
    runtime = state.runtime
    engine = runtime.loaded_engine()
    documents = runtime.store.documents.list()  # chunks of unfinished writes do not count
    return {"status": "ok",
            "models": {"embedder": runtime.embedder.name,
                       "generator": engine.name if engine is not None else None},
            "engine": engine.stats() if engine is not None else None,
            "questions": state.get("asks", 0),
            "store": {"documents": len(documents), "chunks": sum(d.chunks for d in documents)},
            "jobs": {"pending": state.jobs.pending()}}


@get("/", include_in_schema=False, response_headers={"Content-Security-Policy": PAGE_CSP})
async def index() -> Template:
    return Template(template_name="index.html", context={"product": "Cited"})



def same_origin_only(request: Request) -> Response | None:
    """Refuse requests for other host names (DNS rebinding) when the app has a host list,
    and state-changing requests sent by other web sites (a browser adds Origin)."""
    allowed = request.app.state.get("allowed_hosts")
    host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
    if allowed and host.lower() not in allowed:
        return Response({"error": f"host {host!r} not allowed"}, status_code=400)
    origin = request.headers.get("origin")
    if request.method not in UNSAFE or not origin:
        return None
    if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
        return Response({"error": "cross-origin request refused"}, status_code=403)
    return None


def http_error(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    detail = exc.detail
    extra = getattr(exc, "extra", None)
    if status == 413:
        detail = detail if detail and "entity" not in detail.lower() else \
            f"request body too large for {request.url.path}"
    rid = request_id(request)
    body = {"error": detail or "error", "request_id": rid}
    if status == 400 and extra:
        body["details"] = extra
    log.log(logging.ERROR if status >= 500 else logging.INFO, "%s %s -> %d %s [request %s]",
            request.method, request.url.path, status, body["error"], rid)
    return Response(body, status_code=status, headers=getattr(exc, "headers", None))


def server_error(request: Request, exc: Exception) -> Response:
    rid = request_id(request)
    if is_storage_full(exc):
        log.error("%s %s -> 507 [request %s]: %s", request.method, request.url.path, rid, exc)
        return Response({"error": storage_error_text(exc), "request_id": rid}, status_code=507)
    log.exception("%s %s -> 500 [request %s]", request.method, request.url.path, rid,
                  exc_info=exc)
    return Response({"error": f"internal error: {storage_error_text(exc)}", "request_id": rid},
                    status_code=500)


def create_app(config: Config, runtime=None, *, allowed_hosts: list[str] | None = None
               ) -> Litestar:
    """The app; `allowed_hosts` (names the Host header may carry) guards against DNS
    rebinding when a key-less server listens on loopback."""
    from rag.mcp_server import HttpEndpoint  # MCP over streamable HTTP at /mcp

    mcp = HttpEndpoint(runtime, host=config.host)

    def startup(app: Litestar) -> None:
        state = app.state
        state.own_runtime = state.get("runtime") is None
        if state.own_runtime:
            from rag import open_runtime

            state.runtime = open_runtime(config)
        mcp.runtime = state.runtime
        state.runtime.engine()  # the model loads once; its engine answers every question
        state.asks = 0  # questions in flight (web/asking.py: Admission)
        state.jobs = JobQueue(state.runtime, Limits.from_config(config),
                              lease_s=config.job_lease_s, poll_s=config.job_poll_s)
        state.jobs.start()  # claims queued jobs, and those a crash or a stop left unfinished
        from rag.store.threads import Threads

        state.threads = Threads(state.runtime.store.db)

    def shutdown(app: Litestar) -> None:
        jobs = app.state.get("jobs")
        if jobs is not None:
            jobs.stop()
        if app.state.get("own_runtime"):
            app.state.runtime.close()

    return Litestar(
        route_handlers=[index, health, api_router([require_key]), openai_router([require_key]),
                        create_static_files_router(path="/static",
                                                   directories=[HERE / "static"]),
                        asgi("/mcp", is_mount=True, guards=[require_key], copy_scope=True)(mcp)],
        state=State({"config": config, "runtime": runtime,
                     "allowed_hosts": {h.strip("[]").lower() for h in allowed_hosts or ()}}),
        on_startup=[startup], on_shutdown=[shutdown], lifespan=[mcp.lifespan],
        template_config=TemplateConfig(directory=HERE / "templates",
                                       engine=JinjaTemplateEngine),
        exception_handlers={HTTPException: http_error, Exception: server_error},
        # The upload route's bound; the JSON routes have their own (web/api.py: MAX_JSON).
        request_max_body_size=max(upload_body_limit(config), MAX_JSON),
        middleware=[request_id_middleware],
        openapi_config=openapi_config(),
        before_request=same_origin_only,

        debug=False,
    )
