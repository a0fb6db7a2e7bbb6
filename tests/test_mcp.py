"""`rag mcp` through the official MCP SDK's own client: over stdio (the command as a
subprocess) and over streamable HTTP (mounted at /mcp under `rag serve`), on the demo
corpus ingested with the real `rag ingest --offline`."""

from __future__ import annotations

import base64
import json
import sys

import anyio
import pytest

from tests.conftest import CORPORA, ROOT
from tests.test_browser import ingest_corpus, offline_env, run_server

pytestmark = pytest.mark.slow

QUESTION = "When was the Aurora observatory completed?"
AURORA = "aurora-observatory.pdf"
PASSAGE_KEYS = {"marker", "doc", "title", "path", "page_start", "page_end", "heading", "score",
                "text", "uri", "ocr"}
KEY = "mcp-test-key"
HANG_GUARD_S = 600  # generous: the first `ask` loads the generator on a slow CPU


@pytest.fixture(scope="module")
def corpus_db(pack_config, tmp_path_factory):
    """The demo corpus in a fresh store, ingested by the real command."""
    db = tmp_path_factory.mktemp("mcp") / "db"
    ingest_corpus(pack_config, db)
    return db


def run(session_steps) -> None:
    """Run an async test body on an event loop, under the hang guard."""
    async def main():
        with anyio.fail_after(HANG_GUARD_S):
            await session_steps()

    anyio.run(main)


def filename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def check_json_text(result) -> None:
    """The first block is the structured content as JSON text (what the spec asks)."""
    assert not result.is_error, result.content
    assert result.content[0].type == "text"
    assert json.loads(result.content[0].text) == result.structured_content


def links(result) -> list[str]:
    return [c.uri for c in result.content if c.type == "resource_link"]


async def check_search(session) -> dict:
    result = await session.call_tool("search", {"query": QUESTION, "k": 4})
    check_json_text(result)
    data = result.structured_content
    assert data["query"] == QUESTION and data["relevant"] is True
    passages = data["passages"]
    assert 1 <= len(passages) <= 4
    for i, p in enumerate(passages, 1):
        assert set(p) == PASSAGE_KEYS
        assert p["marker"] == i and p["page_start"] >= 1 and p["page_end"] >= p["page_start"]
        assert p["uri"] == f"rag://documents/{p['doc']}" and p["text"].strip()
    first = passages[0]
    assert filename(first["path"]) == AURORA, [filename(p["path"]) for p in passages]
    assert "1987" in first["text"]
    assert links(result)[0] == first["uri"]  # a link to each document, best first
    return first


async def check_documents(session) -> list[dict]:
    result = await session.call_tool("list_documents", {})
    check_json_text(result)
    docs = result.structured_content["documents"]
    assert sorted(d["filename"] for d in docs) == sorted(p.name for p in CORPORA.iterdir())
    assert result.structured_content["total"] == len(docs)
    for d in docs:
        assert d["pages"] >= 1 and d["chunks"] >= 1 and d["size"] > 0
        assert d["uri"] == f"rag://documents/{d['id']}" and d["mime"]
    assert sorted(links(result)) == sorted(d["uri"] for d in docs)
    page = (await session.call_tool("list_documents", {"offset": 2, "limit": 3}))
    assert page.structured_content == {"total": len(docs), "documents": docs[2:5]}
    return docs


async def check_resources(session, docs: list[dict]) -> None:
    from mcp import MCPError

    listed = {r.uri: r for r in (await session.list_resources()).resources}
    assert set(listed) == {d["uri"] for d in docs}
    templates = (await session.list_resource_templates()).resource_templates
    assert [t.uri_template for t in templates] == ["rag://documents/{doc_id}"]
    by_name = {d["filename"]: d for d in docs}
    pdf = (await session.read_resource(by_name[AURORA]["uri"])).contents[0]
    assert pdf.mime_type == "application/pdf"
    assert base64.b64decode(pdf.blob) == (CORPORA / AURORA).read_bytes()
    note = (await session.read_resource(by_name["kestrel-bay-handbook.md"]["uri"])).contents[0]
    assert note.mime_type == "text/markdown"
    assert note.text == (CORPORA / "kestrel-bay-handbook.md").read_text(encoding="utf-8")
    with pytest.raises(MCPError, match="no document"):
        await session.read_resource("rag://documents/" + "0" * 64)


async def check_ask(session, aurora_id: str) -> None:
    progress = []

    async def on_progress(done, total, message):
        progress.append(done)

    result = await session.call_tool("ask", {"question": QUESTION, "max_tokens": 64},
                                     progress_callback=on_progress)
    check_json_text(result)
    data = result.structured_content
    assert data["question"] == QUESTION and isinstance(data["answer"], str)
    assert data["finish"] in {"stop", "length", "loop", "refused"}
    sources = data["sources"]
    assert sources and aurora_id in {s["doc"] for s in sources}
    for i, s in enumerate(sources, 1):
        assert set(s) == PASSAGE_KEYS and s["marker"] == i
    for c in data["citations"]:  # each citation points into the sources
        source = sources[c["marker"] - 1]
        assert c["doc"] == source["doc"] and c["uri"] == source["uri"]
        assert c["quote"] in source["text"] and isinstance(c["supported"], bool)
    if not data["refused"]:
        assert data["support"] in {"all", "some", "none"}
    assert set(links(result)) == {s["uri"] for s in sources}
    assert progress, "no token was reported as progress"


def test_stdio_server(pack_config, corpus_db, tmp_path):
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=sys.executable, cwd=str(ROOT), env=offline_env(pack_config),
        args=["-m", "rag.cli", "mcp", "--offline", "--db", str(corpus_db)])
    errlog = open(tmp_path / "mcp.log", "w+")  # the server's stderr: its logs

    async def steps():
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write, read_timeout_seconds=HANG_GUARD_S) as session:
            info = await session.initialize()
            assert info.server_info.name == "rag"
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert set(tools) == {"search", "ask", "list_documents"}
            assert all(t.output_schema and t.annotations.read_only_hint for t in tools.values())
            first = await check_search(session)
            docs = await check_documents(session)
            await check_resources(session, docs)
            await check_ask(session, first["doc"])

    try:
        run(steps)
    finally:
        errlog.seek(0)
        log = errlog.read()
        errlog.close()
    assert "serving MCP over stdio" in log, log  # the logs went to stderr


def test_http_server_under_rag_serve(pack_config, corpus_db):
    """Mounted at /mcp under `rag serve`, behind the API key like the JSON API."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    server = run_server(pack_config, corpus_db.parent, key=KEY, RAG_MAX_TOKENS="64")
    url = next(server) + "/mcp"
    auth = {"Authorization": f"Bearer {KEY}"}
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    accept = {"Accept": "application/json, text/event-stream"}

    async def steps():
        async with httpx2.AsyncClient(timeout=HANG_GUARD_S) as http:
            refused = await http.post(url, json=ping, headers=accept)
            assert refused.status_code == 401, refused.text
            rebound = await http.post(url, json=ping, headers={**auth, **accept,
                                                               "Host": "evil.example:80"})
            assert rebound.status_code == 421, rebound.text  # DNS rebinding: loopback names only
        async with httpx2.AsyncClient(headers=auth, timeout=HANG_GUARD_S) as http, \
                streamable_http_client(url, http_client=http) as (read, write), \
                ClientSession(read, write, read_timeout_seconds=HANG_GUARD_S) as session:
            await session.initialize()
            first = await check_search(session)
            docs = await check_documents(session)
            await check_resources(session, docs)
            await check_ask(session, first["doc"])

    try:
        run(steps)
    finally:
        server.close()  # stops the server (run_server's finally)
