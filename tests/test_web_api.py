"""The JSON API through litestar's TestClient, on the real offline models and a fresh store."""

from __future__ import annotations

import time

import pytest

from tests.conftest import CORPORA


@pytest.fixture
def make_client(runtime):
    from litestar.testing import TestClient

    from rag.config import replace
    from web.app import create_app

    clients = []

    def make(**changes):
        config = replace(runtime.config, **changes)
        client = TestClient(app=create_app(config, runtime))
        clients.append(client.__enter__())
        return clients[-1]

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


def upload(client, *files, headers=None):
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return client.post("/api/documents", files=parts, headers=headers or {})


def wait_job(client, job_id, timeout=300, headers=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=headers or {}).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def ingest(client, *files):
    response = upload(client, *files)
    assert response.status_code == 202, response.text
    return [wait_job(client, j["id"]) for j in response.json()["jobs"]]


def parse_sse(text):
    events, name, data = [], None, []
    for line in text.splitlines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line.strip() and (name or data):
            events.append((name, "\n".join(data)))
            name, data = None, []
    if name or data:
        events.append((name, "\n".join(data)))
    return events


@pytest.mark.slow
def test_upload_list_ask_stream_search_delete(client):
    import json

    pdf = (CORPORA / "aurora-observatory.pdf").read_bytes()
    md = (CORPORA / "lichen-field-notes.md").read_bytes()
    jobs = ingest(client, ("aurora-observatory.pdf", pdf), ("lichen-field-notes.md", md))
    assert [j["status"] for j in jobs] == ["done", "done"], jobs
    assert jobs[0]["result"]["chunks"] > 0

    docs = client.get("/api/documents").json()["documents"]
    by_name = {d["filename"]: d for d in docs}
    assert set(by_name) == {"aurora-observatory.pdf", "lichen-field-notes.md"}
    aurora = by_name["aurora-observatory.pdf"]
    assert aurora["pages"] >= 1 and aurora["chunks"] > 0 and aurora["mime"] == "application/pdf"
    assert client.get(f"/api/documents/{aurora['id']}").json()["title"] == aurora["title"]

    file = client.get(f"/api/documents/{aurora['id']}/file")
    assert file.status_code == 200
    assert file.headers["content-type"] == "application/pdf"
    assert file.content == pdf
    assert file.headers["x-content-type-options"] == "nosniff"
    assert file.headers["content-security-policy"] == "sandbox"
    assert file.headers["content-disposition"].startswith("inline")

    question = "When was the Aurora observatory completed?"
    answer = client.post("/api/ask", json={"question": question})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {"answer", "citations", "sources", "refused"} <= set(body)
    assert body["sources"] and not body["refused"]
    assert body["answer"].strip()
    assert body["sources"][0]["doc"] == aurora["id"]  # the tiny pack model may misread it
    assert any("1987" in s["text"] for s in body["sources"])

    streamed = client.post("/api/ask", json={"question": question, "stream": True})
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(streamed.text)
    names = [n for n, _ in events]
    assert "sources" in names and "token" in names and names[-1] == "done", names
    done = json.loads(events[-1][1])
    assert done["answer"].strip() and done["sources"]
    tokens = "".join(json.loads(d)["text"] for n, d in events if n == "token")
    assert tokens.strip()

    found = client.get("/api/search", params={"q": "observatory completed", "k": 3}).json()
    assert 0 < len(found["passages"]) <= 3
    assert found["passages"][0]["doc"] == aurora["id"]

    assert client.delete(f"/api/documents/{aurora['id']}").status_code == 204
    assert client.delete(f"/api/documents/{aurora['id']}").status_code == 404
    assert client.get(f"/api/documents/{aurora['id']}").status_code == 404
    left = [d["filename"] for d in client.get("/api/documents").json()["documents"]]
    assert left == ["lichen-field-notes.md"]


@pytest.mark.slow
def test_health_and_errors_are_json(client):
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["models"]["embedder"] and health["models"]["generator"]
    assert health["store"] == {"documents": 0, "chunks": 0}

    missing = client.get("/api/documents/nope")
    assert missing.status_code == 404 and missing.json()["error"]
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.get("/api/documents/nope/file").json()["error"]
    assert client.post("/api/ask", json={"question": "  "}).status_code == 422
    assert client.post("/api/ask", json={"question": "x" * 2001}).status_code == 422
    assert client.post("/api/ask", json={"question": "hi", "k": 99}).status_code == 422
    bad = client.post("/api/ask", content=b"{not json", headers={"content-type":
                                                                  "application/json"})
    assert bad.status_code == 400 and "error" in bad.json()
    assert client.post("/api/documents", files=[]).status_code in (400, 415)
    assert "openapi" in client.get("/schema/openapi.json").json()


@pytest.mark.slow
def test_oversized_upload_is_413(make_client):
    client = make_client(max_upload_mb=1)
    big = b"a" * (2 * 1024 * 1024)
    response = upload(client, ("big.txt", big))
    assert response.status_code == 413
    assert response.json()["error"]
    half = upload(client, ("half.txt", b"word " * (1024 * 1024 // 5 + 10)))
    assert half.status_code == 413  # past the per-file limit, under the request limit


@pytest.mark.slow
def test_filename_is_sanitized_and_nothing_escapes(client, runtime, tmp_path):
    before = set(tmp_path.rglob("*"))
    job = ingest(client, ("../../evil.txt", b"The evil plan was filed in 1999.\n"))[0]
    assert job["status"] == "done", job
    assert job["filename"] == "evil.txt"
    docs = client.get("/api/documents").json()["documents"]
    assert [d["filename"] for d in docs] == ["evil.txt"]
    assert docs[0]["path"] == "upload/evil.txt"
    assert not (tmp_path.parent / "evil.txt").exists()
    assert not any(p.name == "evil.txt" for p in tmp_path.parent.parent.iterdir())
    created = set(tmp_path.rglob("*")) - before
    assert all(runtime.config.db in p.parents for p in created), created
    assert not any((runtime.config.db / "uploads").iterdir())  # temp copies removed


@pytest.mark.slow
def test_html_is_served_as_sandboxed_text(client):
    page = (b"<!doctype html><html><head><title>Trap</title></head><body>"
            b"<p>The harbour light was rebuilt in 1911.</p>"
            b"<script>alert(document.cookie)</script></body></html>")
    job = ingest(client, ("trap.html", page))[0]
    assert job["status"] == "done", job
    doc = client.get(f"/api/documents/{job['result']['doc_id']}/file")
    assert doc.status_code == 200
    assert doc.headers["content-type"].startswith("text/plain")
    assert "charset=utf-8" in doc.headers["content-type"]
    assert doc.headers["content-security-policy"] == "sandbox"
    assert doc.headers["x-content-type-options"] == "nosniff"


@pytest.mark.slow
def test_bad_files_fail_with_reasons(client):
    response = upload(client, ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf\n"),
                      ("noise.pdf", bytes(range(256)) * 4), ("tool.exe", b"MZ\x90\x00"),
                      ("empty.txt", b""))
    assert response.status_code == 202
    jobs = {j["filename"]: wait_job(client, j["id"]) for j in response.json()["jobs"]}
    assert all(j["status"] == "failed" and j["reason"] for j in jobs.values()), jobs
    assert "unsupported" in jobs["tool.exe"]["reason"]
    assert "PDF" in jobs["noise.pdf"]["reason"]
    assert client.get("/api/documents").json()["documents"] == []
    recent = client.get("/api/jobs").json()["jobs"]
    assert {j["filename"] for j in recent} >= set(jobs)


@pytest.mark.slow
def test_api_key_is_required_when_set(make_client):
    client = make_client(api_key="s3cret")
    for path in ("/health", "/api/documents", "/api/jobs"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]
    assert client.get("/api/documents", headers={"Authorization": "Bearer wrong"}) \
        .status_code == 401
    ok = client.get("/api/documents", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert client.post("/api/ask", json={"question": "x"}).status_code == 401
    assert client.get("/").status_code == 200  # the page itself; it sends the key


def test_serve_refuses_a_public_host_without_a_key():
    from click.testing import CliRunner

    from rag.cli.serve import serve

    result = CliRunner().invoke(serve, ["--host", "0.0.0.0", "--offline"])
    assert result.exit_code == 2
    assert "refusing to bind 0.0.0.0 without --api-key" in result.output


@pytest.mark.slow
class FailingEngine:
    """An engine whose model fails mid-answer (as a remote endpoint that goes away does)."""

    name = "failing"

    def __init__(self):
        from rag.tokencount import CharTokenizer

        self.tokenizer = CharTokenizer()

    def submit(self, request):
        from rag.streams import GenEvent, GenStream

        stream = GenStream()
        stream.put(GenEvent(text="Herons nest"))
        stream.put(GenEvent(finish="error", error="generator http://127.0.0.1:9/v1: gone"))
        return stream

    def stats(self):
        return {"running": 0, "waiting": 0}


def test_a_generation_failure_is_an_error_event_and_the_server_stays_healthy(
        make_client, runtime, monkeypatch):
    import json

    import rag.answering
    from rag.types import Passage

    passage = Passage("c1", "d1", "Birds", "/birds.txt", "Herons nest in reed beds.", 1, 1, 0,
                      25, scores={"piece": 0.9, "vector_weight": 1.0})
    monkeypatch.setattr(rag.answering.retrieve, "search", lambda *a, **k: [passage])
    runtime._engine = FailingEngine()
    client = make_client()
    response = client.post("/api/ask", json={"question": "Where do herons nest?",
                                             "stream": True})
    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["sources", "token", "error"]
    error = json.loads(events[-1][1])
    assert error == {"error": "generator http://127.0.0.1:9/v1: gone",
                     "request_id": response.headers["x-request-id"]}
    plain = client.post("/api/ask", json={"question": "Where do herons nest?"})
    assert plain.status_code == 502 and "gone" in plain.json()["error"]
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["questions"] == 0


def test_other_sites_cannot_change_anything(client):
    files = {"files": ("note.txt", b"A note about herons.", "text/plain")}
    refused = client.post("/api/documents", files=files,
                          headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and "cross-origin" in refused.json()["error"]
    deleted = client.delete("/api/documents/anything", headers={"Origin": "http://evil.example"})
    assert deleted.status_code == 403
    own = client.post("/api/documents", files=files,
                      headers={"Origin": f"http://{client.base_url.netloc.decode()}"
                               if isinstance(client.base_url.netloc, bytes)
                               else f"http://{client.base_url.netloc}"})
    assert own.status_code == 202


def test_page_has_a_content_security_policy(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "Built with Llama" in page.text


def test_keyless_server_answers_only_to_loopback_names(runtime):
    from litestar.testing import TestClient

    from web.app import create_app

    app = create_app(runtime.config, runtime, allowed_hosts=["127.0.0.1", "localhost", "::1"])
    with TestClient(app=app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/api/documents").status_code == 200
        rebound = client.get("/api/documents", headers={"host": "evil.example:8000"})
        assert rebound.status_code == 400 and "not allowed" in rebound.json()["error"]
