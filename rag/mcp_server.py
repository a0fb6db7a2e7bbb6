"""The store as a Model Context Protocol server, on the official SDK (`mcp`, 2.x).

Tools (read-only):

    search(query, k?, doc_ids?)         passages, best first
    ask(question, k?, doc_ids?, max_tokens?)
                                        a cited answer: text with [n] markers, the checked
                                        citations, the numbered sources ([n] is sources[n-1])
    list_documents(offset?, limit?)     the stored documents

Resources: each document's original file as rag://documents/{id} (PDF bytes, or the
text of a text file), with its mime type; `resources/list` names every document.

A tool result carries its data as `structuredContent` (matching the tool's output
schema), the same JSON as text (what the spec asks of tools with structured
output), and then a resource link to each document it names, so a client can open
the original.

`build_server(runtime_of)` makes the server; `rag mcp` (rag/cli/mcp.py) runs it
over stdio and `HttpEndpoint` is the same server over streamable HTTP, one ASGI app
that `rag serve` mounts at /mcp. `runtime_of` is called when a request arrives (the
web app opens its runtime at startup, after its routes are built). The generator
loads on the first `ask` (Runtime.engine), never at start.
"""

import contextlib
import inspect
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any

import anyio.to_thread
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import (
    CallToolResult,
    Resource,
    ResourceLink,
    ResourceTemplate,
    TextContent,
    ToolAnnotations,
)
from pydantic import Field
from starlette.types import Receive, Scope, Send
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

import rag
from rag.runtime import Runtime
from rag.store import DocRecord

DOCUMENT_PREFIX = "rag://documents/"
DOCUMENT_TEMPLATE = DOCUMENT_PREFIX + "{doc_id}"
MAX_TEXT = 2000  # characters of a question or query (as the web API: web/asking.py)
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)

INSTRUCTIONS = (
    "Searches and answers from the user's own documents. `search` returns passages; `ask`"
    " returns an answer whose [n] markers point at sources[n-1], with citations checked"
    " against those passages; `list_documents` names the documents. Each document's original"
    " file is the resource rag://documents/{id}.")


def described(kind, text: str):
    """A field type with its description in the output schema."""
    return Annotated[kind, Field(description=text)]


DocId = described(str, "The document's id (the SHA-256 of its bytes); its original file is"
                       " the resource rag://documents/{id}.")
Uri = described(str, "The document's resource: its original file.")


class Passage(TypedDict):
    """A stored passage of a document."""

    marker: described(int, "Its rank in a search; its [n] in an answer.")
    doc: DocId
    title: str
    path: described(str, "The file the document was ingested from.")
    page_start: described(int, "First page, counted from 1 (a text file is one page).")
    page_end: int
    heading: described(str, "The section heading above the passage, if any.")
    score: float
    text: str
    uri: Uri
    ocr: described(bool, "Its text was read by OCR from a scanned page: check the page.")


class Citation(TypedDict):
    """A claim of the answer and the passage [marker] that it cites."""

    marker: described(int, "The [n] in the answer: sources[n-1].")
    doc: DocId
    title: str
    page: int
    page_end: int
    sentence: described(str, "The claim, its markers removed.")
    quote: described(str, "The span of the passage that best matches the claim.")
    supported: described(bool, "Whether the passage supports the claim.")
    inferred: described(bool, "Attached by the checker: the model gave no marker.")
    score: float
    uri: Uri
    ocr: described(bool, "The passage's text was read by OCR from a scanned page.")


class SearchResult(TypedDict):
    query: str
    relevant: described(bool, "False: nothing found is close enough to answer from.")
    passages: list[Passage]


class AskResult(TypedDict):
    question: str
    answer: described(str, "The answer, citing sources as [n]; markers that pointed nowhere"
                           " are removed.")
    refused: described(bool, "The sources do not hold the answer.")
    support: described(str | None, "all, some or none of its sentences supported by their"
                                   " citations; null when refused.")
    finish: described(str, "stop, length, timeout, loop (a repeated line) or refused.")
    notice: str
    citations: list[Citation]
    sources: described(list[Passage], "The numbered passages the model was given.")


class DocumentInfo(TypedDict):
    id: DocId
    title: str
    path: str
    filename: str
    mime: str
    pages: int
    chunks: described(int, "Stored passages.")
    size: described(int, "Bytes of the original file.")
    added_at: described(float, "When it was stored, seconds since the epoch.")
    uri: Uri


class DocumentList(TypedDict):
    total: described(int, "Documents in the store.")
    documents: list[DocumentInfo]


def document_uri(doc_id: str) -> str:
    return DOCUMENT_PREFIX + doc_id


def passage_json(marker: int, p) -> Passage:
    return Passage(marker=marker, doc=p.doc_id, title=rag.source_title(p), path=p.path,
                   page_start=p.page_start, page_end=p.page_end, heading=p.heading,
                   score=float(p.score), text=p.text, uri=document_uri(p.doc_id),
                   ocr=bool(p.ocr))


def citation_json(c) -> Citation:
    return Citation(marker=c.marker, doc=c.doc_id, title=c.title, page=c.page,
                    page_end=c.page_end, sentence=c.sentence, quote=c.quote,
                    supported=c.supported, inferred=c.inferred, score=float(c.score),
                    uri=document_uri(c.doc_id), ocr=bool(c.ocr))


def document_json(r: DocRecord) -> DocumentInfo:
    return DocumentInfo(id=r.id, title=r.title, path=r.path, filename=_filename(r), mime=r.mime,
                        pages=r.pages, chunks=r.chunks, size=r.size, added_at=r.added_at,
                        uri=document_uri(r.id))


def _filename(r: DocRecord) -> str:
    return r.path.replace("\\", "/").rsplit("/", 1)[-1] or r.id[:12]


def document_link(r: DocRecord) -> ResourceLink:
    return ResourceLink(uri=document_uri(r.id), name=_filename(r), title=r.title or None,
                        mime_type=r.mime or None, size=r.size or None,
                        description=f"the original file ({r.pages} pages)")


def tool_result(data: dict, records: list[DocRecord]) -> CallToolResult:
    """`data` as structured content and as JSON text, then a link to each document."""
    text = TextContent(text=json.dumps(data, ensure_ascii=False))
    return CallToolResult(content=[text, *map(document_link, records)], structured_content=data)


def _records(runtime: Runtime, doc_ids) -> list[DocRecord]:
    """The stored documents among `doc_ids`, in that order, each once."""
    docs = {d.id: d for d in runtime.store.documents.list()}
    return [docs[i] for i in dict.fromkeys(doc_ids) if i in docs]


def _errors() -> tuple[type[Exception], ...]:
    """The library's named exceptions: a tool answers them as an error result."""
    return (rag.ModelError, rag.StoreError, rag.EngineError, rag.Busy, ValueError)


class DocumentServer(MCPServer):
    """MCPServer whose resources are the store's documents, each read with its own mime
    type (the SDK's templates give every match the one mime type of the template)."""

    def __init__(self, runtime_of: Callable[[], Runtime], **settings: Any):
        super().__init__(**settings)
        self.runtime_of = runtime_of

    async def list_resources(self) -> list[Resource]:
        records = await anyio.to_thread.run_sync(self._list)
        return [*await super().list_resources(), *(
            Resource(uri=document_uri(r.id), name=_filename(r), title=r.title or None,
                     mime_type=r.mime or None, size=r.size or None,
                     description=f"{r.pages} pages, {r.chunks} passages") for r in records)]

    async def list_resource_templates(self) -> list[ResourceTemplate]:
        return [*await super().list_resource_templates(), ResourceTemplate(
            uri_template=DOCUMENT_TEMPLATE, name="document", title="A stored document",
            description="The original file of a stored document (its id: list_documents)"
                        ", with its own mime type.")]

    async def read_resource(self, uri, context: Context | None = None):
        uri = str(uri)
        if not uri.startswith(DOCUMENT_PREFIX):
            return await super().read_resource(uri, context)
        return [await anyio.to_thread.run_sync(self._read, uri[len(DOCUMENT_PREFIX):])]

    def _list(self) -> list[DocRecord]:
        return self.runtime_of().store.documents.list()

    def _read(self, doc_id: str) -> ReadResourceContents:
        store = self.runtime_of().store
        record = store.documents.get(doc_id) if doc_id else None
        if record is None:
            raise ResourceNotFoundError(f"no document {doc_id!r}")
        data = store.originals.read(record.file)  # from disk, or the object store
        if data is None:
            raise ResourceError(f"document {doc_id}: its original file is missing")
        if record.mime.startswith("text/"):
            try:
                return ReadResourceContents(content=data.decode("utf-8"), mime_type=record.mime)
            except UnicodeDecodeError:
                pass  # served as bytes
        return ReadResourceContents(content=data, mime_type=record.mime or None)


Query = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
DocIds = Annotated[list[str] | None, Field(
    description="Only these documents (ids from list_documents); default all.")]
K = Annotated[int | None, Field(ge=1, le=50,
                                description="Passages to retrieve (default: the server's k).")]


def build_server(runtime_of: Callable[[], Runtime], *, log_level: str = "INFO") -> DocumentServer:
    """The MCP server over the runtime `runtime_of()` returns (called per request)."""
    server = DocumentServer(runtime_of, name="rag", title="Cited answers from your documents",
                            version=rag.__version__, instructions=INSTRUCTIONS,
                            log_level=log_level)

    def search(query: Query, k: K = None,
               doc_ids: DocIds = None) -> Annotated[CallToolResult, SearchResult]:
        """The passages of the user's documents that best match `query`, best first, each
        with its document's id, title, path, page range, score and text."""
        runtime = runtime_of()
        try:
            passages = rag.search(query, runtime, k=k or runtime.config.k,
                                  doc_ids=list(doc_ids or []) or None)
        except _errors() as exc:
            raise ToolError(str(exc)) from exc
        data = SearchResult(query=query, relevant=rag.is_relevant(passages),
                            passages=[passage_json(i, p) for i, p in enumerate(passages, 1)])
        return tool_result(data, _records(runtime, (p.doc_id for p in passages)))

    async def ask(question: Query, ctx: Context, k: K = None, doc_ids: DocIds = None,
                  max_tokens: Annotated[int | None, Field(
                      ge=1, description="Longest answer, in tokens (at most the server's"
                                        " max_tokens, the default).")] = None
                  ) -> Annotated[CallToolResult, AskResult]:
        """Answer `question` from the user's documents with a local model. The answer cites
        its sources as [n] (n counts from 1 into `sources`); every citation is checked
        against its passage (`supported`). When the documents do not hold the answer it
        says so (`refused`). Slow on a CPU: each generated token is reported as progress."""
        runtime = runtime_of()
        most = runtime.config.max_tokens  # a client may ask for less, never for more
        answer = await _answer(runtime, ctx, question, k=k, doc_ids=doc_ids or (),
                               max_tokens=min(max_tokens or most, most))
        data = AskResult(question=question, answer=answer.text, refused=answer.refused,
                         support=answer.support, finish=answer.finish, notice=answer.notice,
                         citations=[citation_json(c) for c in answer.citations],
                         sources=[passage_json(i, p) for i, p in enumerate(answer.sources, 1)])
        cited = [c.doc_id for c in answer.citations] + [p.doc_id for p in answer.sources]
        return tool_result(data, await anyio.to_thread.run_sync(_records, runtime, cited))

    def list_documents(offset: Annotated[int, Field(ge=0)] = 0,
                       limit: Annotated[int, Field(ge=1, le=1000)] = 200
                       ) -> Annotated[CallToolResult, DocumentList]:
        """The stored documents, oldest first: id, title, path, pages, chunks (passages).
        `total` counts them all; `offset` and `limit` page through a large library."""
        records = runtime_of().store.documents.list()
        page = records[offset:offset + limit]
        data = DocumentList(total=len(records), documents=[document_json(r) for r in page])
        return tool_result(data, page)

    for fn, title in ((search, "Search the documents"), (ask, "Ask the documents"),
                      (list_documents, "List the documents")):
        server.add_tool(fn, title=title, description=inspect.cleandoc(fn.__doc__),
                        annotations=READ_ONLY, structured_output=True)
    return server


async def _answer(runtime: Runtime, ctx: Context, question: str, **options):
    """rag.astream_answer collected; each token is reported as progress (a client that
    asked for progress keeps waiting while a slow CPU generates)."""
    if runtime.loaded_engine() is None:
        await ctx.report_progress(0, message="loading the generator (first question only)")
    tokens = 0
    try:
        async for event in rag.astream_answer(question, runtime, **options):
            if isinstance(event, rag.TokenEvent):
                tokens += 1
                await ctx.report_progress(tokens)
            elif isinstance(event, rag.DoneEvent):
                return event.answer
    except _errors() as exc:
        raise ToolError(str(exc)) from exc
    raise ToolError("the answer ended without a result")  # astream_answer always ends with Done


class HttpEndpoint:
    """The server over streamable HTTP as one ASGI app, to mount in a web app (at /mcp).

    `runtime` may be set after construction (the web app opens it at startup, after
    its routes are built). `lifespan()` must wrap the host app's life: it runs the
    SDK's session manager (a fresh one each time, as a test client may start an app
    twice). Stateless: every request is served alone, so any replica can answer it.
    With `host` a loopback name the SDK refuses other Host and Origin headers (DNS
    rebinding), as `rag serve` does for its own routes when it has no API key.
    """

    def __init__(self, runtime: Runtime | None = None, *, host: str = "127.0.0.1"):
        self.runtime, self.host = runtime, host
        self.server = build_server(self._runtime, log_level="WARNING")
        # The SDK logs every HTTP request at INFO ("Terminating session"): not the host's log.
        logging.getLogger("mcp").setLevel(logging.WARNING)

    def _runtime(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("HttpEndpoint.runtime is not set")
        return self.runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.server.session_manager.handle_request(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app=None):
        self.server.streamable_http_app(stateless_http=True, host=self.host)  # a new manager
        async with self.server.session_manager.run():
            yield
