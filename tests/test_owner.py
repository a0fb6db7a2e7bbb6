"""One owner thread for the embedder: every call runs there, questions overtake ingestion."""

from __future__ import annotations

import threading

import pytest

from rag.owner import BULK, INTERACTIVE, Owner


def test_calls_from_many_threads_all_run_on_the_owner_thread():
    owner = Owner("test-owner")
    seen: list[str] = []

    def work(i: int) -> int:
        seen.append(threading.current_thread().name)
        return i * 2

    results: dict[int, int] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, owner.run(work, i)))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: i * 2 for i in range(8)}
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
