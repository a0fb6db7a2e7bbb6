"""The store on object storage: a real S3-compatible server (moto's, started here on a
loopback port) holds the tables, the original files and the queued uploads; the real
`rag` commands and two `rag serve` replicas use it through `--db s3://bucket/prefix`.

Claims of upload jobs are raced between processes, leases are kept, lost and taken
over, writers in several processes at once lose nothing, and a replica killed mid-job
leaves it to the other. Waiting is polling against a generous deadline, never a
speed assertion."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import CORPORA, ROOT
from tests.test_faults import HANG_GUARD, Server, free_port, note

pytestmark = pytest.mark.slow

DIM = 8
ELSEWHERE = "another-host/4026531836:4242:1.00"  # a replica on another machine


class S3:
    """moto's S3 server on a loopback port, with one bucket per test."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def env(self) -> dict[str, str]:
        """Credentials and endpoint as the usual AWS variables (for `rag` processes)."""
        return {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    def options(self) -> dict[str, str]:
        """The same as storage_options (for stores opened in this process)."""
        return {"aws_endpoint": self.endpoint, "aws_access_key_id": "test",
                "aws_secret_access_key": "test", "aws_region": "us-east-1"}

    def bucket(self, name: str) -> str:
        """A new bucket; the store URI of a prefix in it."""
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(request, timeout=30).close()
        return f"s3://{name}/store"

    def keys(self, bucket: str) -> list[str]:
        with urllib.request.urlopen(f"{self.endpoint}/{bucket}?list-type=2", timeout=30) as r:
            body = r.read().decode()
        return [part.split("</Key>")[0] for part in body.split("<Key>")[1:]]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + HANG_GUARD
    while True:
        assert proc.poll() is None, "moto's server exited"
        try:
            urllib.request.urlopen(endpoint, timeout=2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "moto's server did not answer"
            time.sleep(0.2)
    yield S3(endpoint)
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def child_env(s3: S3, pack_config=None, **extra: str) -> dict[str, str]:
    """This environment without the user's AWS settings, plus the test server's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3.env(), **extra)
    if pack_config is not None:
        env.update(RAG_MODELS="pack", RAG_CACHE_DIR=str(pack_config.cache_dir),
                   RAG_EMBEDDER=pack_config.embedder, RAG_GENERATOR=pack_config.generator)
    return env


def rag(args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "rag.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert not check or done.returncode == 0, done.stderr[-3000:]
    return done


def until(condition, what: str):
    """Poll `condition()` until it is truthy (its value), within HANG_GUARD."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.3)


def _doc(text: str):
    import numpy as np

    from rag.types import Chunk, Document, Page

    doc = Document(path=f"/{text[:20]}.txt", title=text[:20], mime="text/plain",
                   sha256=hashlib.sha256(text.encode()).hexdigest(), pages=[Page(1, text)])
    return doc, [Chunk(doc.id, 0, text, 1, 1, 0, len(text))], [np.ones((1, DIM), np.float32)]


# -- the store itself ----------------------------------------------------------------
def test_lancedb_tables_files_and_search_work_on_the_bucket(s3):
    import numpy as np

    from rag.store import Store

    uri = s3.bucket("store-basics")
    store = Store(uri, DIM, "test", s3.options())
    assert store.remote and store.originals.folder is None
    texts = ["Glaciers carve U-shaped valleys as they move downhill.",
             "The relief valve is serviced every nine hundred hours.",
             "Photosynthesis converts light energy into chemical energy."]
    items = []
    for i, text in enumerate(texts):
        doc, chunks, vectors = _doc(text)
        vectors = [np.eye(DIM, dtype=np.float32)[i:i + 1]]
        items.append((doc, chunks, vectors, text.encode()))
    records = store.add_documents(items)
    store.chunks.refresh_indexes()
    assert [r["doc_id"] for r in store.chunks.text_search("glaciers valleys", 3)] == \
        [records[0].id]
    assert store.chunks.vector_search(np.eye(DIM, dtype=np.float32)[1], 1)[0]["doc_id"] == \
        records[1].id
    assert store.original(records[2]) == texts[2].encode()  # bytes: not on this disk
    assert records[2].size == len(texts[2].encode())
    # Another process's handle (a fresh open) sees it all; nothing was written locally.
    again = Store(uri, DIM, "test", s3.options())
    assert again.documents.ids() == {r.id for r in records}
    keys = s3.keys("store-basics")
    assert any(k.startswith("store/lance/files.lance/") for k in keys), keys
    assert store.delete_document(records[0].id)
    assert store.originals.read(records[0].file) is None
    assert store.documents.ids() == {records[1].id, records[2].id}
    done = store.maintain(keep_s=0, force=True)  # compaction and cleanup on the bucket
    assert {t.table for t in done.tables} >= {"chunks", "documents", "files"}
    assert not [t.error for t in done.tables if t.error]
    assert store.original(records[1]) == texts[1].encode()
    assert store.chunks.text_search("glaciers", 3) == []


# A process that opens the store on the bucket, then waits for the file `go` (so that
# every one starts at once); argv: uri, endpoint, its name, go.
PRELUDE = """
import sys, time
from pathlib import Path
from rag.store import Store
from rag.store.jobs import JobTable

uri, endpoint, me, go = sys.argv[1:5]
options = {"aws_endpoint": endpoint, "aws_access_key_id": "test",
           "aws_secret_access_key": "test", "aws_region": "us-east-1"}
store = Store(uri, 8, "test", options)
jobs = JobTable(store.db, store.uploads)
while not Path(go).exists():
    time.sleep(0.01)
"""

WRITER = PRELUDE + """
import hashlib
import numpy as np
from rag.types import Chunk, Document, Page

name = me
ids = []
for i in range(5):
    text = f"Station {name} logged reading {i}: {i * 7} millimetres of rain."
    doc = Document(path=f"/{name}/{i}.txt", title=f"{name} {i}", mime="text/plain",
                   sha256=hashlib.sha256(text.encode()).hexdigest(), pages=[Page(1, text)])
    chunks = [Chunk(doc.id, 0, text, 1, 1, 0, len(text))]
    store.add_documents([(doc, chunks, [np.ones((1, 8), np.float32)], text.encode())])
    jobs.update("shared", stage=name)  # every writer rewrites one row too
    ids.append(doc.id)
store.delete_document(ids[0])
print(" ".join(ids[1:]))
"""


def test_writers_in_several_processes_at_once_lose_nothing(s3, tmp_path):
    from rag.store import Store
    from rag.store.jobs import JobRecord, JobTable

    uri = s3.bucket("many-writers")
    store = Store(uri, DIM, "test", s3.options())
    JobTable(store.db, store.uploads).add([JobRecord(id="shared", filename="x",
                                                     status="done")])
    go = tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, uri, s3.endpoint, f"w{n}",
                                 str(go)], cwd=ROOT, env=child_env(s3), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for n in range(4)]
    go.touch()  # all at once, once every one has opened the store
    kept = set()
    for proc in writers:
        out, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == 0, err[-3000:]
        kept |= set(out.split())
    assert len(kept) == 16
    fresh = Store(uri, DIM, "test", s3.options())
    assert fresh.documents.ids() == kept
    assert fresh.chunks.doc_ids() == kept and fresh.chunks.count() == 16
    records = fresh.documents.list()
    assert all(fresh.original(r) for r in records)
    assert fresh.originals.total_bytes() == sum(r.size for r in records)  # deleted ones gone
    stage = JobTable(fresh.db, fresh.uploads).get("shared").stage
    assert stage in {"w0", "w1", "w2", "w3"}


CLAIMER = PRELUDE + """
won = [r.id for r in jobs.claimable() if jobs.claim(r, me, 600)]
print(" ".join(won))
"""


def test_each_job_is_claimed_by_one_replica_when_they_race(s3, tmp_path):
    from rag.store import Store
    from rag.store.jobs import JobRecord, JobTable

    uri = s3.bucket("claim-race")
    store = Store(uri, DIM, "test", s3.options())
    table = JobTable(store.db, store.uploads)
    table.add([JobRecord(id=f"job{n:02d}", filename=f"{n}.txt", status="queued",
                         created_at=float(n)) for n in range(24)])
    go = tmp_path / "go"
    racers = {f"racer{n}": subprocess.Popen(
        [sys.executable, "-c", CLAIMER, uri, s3.endpoint, f"racer{n}", str(go)], cwd=ROOT,
        env=child_env(s3), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for n in range(4)}
    go.touch()
    won = {}
    for name, proc in racers.items():
        out, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == 0, err[-3000:]
        won[name] = out.split()
    claims = [job for jobs in won.values() for job in jobs]
    assert sorted(claims) == [f"job{n:02d}" for n in range(24)], won  # each exactly once
    fresh = JobTable(Store(uri, DIM, "test", s3.options()).db, store.uploads)
    for name, jobs in won.items():
        for job in jobs:
            record = fresh.get(job)
            assert record.owner == name and record.status == "running", record


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_a_lease_is_renewed_lost_and_taken_over(s3, tmp_path, where):
    import pyarrow as pa

    from rag.store import Store
    from rag.store.jobs import SCHEMA, JobRecord, JobTable
    from rag.store.writers import identity

    if where == "bucket":
        store = Store(s3.bucket("leases"), DIM, "test", s3.options())
    else:
        store = Store(tmp_path / "db", DIM, "test")
    # A jobs table of the release before claims: no owner, no lease.
    old = pa.schema([f for f in SCHEMA if f.name not in ("owner", "lease_until")])
    store.db.create_table("jobs", pa.Table.from_pylist(
        [{"id": "old", "filename": "o.txt", "status": "queued", "kind": "text", "size": 1,
          "replace": False, "upload": "", "stage": "queued", "reason": "", "result": "",
          "created_at": 1.0, "finished_at": 0.0}], schema=old))
    table = JobTable(store.db, store.uploads)
    assert {"owner", "lease_until"} <= set(table.table.schema.names)
    me = identity()
    (waiting,) = table.claimable()
    assert waiting.id == "old" and table.claim(waiting, me, 600)
    table.add([JobRecord(id="theirs", filename="t.txt", status="queued", created_at=2.0)])
    (theirs,) = table.claimable()
    assert table.claim(theirs, ELSEWHERE, 600)
    # Their live lease: not claimable, not renewable or finishable by anyone else.
    assert table.claimable() == []
    assert not table.claim(table.get("theirs"), me, 600)
    assert not table.renew("theirs", me, 600) and not table.finish("theirs", me, status="done")
    assert table.renew("theirs", ELSEWHERE, 600, stage="embedding")
    assert table.get("theirs").stage == "embedding"
    # Their lease runs out (they were cut off): any replica takes the job over.
    table.update("theirs", lease_until=time.time() - 1)
    (expired,) = table.claimable()
    assert expired.id == "theirs" and table.claim(expired, me, 600)
    assert not table.renew("theirs", ELSEWHERE, 600)
    assert not table.finish("theirs", ELSEWHERE, status="done")
    assert table.finish("theirs", me, status="done", stage="done")
    assert table.get("theirs").status == "done" and table.get("theirs").lease_until == 0
    # A claim of a dead process on this machine is taken at once, lease or not.
    child = subprocess.Popen(["sleep", "0"])
    dead = identity(child.pid)
    child.wait()
    table.update("old", owner=dead)
    (orphan,) = table.claimable()
    assert orphan.id == "old" and table.claim(orphan, me, 600)
    # Cancelling: a queued job at once; a running one is marked, and its owner's renewal
    # then fails, which is how it learns.
    table.add([JobRecord(id="later", filename="l.txt", status="queued", created_at=3.0)])
    assert table.cancel_queued("later", "no") and not table.cancel_queued("old", "no")
    assert table.cancel_running("old", "stop") and not table.renew("old", me, 600)
    assert table.get("old").status == "cancelled"
    # A local store keeps its uploads in its folder, as before; a bucket in a table.
    assert table.folder == (None if where == "bucket" else tmp_path / "db" / "uploads")


# -- the commands ------------------------------------------------------------------
def test_ingest_ask_search_threads_and_prune_with_an_s3_db(s3, pack_config, embedder,
                                                           tmp_path):
    from rag.store import Store

    uri = s3.bucket("cli")
    env = child_env(s3, pack_config)
    docs = tmp_path / "docs"
    shutil.copytree(CORPORA, docs)
    rag(["ingest", str(docs), "-q", "--offline", "--db", uri], env)
    done = json.loads(rag(["ask", "When was the Aurora observatory completed?", "--json",
                           "--offline", "--db", uri, "--thread", "new"], env).stdout)
    assert done["citations"] and any(c["supported"] for c in done["citations"]), done
    cited = {c["doc"] for c in done["citations"]}
    titles = {s["title"] for s in done["sources"] if s["doc"] in cited}
    assert any("Aurora" in t for t in titles), titles
    found = json.loads(rag(["search", "Aurora observatory telescope", "--json", "--offline",
                            "--db", uri], env).stdout)
    assert found["passages"][0]["doc"] in cited
    listed = rag(["threads", "--json", "--db", uri], env).stdout
    assert json.loads(listed)["threads"][0]["id"] == done["thread"]
    # The originals are in the bucket: read back byte for byte, and nothing local.
    store = Store(uri, embedder.dim, embedder.name, s3.options())
    pdf = next(r for r in store.documents.list() if r.path.endswith("aurora-observatory.pdf"))
    assert store.original(pdf) == (CORPORA / "aurora-observatory.pdf").read_bytes()
    assert not (ROOT / "s3:").exists() and not Path("s3:").exists()
    # Deleting: a file gone from the folder leaves the store with --prune, original too.
    (docs / "aurora-observatory.pdf").unlink()
    rag(["ingest", str(docs), "-q", "--offline", "--prune", "--db", uri], env)
    fresh = Store(uri, embedder.dim, embedder.name, s3.options())
    assert pdf.id not in fresh.documents.ids() and len(fresh.documents.ids()) == 5
    assert fresh.originals.read(pdf.file) is None
    # storage_options from the config file instead of the environment.
    config = tmp_path / "config.toml"
    config.write_text(f'[storage_options]\naws_endpoint = "{s3.endpoint}"\n'
                      'aws_access_key_id = "test"\naws_secret_access_key = "test"\n'
                      'aws_region = "us-east-1"\n')
    bare = {k: v for k, v in child_env(s3, pack_config).items() if not k.startswith("AWS_")}
    found = json.loads(rag(["search", "sourdough starter", "--json", "--offline", "--db", uri],
                           dict(bare, RAG_CONFIG=str(config))).stdout)
    assert found["passages"]
    # A bucket that is not there: one line naming the store and the reason.
    failed = rag(["search", "x", "--offline", "--db", "s3://no-such-bucket/x"], env,
                 check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines() == [
        f"Error: s3://no-such-bucket/x: cannot open the store (NoSuchBucket: The specified"
        f" bucket does not exist from {s3.endpoint})"]


# -- replicas ----------------------------------------------------------------------
def replicas(s3, pack_config, tmp_path, uri: str, n: int = 2, **env: str) -> list[Server]:
    extra = dict(s3.env(), RAG_JOB_POLL_S="0.5", **env)
    return [Server(pack_config, uri, tmp_path / f"replica{i}.log", **extra).start()
            for i in range(n)]


def test_two_replicas_share_the_library_the_jobs_and_the_files(s3, pack_config, tmp_path):
    uri = s3.bucket("replicas")
    a, b = replicas(s3, pack_config, tmp_path, uri)
    try:
        pdf = (CORPORA / "aurora-observatory.pdf").read_bytes()
        status, body, _ = a.upload([("aurora.pdf", pdf)])
        assert status == 202, body
        job = b.wait([body["jobs"][0]["id"]])[body["jobs"][0]["id"]]  # B answers for A's job
        assert job["status"] == "done", job
        doc = job["result"]["doc_id"]
        until(lambda: doc in {d["id"] for d in b.documents()}, "B lists A's upload")
        status, found, _ = b.call("GET", "/api/search?q=Aurora%20observatory%20completed&k=3")
        assert status == 200 and found["passages"][0]["doc"] == doc, found
        status, got, headers = b.call("GET", f"/api/documents/{doc}/file")
        assert status == 200 and got["raw"] == pdf
        assert headers["content-type"].startswith("application/pdf")
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-disposition"] == 'inline; filename="aurora.pdf"'

        # Both replicas ingesting at once: no document lost.
        uploads: dict[str, list[str]] = {}

        def send(server: Server, name: str, numbers: range) -> None:
            status, body, _ = server.upload([(f"{name} {n}.txt", note(n)) for n in numbers])
            assert status == 202, body
            uploads[name] = [j["id"] for j in body["jobs"]]

        senders = [threading.Thread(target=send, args=(a, "a", range(1, 6))),
                   threading.Thread(target=send, args=(b, "b", range(6, 11)))]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        assert len(uploads["a"]) == len(uploads["b"]) == 5
        jobs = {**a.wait(uploads["b"]), **b.wait(uploads["a"])}  # each asks for the other's
        assert all(j["status"] == "done" for j in jobs.values()), jobs
        everything = {doc} | {j["result"]["doc_id"] for j in jobs.values()}
        assert len(everything) == 11
        for server in (a, b):
            until(lambda s=server: {d["id"] for d in s.documents()} == everything,
                  "every document listed on both replicas")
        # Deleted through one, gone from the other.
        assert b.call("DELETE", f"/api/documents/{doc}")[0] == 204
        until(lambda: doc not in {d["id"] for d in a.documents()}, "A forgets the document")
        assert a.call("GET", f"/api/documents/{doc}/file")[0] == 404
        until(lambda: a.call("GET", "/health")[1]["jobs"]["pending"] == 0, "no jobs left")
        assert a.call("GET", "/health")[1]["store"]["documents"] == 10
    finally:
        for server in (a, b):
            server.kill()


def test_a_replica_killed_mid_job_leaves_it_to_another(s3, pack_config, embedder,
                                                       tmp_path):
    from rag.store import Store
    from rag.store.jobs import JobRecord, JobTable

    uri = s3.bucket("takeover")
    (a,) = replicas(s3, pack_config, tmp_path, uri, n=1, RAG_JOB_LEASE_S="3")
    b = Server(pack_config, uri, tmp_path / "b.log", **s3.env(), RAG_JOB_LEASE_S="3",
               RAG_JOB_POLL_S="0.5")
    store = Store(uri, embedder.dim, embedder.name, s3.options())
    table = JobTable(store.db, store.uploads)

    def latest(job_id: str) -> JobRecord:
        table.table.checkout_latest()
        return table.get(job_id)

    try:
        status, body, _ = a.upload([("long.txt", note(1, words=8000))]
                                   + [(f"short {n}.txt", note(n)) for n in range(2, 5)])
        assert status == 202, body
        ids = [j["id"] for j in body["jobs"]]
        mine = f":{a.proc.pid}:"
        until(lambda: mine in latest(ids[0]).owner, "A claims the long job")
        a.kill()
        cut = latest(ids[0])
        assert cut.status == "running", (cut.status, cut.reason)  # A died in the middle
        assert [latest(i).status for i in ids[1:]] == ["queued"] * 3
        # Another replica (here: started now, a new identity) finishes all of them.
        b.start()
        jobs = b.wait(ids)
        assert [j["status"] for j in jobs.values()] == ["done"] * 4, jobs
        assert f":{b.proc.pid}:" in latest(ids[0]).owner  # B took over A's job
        assert len(b.documents()) == 4
        until(lambda: not store.uploads.entries(), "the uploads leave the bucket")
        # While B idles: a job queued by a replica that died before claiming it, and one
        # claimed on another machine whose lease then runs out. B finds both by polling.
        for n, name, owner, lease in ((500, "orphan", "", 0.0),
                                      (501, "stalled", ELSEWHERE, 3.0)):
            data = note(n)
            store.uploads.put(f"{name}.txt", data)
            table.add([JobRecord(id=name, filename=f"{name}.txt", kind="text",
                                 size=len(data), upload=f"{name}.txt", created_at=time.time(),
                                 status="running" if owner else "queued", owner=owner,
                                 lease_until=time.time() + lease if lease else 0.0)])
        jobs = b.wait(["orphan", "stalled"])
        assert [j["status"] for j in jobs.values()] == ["done", "done"], jobs
        assert all(f":{b.proc.pid}:" in latest(i).owner for i in ("orphan", "stalled"))
        # A restarted A is a new replica that works on the same store.
        a.start()
        status, body, _ = a.upload([("after.txt", note(100))])
        assert status == 202, body
        assert a.wait([body["jobs"][0]["id"]])[body["jobs"][0]["id"]]["status"] == "done"
        until(lambda: len(b.documents()) == 7, "B lists the restarted A's upload")
    finally:
        for server in (a, b):
            if server.proc is not None and server.proc.poll() is None:
                server.kill()
