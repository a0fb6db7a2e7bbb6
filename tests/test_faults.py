"""The fault suite: the service as an unlucky user meets it, against a real `rag serve`
(offline pack, real store on disk): same-named uploads, crashes with queued uploads,
orphans of an interrupted write, a full disk, oversized requests, request ids."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
HANG_GUARD = 600  # seconds: only against a hang, never a speed assertion


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`rag serve --offline` over one store folder; can be killed and started again."""

    def __init__(self, pack_config, db: Path, log: Path, **env: str):
        self.db, self.log_path = db, log
        self.env = dict(os.environ, RAG_MODELS="pack", RAG_CACHE_DIR=str(pack_config.cache_dir),
                        RAG_EMBEDDER=pack_config.embedder, RAG_GENERATOR=pack_config.generator,
                        **env)
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> Server:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "serve", "--port", str(port), "--offline",
             "--db", str(self.db)], cwd=ROOT, env=self.env, stdout=log,
            stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + HANG_GUARD
        while True:
            assert self.proc.poll() is None, f"server exited: {self.log()[-2000:]}"
            try:
                if self.call("GET", "/health", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not answer /health"
            time.sleep(0.3)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=HANG_GUARD)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None, timeout: float = 120) -> tuple[int, dict, dict]:
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                raw, status, got = r.read(), r.status, dict(r.headers)
        except urllib.error.HTTPError as exc:
            raw, status, got = exc.read(), exc.code, dict(exc.headers)
        headers = {k.lower(): v for k, v in got.items()}
        if "json" not in headers.get("content-type", ""):
            return status, {"raw": raw}, headers
        return status, json.loads(raw) if raw.strip() else {}, headers

    def upload(self, files: list[tuple[str, bytes]], replace: bool = False):
        boundary = uuid.uuid4().hex
        parts = []
        for name, data in files:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files";'
                         f' filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                         .encode() + data + b"\r\n")
        if replace:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="replace"'
                         '\r\n\r\ntrue\r\n'.encode())
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.call("POST", "/api/documents", body,
                         {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def wait(self, job_ids: list[str]) -> dict[str, dict]:
        deadline = time.monotonic() + HANG_GUARD
        while True:
            jobs = {i: self.call("GET", f"/api/jobs/{i}")[1] for i in job_ids}
            if all(j.get("status") in ("done", "failed", "cancelled") for j in jobs.values()):
                return jobs
            assert time.monotonic() < deadline, jobs
            time.sleep(0.3)

    def documents(self) -> list[dict]:
        return self.call("GET", "/api/documents")[1]["documents"]


def note(n: int, words: int = 60) -> bytes:
    """A distinct small text document."""
    body = " ".join(f"fact{n}x{i} measured in station {n} during season {i}."
                    for i in range(words // 8))
    return f"Field note {n}\n\n{body}\n".encode()


@pytest.fixture
def server(pack_config, tmp_path):
    srv = Server(pack_config, tmp_path / "db", tmp_path / "server.log").start()
    yield srv
    if srv.proc.poll() is None:
        srv.kill()


# -- same name, other document ---------------------------------------------------
def test_uploads_never_replace_another_document(server):
    a, b = b"Report A\n\nThe harvest was 12 tonnes.\n", b"Report B\n\nThe harvest was 40 tonnes.\n"
    status, body, _ = server.upload([("report.txt", a)])
    assert status == 202
    first_id = server.wait([body["jobs"][0]["id"]])[body["jobs"][0]["id"]]["result"]["doc_id"]
    # The same name again, names equal only after sanitising, twice in one request.
    status, body, _ = server.upload([("report.txt", b), ("a:b.txt", note(1)),
                                     ("a?b.txt", note(2)), ("C:\\x\\plan.txt", note(3)),
                                     ("/home/x/plan.txt", note(4)), ("caf\u00e9.txt", note(5)),
                                     ("cafe\u0301.txt", note(6)), ("twice.txt", note(7)),
                                     ("twice.txt", note(8))])
    assert status == 202 and body["refused"] == []
    jobs = server.wait([j["id"] for j in body["jobs"]])
    assert all(j["status"] == "done" and j["result"]["status"] == "ingested"
               for j in jobs.values()), jobs
    paths = sorted(d["path"] for d in server.documents())
    assert paths == sorted(["upload/report.txt", "upload/report (2).txt", "upload/a_b.txt",
                            "upload/a_b (2).txt", "upload/plan.txt", "upload/plan (2).txt",
                            "upload/caf\u00e9.txt", "upload/caf\u00e9 (2).txt",
                            "upload/twice.txt", "upload/twice (2).txt"])
    # B's bytes under A's name: recognised as B, A untouched.
    status, body, _ = server.upload([("report.txt", b)])
    job = server.wait([body["jobs"][0]["id"]])[body["jobs"][0]["id"]]
    assert job["result"]["status"] == "unchanged"
    assert job["result"]["path"] == "upload/report (2).txt"
    docs = {d["path"]: d for d in server.documents()}
    assert len(docs) == 10
    doc_a = docs["upload/report.txt"]
    assert doc_a["id"] == first_id
    status, body, _ = server.call("GET", f"/api/documents/{doc_a['id']}/file")
    assert status == 200 and body["raw"] == a
    # Replacing is explicit.
    status, body, _ = server.upload([("report.txt", b"Report A, corrected\n\n13 tonnes.\n")],
                                    replace=True)
    job = server.wait([body["jobs"][0]["id"]])[body["jobs"][0]["id"]]
    assert job["result"]["status"] == "replaced" and job["result"]["path"] == "upload/report.txt"
    docs = {d["path"]: d for d in server.documents()}
    assert len(docs) == 10 and docs["upload/report.txt"]["id"] != doc_a["id"]
    assert server.call("GET", f"/api/documents/{doc_a['id']}")[0] == 404


def test_a_title_is_never_a_job_id(server):
    long_first = ("word " * 60 + "\n\nBody text of the note.\n").encode()
    status, body, _ = server.upload([("long first line.txt", long_first),
                                     ("untitled page.html", b"<html><body><p>No title here.</p>"
                                                            b"</body></html>")])
    jobs = server.wait([j["id"] for j in body["jobs"]])
    assert all(j["status"] == "done" for j in jobs.values()), jobs
    titles = sorted(d["title"] for d in server.documents())
    assert titles == ["long first line", "untitled page"], titles


# -- a crash or a stop with uploads queued ---------------------------------------
@pytest.mark.parametrize("how", ["kill", "term"])
def test_queued_uploads_survive_a_crash_and_a_stop(server, how):
    status, body, _ = server.upload([(f"note {n}.txt", note(n)) for n in range(30)])
    assert status == 202 and len(body["jobs"]) == 30
    ids = [j["id"] for j in body["jobs"]]
    if how == "kill":
        server.kill()
    else:
        assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    server.start()
    jobs = server.wait(ids)  # old ids still answer, and every job finishes
    assert [j["status"] for j in jobs.values()] == ["done"] * 30, jobs
    assert len(server.documents()) == 30
    assert not any((server.db / "uploads").iterdir())  # every copy gone once ingested
    listed = {j["id"] for j in server.call("GET", "/api/jobs")[1]["jobs"]}
    assert set(ids) <= listed


def test_a_queued_job_can_be_cancelled(server):
    status, body, _ = server.upload([(f"c{n}.txt", note(100 + n, words=400)) for n in range(6)])
    last = body["jobs"][-1]["id"]
    status, job, _ = server.call("POST", f"/api/jobs/{last}/cancel")
    assert status == 200, job
    jobs = server.wait([j["id"] for j in body["jobs"]])
    assert jobs[last]["status"] == "cancelled"
    assert len(server.documents()) == 5
    assert server.call("POST", f"/api/jobs/{last}/cancel")[0] == 409
    assert server.call("POST", "/api/jobs/nope/cancel")[0] == 404


# -- bounds ------------------------------------------------------------------------
def test_every_request_is_bounded_on_its_own(server):
    status, body, _ = server.upload([(f"n{n}.txt", note(n, words=8)) for n in range(105)])
    assert status == 202 and len(body["jobs"]) == 100
    assert [r["status"] for r in body["refused"]] == [413] * 5
    assert all("more than 100 files" in r["error"] for r in body["refused"])
    server.wait([j["id"] for j in body["jobs"]])
    status, body, _ = server.call("GET", "/api/search?q=" + "ice%20" * 12000)
    assert status == 422 and "q:" in body["error"]
    # The body is declared and not sent: the bound holds on the declared length, before
    # any of it is read (sending it would race the answer: the server closes the
    # connection on the unread rest, and the client may see a broken pipe instead).
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=120)
    try:
        connection.putrequest("POST", "/api/ask")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(1_000_030))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and json.loads(response.read())["request_id"]
    finally:
        connection.close()


def test_an_oversize_file_is_refused_alone(pack_config, tmp_path):
    srv = Server(pack_config, tmp_path / "db", tmp_path / "server.log",
                 RAG_MAX_UPLOAD_MB="1").start()
    try:
        status, body, _ = srv.upload([("ok.txt", note(1)), ("big.txt", b"y " * 600_000),
                                      ("ok2.txt", note(2))])
        assert status == 202
        assert [j["filename"] for j in body["jobs"]] == ["ok.txt", "ok2.txt"]
        assert body["refused"] == [{"filename": "big.txt", "status": 413,
                                    "error": "big.txt: larger than 1 MB"}]
        status, body, _ = srv.upload([("big.txt", b"y " * 600_000)])
        assert status == 413 and body["refused"][0]["filename"] == "big.txt"
    finally:
        srv.kill()


def test_errors_carry_a_request_id_that_the_log_has(server):
    status, body, headers = server.call("GET", "/api/documents/nope")
    assert status == 404 and re.fullmatch(r"[0-9a-f]{16}", body["request_id"])
    assert headers["x-request-id"] == body["request_id"]
    status, body, _ = server.call("GET", "/api/jobs/nope", headers={"X-Request-ID": "abc-123"})
    assert body["request_id"] == "abc-123"
    deadline = time.monotonic() + HANG_GUARD  # the log is written soon; no speed bound
    while "abc-123" not in server.log():
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.2)


# -- a full disk -------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_clear_line_and_delete_frees_space(pack_config, tmp_path,
                                                              small_disk):
    srv = Server(pack_config, small_disk / "db", tmp_path / "server.log",
                 RAG_MIN_FREE_MB="0").start()
    try:
        accepted, refusals, n = [], [], 0
        while len(refusals) < 3 and n < 400:
            status, body, _ = srv.upload([(f"big {n}.txt", note(n, words=20_000))])
            n += 1
            accepted += [j["id"] for j in body.get("jobs", [])]
            refusals += body.get("refused", [])
            if n % 5 == 0:
                srv.wait(accepted)
        jobs = srv.wait(accepted)
        assert refusals, f"the disk never filled after {n} uploads"
        for refusal in refusals:
            assert refusal["status"] == 507 and "storage full" in refusal["error"]
        reasons = [j["reason"] for j in jobs.values() if j["status"] == "failed"]
        for text in [r["error"] for r in refusals] + reasons:
            assert "\n" not in text and not re.search(r"/\w+/", text), text
        # Job states match the library.
        stored = {d["id"] for d in srv.documents()}
        for job in jobs.values():
            landed = job["result"] and job["result"]["doc_id"] in stored
            assert (job["status"] == "done") == bool(landed), job
        # DELETE frees space, and then uploads work again.
        before = shutil.disk_usage(small_disk).free
        for doc in srv.documents()[:3]:
            status, body, _ = srv.call("DELETE", f"/api/documents/{doc['id']}")
            assert status == 204, body
        assert srv.call("GET", "/health")[0] == 200
        assert shutil.disk_usage(small_disk).free > before
        status, body, _ = srv.upload([("after.txt", note(9999, words=16))])
        assert status == 202, body
        job = srv.wait([body["jobs"][0]["id"]])[body["jobs"][0]["id"]]
        assert job["status"] == "done", job
    finally:
        srv.kill()


# -- orphans of an interrupted write ------------------------------------------------
ORPHAN_WRITER = """
import sys
import numpy as np
from rag.store import Store
from rag.types import Chunk, Document, Page
store = Store(sys.argv[1], int(sys.argv[2]))
text = "Vostok ice core records of the last glacial cycle. " * 4
doc = Document(path="upload/vostok.txt", title="Vostok", mime="text/plain",
               sha256="f" * 64, pages=[Page(1, text)])
chunks = [Chunk(doc.id, i, text, 1, 1, 0, len(text)) for i in range(40)]
vectors = [np.ones((1, store.dim), np.float32) for _ in chunks]
store.chunks.add([store.chunks.rows(doc, chunks, vectors)])  # then dies before the row
"""


def test_a_server_start_sweeps_what_a_dead_writer_left(pack_config, embedder, tmp_path):
    from rag.store import Store

    db = tmp_path / "db"
    srv = Server(pack_config, db, tmp_path / "server.log").start()
    status, body, _ = srv.upload([("ice.txt", b"Ice notes\n\nThe Vostok ice core is 3,623 m"
                                              b" long. It holds 420,000 years of climate.\n")])
    srv.wait([body["jobs"][0]["id"]])
    srv.kill()
    subprocess.run([sys.executable, "-c", ORPHAN_WRITER, str(db), str(embedder.dim)],
                   cwd=ROOT, check=True, env=srv.env)
    store = Store(db, embedder.dim)
    assert store.chunks.doc_ids() - store.documents.ids() == {"f" * 64}
    srv.start()
    try:
        health = srv.call("GET", "/health")[1]
        assert health["store"] == {"documents": 1, "chunks": 1}, health
        deadline = time.monotonic() + HANG_GUARD
        while Store(db, embedder.dim).chunks.doc_ids() != {store.documents.ids().pop()}:
            assert time.monotonic() < deadline, "the orphans were never swept"
            time.sleep(0.5)
        status, found, _ = srv.call("GET", "/api/search?q=Vostok%20ice%20core&k=6")
        assert status == 200 and [p["title"] for p in found["passages"]] == ["Ice notes"]
    finally:
        srv.kill()
