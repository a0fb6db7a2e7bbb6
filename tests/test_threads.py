"""Conversations: the threads table, the thread routes over a real server, a restart."""

from __future__ import annotations

import json

import pytest

from tests.conftest import CORPORA


def test_threads_table_keeps_turns_in_order(tmp_path):
    from rag.store import Store
    from rag.store.threads import Threads, cited_documents

    store = Store(tmp_path / "db", dim=4)
    threads = Threads(store.db)
    thread = threads.create()
    assert thread.title == "" and threads.turns_of(thread.id) == []
    first = {"answer": "It opened in 1932 [1].", "sources": [{"doc": "a"}, {"doc": "b"}],
             "citations": [{"doc": "b", "supported": True}, {"doc": "a", "supported": False}]}
    threads.add_turn(thread.id, "When did the observatory open?", first)
    threads.add_turn(thread.id, "Who built it?", {"answer": "Nobody says.", "sources": [
        {"doc": "c"}], "citations": []})
    again = Threads(Store(tmp_path / "db", dim=4).db)  # another process on the same store
    assert again.get(thread.id).title == "When did the observatory open?"
    history = again.history(thread.id)
    assert [t.question for t in history] == ["When did the observatory open?", "Who built it?"]
    assert history[0].answer == "It opened in 1932 [1]."
    assert history[0].doc_ids == ("b",)  # the supported citation's document
    assert history[1].doc_ids == ("c",)  # no citation: what was retrieved
    assert cited_documents({"sources": [], "citations": []}) == ()
    other = again.create("Tides")
    assert [t.id for t in again.list()][0] == other.id  # most recently used first
    assert again.delete(thread.id) and not again.delete(thread.id)
    assert again.turns_of(thread.id) == [] and [t.id for t in again.list()] == [other.id]


@pytest.mark.slow
def test_a_thread_survives_a_restart(pack_config, tmp_path):
    from tests.test_faults import Server

    server = Server(pack_config, tmp_path / "db", tmp_path / "server.log").start()
    try:
        files = [(p.name, p.read_bytes()) for p in sorted(CORPORA.iterdir()) if p.is_file()]
        status, body, _ = server.upload(files)
        assert status == 202
        server.wait([j["id"] for j in body["jobs"]])
        status, thread, _ = server.call("POST", "/api/threads", b"{}",
                                        {"Content-Type": "application/json"})
        assert status == 201 and thread["turns"] == []
        ask = json.dumps({"question": "When was the Aurora observatory completed?"}).encode()
        status, first, _ = server.call("POST", f"/api/threads/{thread['id']}/ask", ask,
                                       {"Content-Type": "application/json"})
        assert status == 200 and first["sources"], first
        follow = json.dumps({"question": "Who designed it?", "stream": True}).encode()
        status, body, _ = server.call("POST", f"/api/threads/{thread['id']}/ask", follow,
                                      {"Content-Type": "application/json"})
        assert status == 200 and b"event: done" in body["raw"]
        server.kill()
        server.start()
        status, kept, _ = server.call("GET", f"/api/threads/{thread['id']}")
        assert status == 200
        assert [t["question"] for t in kept["turns"]] == [
            "When was the Aurora observatory completed?", "Who designed it?"]
        assert kept["title"] == "When was the Aurora observatory completed?"
        assert kept["turns"][0]["answer"]["answer"] == first["answer"]
        assert kept["turns"][0]["answer"]["citations"] == first["citations"]
        listed = server.call("GET", "/api/threads")[1]["threads"]
        assert [t["id"] for t in listed] == [thread["id"]]
        assert server.call("DELETE", f"/api/threads/{thread['id']}")[0] == 204
        assert server.call("GET", f"/api/threads/{thread['id']}")[0] == 404
        assert server.call("POST", "/api/threads/nope/ask", ask,
                           {"Content-Type": "application/json"})[0] == 404
    finally:
        server.kill()


@pytest.mark.slow
def test_rag_ask_within_a_thread(pack_config, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_browser import offline_env

    env = offline_env(pack_config)
    db = ["--db", str(tmp_path / "db")]

    def rag(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "rag.cli", *args, "--offline", *db],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    rag("ingest", str(CORPORA), "-q")
    first = rag("ask", "When was the Aurora observatory completed?", "--thread", "new", "--json")
    thread_id = json.loads(first.stdout)["thread"]
    assert f"thread {thread_id}" in first.stderr
    rag("ask", "Who designed it?", "--thread", thread_id, "--json")
    shown = json.loads(rag("threads", thread_id, "--json").stdout)
    assert [t["question"] for t in shown["turns"]] == [
        "When was the Aurora observatory completed?", "Who designed it?"]
    assert thread_id in rag("threads").stdout
    missing = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "x", "--thread", "nope",
                              "--offline", *db], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
    assert missing.returncode == 1 and "--thread nope: no such thread" in missing.stderr
    rag("threads", thread_id, "--delete")
    assert thread_id not in rag("threads").stdout


def test_tables_created_by_many_threads_at_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from rag.store import Store
    from rag.store.jobs import JobTable
    from rag.store.threads import Threads

    db = Store(tmp_path / "db", dim=4).db
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda i: Threads(db) if i % 2 else JobTable(db, tmp_path / "u"),
                             range(16)))
    assert len(made) == 16
    Threads(db).create("one")
    assert len(Threads(db).list()) == 1
