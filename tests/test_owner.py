"""One owner thread for the embedder: every call runs there, questions overtake ingestion."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from conftest import ROOT, pack_cache

from rag.owner import BULK, INTERACTIVE, Owner


def test_calls_from_many_threads_all_run_on_the_owner_thread():
    owner = Owner("test-owner")
    seen: list[str] = []

    def work(i: int) -> int:
        seen.append(threading.current_thread().name)
        return i * 2

    results: dict[int, int] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, owner.run(work, i)))
               for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: i * 2 for i in range(12)}
    assert set(seen) == {"test-owner"}


def test_an_exception_reaches_the_caller_and_the_owner_goes_on():
    owner = Owner("test-owner")

    def boom():
        raise ValueError("bad text")

    with pytest.raises(ValueError, match="bad text"):
        owner.run(boom)
    assert owner.run(lambda: 7) == 7


def test_interactive_calls_overtake_queued_bulk_slices():
    owner = Owner("test-owner")
    order: list[str] = []
    gate = threading.Event()
    # Hold the owner busy, queue bulk slices, then one interactive call.
    blocker = threading.Thread(target=owner.run, args=(gate.wait,))
    blocker.start()
    while owner.pending():  # the blocker has been taken off the queue
        pass
    bulk = [threading.Thread(target=owner.run, args=(order.append, f"bulk{i}"),
                             kwargs={"priority": BULK}) for i in range(3)]
    for t in bulk:
        t.start()
    while owner.pending() < 3:
        pass
    question = threading.Thread(target=owner.run, args=(order.append, "question"),
                                kwargs={"priority": INTERACTIVE})
    question.start()
    while owner.pending() < 4:
        pass
    gate.set()
    for t in [blocker, question, *bulk]:
        t.join()
    assert order[0] == "question" and sorted(order[1:]) == ["bulk0", "bulk1", "bulk2"]


def test_bulk_work_yields_while_answers_are_generated():
    answering = True
    owner = Owner("test-owner", yield_to=lambda: answering)
    owner.run(sum, range(200_000), priority=BULK)
    assert owner.yielded_s > 0
    answering = False
    before = owner.yielded_s
    owner.run(sum, range(200_000), priority=BULK)
    owner.run(sum, range(10), priority=INTERACTIVE)
    assert owner.yielded_s == before


@pytest.mark.slow
def test_the_embedder_runs_every_call_on_its_owner(embedder, monkeypatch):
    seen: list[str] = []
    real = embedder._embed

    def spy(*args):
        seen.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(embedder, "_embed", spy)
    texts = [f"Sentence number {i} about glaciers and valleys." for i in range(300)]
    out: dict[str, object] = {}
    def bulk():
        out["bulk"] = embedder.embed_batch(texts)

    def question():
        out["query"] = embedder.embed_batch(["glaciers"], query=True)

    threads = [threading.Thread(target=bulk), threading.Thread(target=question)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out["bulk"].shape == (300, embedder.dim) and out["query"].shape == (1, embedder.dim)
    assert set(seen) == {embedder.owner.name} and len(seen) >= 4  # 3 bulk slices + query


def test_close_stops_the_thread_after_releasing_its_mlx_streams(monkeypatch):
    import rag.owner

    released: list[str] = []
    monkeypatch.setattr(rag.owner, "release_mlx_streams",
                        lambda: released.append(threading.current_thread().name))
    owner = Owner("test-owner")
    assert owner.run(lambda: 3) == 3
    owner.close()
    assert not owner._thread.is_alive()
    assert released == ["test-owner"]  # on the owner's own thread, where its streams live


@pytest.mark.slow
def test_a_process_that_searched_and_answered_exits_cleanly(pack_paths, tmp_path):
    # MLX streams left to interpreter teardown abort it now and then ("terminate called
    # without an active exception", exit -6): before the fix, 2 runs in 12 of this script.
    script = (
        "import ingest, rag\n"
        f"config = rag.load_config({{'db': {str(tmp_path / 'db')!r}, 'models': 'pack'}})\n"
        "rt = rag.open_runtime(config)\n"
        "ingest.ingest_paths(['corpora'], rt)\n"  # incremental: the first run only
        "print(len(rag.search('Aurora observatory telescope', rt, k=3)))\n"
        "print(rag.answer('When was the Aurora observatory completed?', rt).text)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_CACHE_DIR=str(pack_cache()), RAG_MAX_TOKENS="20",
               RAG_CONFIG=str(tmp_path / "none.toml"))
    codes = []
    for _ in range(12):
        run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        codes.append((run.returncode, run.stderr.strip().splitlines()[-1:]))
    assert all(code == 0 for code, _ in codes), codes
