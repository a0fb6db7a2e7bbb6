"""The generation engine with the real offline model: batching, cancellation, bounds, limits.

Assertions are on the engine's own counts (running sequences, steps), never on a clock.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from rag.streams import Busy, GenRequest

pytestmark = pytest.mark.slow

PROMPTS = ["Write a short poem about the sea.",
           "List three facts about the moon.",
           "Explain what a telescope does in two sentences."]


@pytest.fixture(scope="module")
def generator(pack_config):
    from rag.generate import load_generator

    return load_generator(pack_config)


def request(generator, text: str, max_tokens: int = 24, **options) -> GenRequest:
    messages = [{"role": "user", "content": text}]
    rendered = generator.tokenizer.apply_chat_template(messages, tokenize=False,
                                                       add_generation_prompt=True)
    return GenRequest(generator.encode(rendered), max_tokens, 0.0, **options)


@pytest.fixture
def engine(generator):
    from rag.engine import LocalEngine

    engine = LocalEngine(generator, max_running=4, max_waiting=2)
    yield engine
    engine.close()


def tokens(events) -> list[int]:
    return [t for e in events for t in e.tokens]


def test_concurrent_streams_give_the_same_text_as_each_alone(engine, generator):
    alone = [list(engine.submit(request(generator, p))) for p in PROMPTS]
    streams = [engine.submit(request(generator, p)) for p in PROMPTS]
    together = [list(s) for s in streams]
    assert engine.stats()["running"] == 0
    for a, b in zip(alone, together):
        assert a[-1].finish == b[-1].finish and a[-1].finish in ("stop", "length")
        # Greedy decoding of the same prompt. Batched float32 arithmetic may round a
        # near-tie the other way; then the texts agree up to that token. With these
        # prompts and the offline model they agree throughout.
        assert tokens(a) == tokens(b)
        assert "".join(e.text for e in a) == "".join(e.text for e in b)


def test_a_stream_that_is_left_stops_using_the_engine_within_a_few_steps(engine, generator):
    stream = engine.submit(request(generator, PROMPTS[0], max_tokens=400))
    other = engine.submit(request(generator, PROMPTS[1], max_tokens=400))
    seen = 0
    for event in stream:  # read a few tokens, then walk away like a closed browser tab
        seen += len(event.tokens)
        if seen >= 3:
            break
    steps = engine.stats()["steps"]
    for _ in range(200):  # the other stream keeps the engine stepping
        running = engine.stats()["running"]
        if running == 1 or engine.stats()["steps"] > steps + 5:
            break
        threading.Event().wait(0.05)
    assert engine.stats()["running"] == 1  # only `other` is left in the batch
    assert engine.stats()["steps"] <= steps + 5
    other.cancel()
    events = list(other)
    assert events[-1].finish == "cancelled"


def test_past_the_bound_submit_is_refused_with_a_retry_hint(engine, generator):
    streams = [engine.submit(request(generator, PROMPTS[i % 3], max_tokens=200))
               for i in range(engine.max_running + engine.max_waiting)]
    with pytest.raises(Busy) as refused:
        engine.submit(request(generator, PROMPTS[0]))
    assert refused.value.retry_after >= 1 and "busy" in str(refused.value)
    for s in streams:
        s.cancel()
    assert all(list(s)[-1].finish == "cancelled" for s in streams)
    assert engine.stats()["running"] == engine.stats()["waiting"] == 0
    assert list(engine.submit(request(generator, PROMPTS[0], max_tokens=4)))[-1].finish


def test_the_time_limit_ends_a_runaway_generation_with_a_clear_event(engine, generator):
    events = list(engine.submit(request(generator, PROMPTS[0], max_tokens=2000,
                                        time_limit_s=0.5)))
    assert events[-1].finish == "timeout" and "time limit" in events[-1].error
    assert engine.stats()["running"] == 0


def test_an_event_loop_reads_a_stream_without_blocking(engine, generator):
    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():  # runs only while the loop is free
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        events = [e async for e in engine.submit(request(generator, PROMPTS[2]))]
        stop.set()
        await task
        return events, ticks

    events, ticks = asyncio.run(main())
    assert events[-1].finish in ("stop", "length") and ticks > 5


def test_a_failing_model_ends_each_stream_with_an_error_and_the_engine_goes_on(
        engine, generator, monkeypatch):
    real = generator.model

    class Broken:
        def __call__(self, *args, **kwargs):
            raise RuntimeError("model exploded")

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(generator, "model", Broken())
    # With a prefix to cache, the model fails while the engine takes requests into the
    # batch: the ones taken with it must hear of it too.
    streams = [engine.submit(request(generator, p, prefix_len=4)) for p in PROMPTS]
    lasts: dict[int, object] = {}
    readers = [threading.Thread(target=lambda i=i, s=s: lasts.__setitem__(i, list(s)[-1]),
                                daemon=True) for i, s in enumerate(streams)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=60)  # a hang guard, not a speed bound
    assert len(lasts) == len(streams), "a stream never ended"
    for last in lasts.values():
        assert last.finish == "error" and "model exploded" in last.error
    assert engine.stats()["running"] == 0
    monkeypatch.setattr(generator, "model", real)
    assert list(engine.submit(request(generator, PROMPTS[0], max_tokens=4)))[-1].finish in (
        "stop", "length")
