"""The remote generator engine (rag/remote.py) against a real mlx_lm.server and small stubs.

The real server runs the offline SmolLM2 pack model on a free loopback port. The
stub endpoints (http.server in a thread) answer what a real one cannot be made to
answer on cue: a 500, a request held open, a malformed stream. Waits are bounded
only as hang guards; nothing asserts how fast the machine is.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from rag.prompt import SYSTEM_PROMPT, build_prompt
from rag.remote import RemoteEngine, chat_messages, error_message, open_remote
from rag.streams import Busy, EngineError, GenRequest
from rag.tokencount import CharTokenizer
from rag.types import Passage

HANG_GUARD = 120.0  # seconds: only to fail instead of hanging; never a speed bound
QUESTION = "What is the capital of France?"
USER = f"Sources:\n\n[1] Atlas (p. 1)\nParis is the capital of France.\n\nQuestion: {QUESTION}"
STORY = "Write a long story about a dragon who learns to bake bread, with many details."


def request(user: str = USER, max_tokens: int = 24, **options) -> GenRequest:
    return GenRequest(tokens=[], max_tokens=max_tokens, messages=chat_messages(user), **options)


def collect(stream, timeout: float = HANG_GUARD) -> list:
    """All events of a stream (consumed on an event loop, as the web app does)."""

    async def run():
        return [event async for event in stream]

    return asyncio.run(asyncio.wait_for(run(), timeout))


def next_event(events, timeout: float = HANG_GUARD):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(next, events).result(timeout)


def wait_until(condition, timeout: float = HANG_GUARD, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_finished(events, finishes=("stop", "length")):
    """Text events, then exactly one last event with a finish."""
    assert events, "no events"
    assert all(e.finish is None for e in events[:-1])
    assert events[-1].finish in finishes, events[-1]
    return "".join(e.text for e in events[:-1])


# ---------------------------------------------------------------------------
# A real mlx_lm.server


class MlxServer:
    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlxServer:
        # `import rag` first: it loads OpenBLAS before mlx (rag/blas.py).
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import rag; from mlx_lm.server import main; main()",
             "--model", str(self.folder), "--port", str(self.port), "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + HANG_GUARD
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlx_lm.server exited with {self.proc.returncode}")
            try:
                # Any HTTP answer will do: this server's /v1/models sends 200 and then
                # fails without a body when the hub cache folder does not exist.
                urllib.request.urlopen(self.url + "/models", timeout=5).close()
                return self
            except urllib.error.HTTPError:
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("mlx_lm.server did not answer") from None
                time.sleep(0.25)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    stop = kill


@pytest.fixture(scope="module")
def server(pack_paths):
    running = MlxServer(pack_paths.generator).start()
    yield running
    running.stop()


@pytest.mark.slow
def test_streamed_answer_matches_the_non_streamed_one(server):
    with RemoteEngine(server.url) as engine:
        events = collect(engine.submit(request(max_tokens=24)))
        model = engine.stats()["model"]
    text = check_finished(events)
    assert len(events) > 2 and text.strip()
    last = events[-1]
    assert last.prompt_tokens > 0 and last.generation_tokens > 0
    # The same request, greedy, in one answer.
    body = {"model": model, "messages": list(chat_messages(USER)), "max_tokens": 24,
            "temperature": 0.0, "stream": False}
    answer = httpx.post(server.url + "/chat/completions", json=body, timeout=HANG_GUARD).json()
    assert text == answer["choices"][0]["message"]["content"]
    assert last.finish == answer["choices"][0]["finish_reason"]
    assert last.prompt_tokens == answer["usage"]["prompt_tokens"]
    assert last.generation_tokens == answer["usage"]["completion_tokens"]


@pytest.mark.slow
def test_two_concurrent_streams_both_complete(server):
    with RemoteEngine(server.url, max_running=2, max_waiting=0) as engine:
        first = engine.submit(request(max_tokens=16))
        second = engine.submit(request("Question: What colour is the sky?", max_tokens=16))
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(collect, [first, second]))
        for events in results:
            assert check_finished(events).strip()
        assert engine.stats()["completed"] == 2
        assert engine.stats()["running"] == engine.stats()["waiting"] == 0


@pytest.mark.slow
def test_cancelling_a_stream_closes_its_request(server):
    with RemoteEngine(server.url) as engine:
        stream = engine.submit(request(STORY, max_tokens=400))
        events = iter(stream)
        assert next_event(events).text  # it is generating
        assert engine.stats()["running"] == 1
        stream.cancel()
        wait_until(lambda: engine.stats()["running"] == 0, what="the cancel")
        assert engine.stats()["cancelled"] == 1
        # The endpoint is free again: the next answer completes.
        assert check_finished(collect(engine.submit(request(max_tokens=8)))).strip()


@pytest.mark.slow
def test_endpoint_killed_mid_answer_is_one_error_and_the_engine_recovers(pack_paths):
    own = MlxServer(pack_paths.generator).start()
    try:
        with RemoteEngine(own.url) as engine:
            stream = engine.submit(request(STORY, max_tokens=400))
            events = iter(stream)
            assert next_event(events).text
            own.kill()
            rest = []
            while not rest or rest[-1].finish is None:
                rest.append(next_event(events))
            assert [e.finish for e in rest if e.finish] == ["error"]
            assert own.url in rest[-1].error and "\n" not in rest[-1].error
            assert engine.stats()["running"] == 0

            # While it is down: a clean error, no hang.
            down = collect(engine.submit(request(max_tokens=8)))
            assert [e.finish for e in down] == ["error"] and own.url in down[0].error

            own.start()  # the same port again
            assert check_finished(collect(engine.submit(request(max_tokens=8)))).strip()
    finally:
        own.stop()


# ---------------------------------------------------------------------------
# Stub endpoints


class Stub:
    """An OpenAI-like endpoint in a thread; `behaviour(handler, body)` answers each POST."""

    def __init__(self, behaviour, models=("stub-model",)):
        self.behaviour = behaviour
        self.models = list(models)
        self.posts: list[tuple[dict, dict]] = []
        self.release = threading.Event()
        self.gone = threading.Event()  # a held request's client closed its connection
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
        self.httpd.daemon_threads = True
        self.httpd.stub = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Stub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _StubHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.endswith("/models"):
            send_json(self, 200, {"object": "list",
                                  "data": [{"id": m} for m in self.server.stub.models]})
        else:
            send_json(self, 404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.stub.posts.append((dict(self.headers), body))
        self.server.stub.behaviour(self, body)


def send_json(handler, status: int, data) -> None:
    raw = json.dumps(data).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


def start_events(handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()


def send_event(handler, data) -> None:
    payload = data if isinstance(data, str) else json.dumps(data)
    handler.wfile.write(f"data: {payload}\n\n".encode())
    handler.wfile.flush()


def chunk(text: str | None = None, finish: str | None = None) -> dict:
    delta = {"role": "assistant"} | ({"content": text} if text is not None else {})
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def answer_ok(handler, body) -> None:
    start_events(handler)
    for word in ("Paris", " is", " the", " capital."):
        send_event(handler, chunk(word))
    send_event(handler, chunk(finish="stop"))
    send_event(handler, "[DONE]")  # no usage: the engine counts chunks


def answer_500(handler, body) -> None:
    send_json(handler, 500, {"error": {"message": "model exploded\nwhile loading",
                                       "type": "server_error"}})


def answer_malformed(handler, body) -> None:
    start_events(handler)
    send_event(handler, chunk("Hello"))
    send_event(handler, "this is not json")


def answer_cut_short(handler, body) -> None:
    start_events(handler)
    send_event(handler, chunk("Hello"))  # then the connection closes, no finish


def answer_held(handler, body) -> None:
    """One chunk, then hold the request open until released or the client leaves."""
    stub = handler.server.stub
    start_events(handler)
    send_event(handler, chunk("Hold"))
    sock = handler.connection
    while not stub.release.is_set():
        readable, _, _ = select.select([sock], [], [], 0.02)
        if readable and sock.recv(1, socket.MSG_PEEK) == b"":
            stub.gone.set()
            return
    send_event(handler, chunk(" on.", finish="stop"))
    send_event(handler, "[DONE]")


def test_stub_answer_counts_chunks_and_sends_model_and_key():
    with Stub(answer_ok) as stub, RemoteEngine(stub.url, api_key="sekret") as engine:
        events = collect(engine.submit(request(max_tokens=16, temperature=0.5)))
        assert check_finished(events) == "Paris is the capital."
        assert events[-1].finish == "stop" and events[-1].generation_tokens == 4
        headers, body = stub.posts[0]
        assert headers["Authorization"] == "Bearer sekret"
        assert body["model"] == "stub-model" and body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
        assert body["max_tokens"] == 16 and body["temperature"] == 0.5
        assert body["messages"] == [{"role": "system", "content": SYSTEM_PROMPT},
                                    {"role": "user", "content": USER}]
        assert engine.stats()["model"] == "stub-model"


def test_closed_port_is_an_error_event_not_a_hang():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with RemoteEngine(url, model="m") as engine:
        events = collect(engine.submit(request()))
    assert [e.finish for e in events] == ["error"]
    assert url in events[0].error and "cannot connect" in events[0].error


def test_http_500_is_an_error_event_with_the_endpoints_message():
    with Stub(answer_500) as stub, RemoteEngine(stub.url) as engine:
        events = collect(engine.submit(request()))
    assert [e.finish for e in events] == ["error"]
    error = events[0].error
    assert stub.url + "/chat/completions" in error and "HTTP 500" in error
    assert "model exploded while loading" in error and "\n" not in error


@pytest.mark.parametrize("behaviour, reason", [(answer_malformed, "malformed stream"),
                                               (answer_cut_short, "ended before the answer")])
def test_a_broken_stream_is_one_error_event_after_its_text(behaviour, reason):
    with Stub(behaviour) as stub, RemoteEngine(stub.url) as engine:
        events = collect(engine.submit(request()))
    assert [e.text for e in events[:-1]] == ["Hello"]
    assert events[-1].finish == "error" and reason in events[-1].error
    assert stub.url in events[-1].error


def test_busy_past_max_running_and_max_waiting():
    with Stub(answer_held) as stub, \
            RemoteEngine(stub.url, max_running=1, max_waiting=1) as engine:
        first = engine.submit(request())
        second = engine.submit(request())
        wait_until(lambda: engine.stats()["running"] == 1, what="the first request")
        assert engine.stats()["waiting"] == 1 and engine.busy()
        with pytest.raises(Busy) as busy:
            engine.submit(request())
        assert "busy" in str(busy.value) and "\n" not in str(busy.value)
        assert busy.value.retry_after > 0
        stub.release.set()
        for stream in (first, second):
            assert check_finished(collect(stream)) == "Hold on."
        assert engine.stats()["running"] == engine.stats()["waiting"] == 0
        assert not engine.busy()
        assert check_finished(collect(engine.submit(request()))) == "Hold on."


def test_cancel_closes_the_http_connection():
    with Stub(answer_held) as stub, RemoteEngine(stub.url) as engine:
        stream = engine.submit(request())
        events = iter(stream)
        assert next_event(events).text == "Hold"
        events.close()  # the consumer leaves: GenStream cancels
        assert stub.gone.wait(HANG_GUARD), "the endpoint never saw the client leave"
        wait_until(lambda: engine.stats()["running"] == 0, what="the cancel")
        assert engine.stats()["cancelled"] == 1


def test_a_waiting_request_can_be_cancelled():
    with Stub(answer_held) as stub, \
            RemoteEngine(stub.url, max_running=1, max_waiting=4) as engine:
        first = engine.submit(request())
        second = engine.submit(request())
        wait_until(lambda: engine.stats()["waiting"] == 1, what="the queue")
        second.cancel()
        wait_until(lambda: engine.stats()["waiting"] == 0, what="the cancel")
        stub.release.set()
        assert check_finished(collect(first)) == "Hold on."
        assert len(stub.posts) == 1  # the cancelled one was never sent


def test_time_limit_ends_the_request_with_timeout():
    with Stub(answer_held) as stub, RemoteEngine(stub.url) as engine:
        events = collect(engine.submit(request(time_limit_s=0.5)))
        assert [e.text for e in events[:-1]] == ["Hold"]
        assert events[-1].finish == "timeout"
        assert stub.gone.wait(HANG_GUARD)
        assert engine.stats()["timeouts"] == 1 and engine.stats()["running"] == 0


def test_a_silent_endpoint_hits_the_read_timeout():
    with Stub(answer_held) as stub, RemoteEngine(stub.url, read_timeout=0.5) as engine:
        events = collect(engine.submit(request()))
    assert events[-1].finish == "error" and "no data for 0.5 s" in events[-1].error
    assert stub.url in events[-1].error


def test_close_ends_every_stream_with_cancelled():
    with Stub(answer_held) as stub:
        engine = RemoteEngine(stub.url, max_running=1, max_waiting=2)
        streams = [engine.submit(request()) for _ in range(3)]
        wait_until(lambda: engine.stats()["running"] == 1, what="the first request")
        engine.close()
        for stream in streams:
            assert collect(stream)[-1].finish == "cancelled"
        with pytest.raises(EngineError):
            engine.submit(request())
        engine.close()  # twice is fine


def test_error_message_shapes():
    assert error_message(b'{"error": {"message": "bad key"}}') == "bad key"
    assert error_message(b'{"error": "Got: oops"}') == "Got: oops"
    assert error_message(b'{"detail": "Not Found"}') == "Not Found"
    assert error_message(b"<html>\n<b>Bad gateway</b></html>") == "<html> <b>Bad gateway</b></html>"
    assert error_message(b"") == ""


def test_open_remote_from_config(tmp_path):
    from rag.config import load_config

    with Stub(answer_ok) as stub:
        config = load_config({"generator_url": stub.url, "generator_api_key": "k",
                              "max_running": 3, "max_waiting": 5}, env={},
                             file=tmp_path / "none.toml")
        with open_remote(config) as engine:
            assert isinstance(engine.tokenizer, CharTokenizer)
            assert engine.stats()["max_running"] == 3 and engine.stats()["max_waiting"] == 5
            assert check_finished(collect(engine.submit(request()))).strip()
            assert stub.posts[0][0]["Authorization"] == "Bearer k"
            assert stub.posts[0][1]["model"] == "stub-model"  # generator left at its default
        named = load_config({"generator_url": stub.url, "generator": "my-model"}, env={},
                            file=tmp_path / "none.toml")
        with open_remote(named) as engine:
            collect(engine.submit(request()))
            assert stub.posts[-1][1]["model"] == "my-model"


# ---------------------------------------------------------------------------
# The character-based stand-in tokenizer

SAMPLES = {
    "en": "The Normans were the people who in the 10th and 11th centuries gave their name "
          "to Normandy, a region in France. Revenue rose 12.5% to $4,210 million in 2023.",
    "zh": "诺曼人是在10世纪和11世纪将自己的名字赋予法国诺曼底地区的民族。他们是维京人的后裔。",
    "th": "ชาวนอร์มันเป็นผู้คนที่ในคริสต์ศตวรรษที่ 10 และ 11 ได้ตั้งชื่อให้กับนอร์ม็องดี",
    "hi": "नॉर्मन वे लोग थे जिन्होंने 10वीं और 11वीं शताब्दी में फ्रांस के नॉर्मंडी क्षेत्र को अपना नाम दिया।",
    "ar": "النورمان هم الشعب الذي أعطى اسمه لنورماندي، وهي منطقة في فرنسا، "
          "في القرنين العاشر والحادي عشر.",
    "caps": "UNITED STATES SECURITIES AND EXCHANGE COMMISSION, FORM 10-K (NASA, OECD).",
    "code": "def f(x: int) -> dict[str, int]:\n    return {'a': x ** 2, \"b\": [1, 2, 3]}\n",
    "mixed": "Café naïve résumé — Ελληνικά, русский, 日本語のテキスト 🎉 and HTMLParser.",
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_char_tokenizer_round_trips_every_prefix(name):
    tok = CharTokenizer()
    text = SAMPLES[name]
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    for n in range(len(ids) + 1):
        assert text.startswith(tok.decode(ids[:n]))
    assert tok.chat_template is None


@pytest.mark.slow
def test_char_tokenizer_counts_at_least_the_real_tokenizer(pack_paths):
    from mlx_lm.tokenizer_utils import load

    real = load(Path(pack_paths.generator))
    tok = CharTokenizer()
    for name, text in SAMPLES.items():
        counted = len(tok.encode(text))
        actual = len(real.encode(text, add_special_tokens=False))
        assert counted >= actual, (name, counted, actual)
    # The whole rendered prompt too (the remote's ChatML is shorter than Llama's template).
    messages = list(chat_messages(SAMPLES["en"]))
    rendered = real.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert len(tok.encode(tok.apply_chat_template(messages))) >= len(
        real.encode(rendered, add_special_tokens=False))


def test_build_prompt_with_the_char_tokenizer_respects_the_budget():
    tok = CharTokenizer()
    passages = [Passage(f"d:{i}", "d", "Report", "", SAMPLES["en"] + " " + SAMPLES["zh"] * 3,
                        i + 1, i + 1, 0, 10) for i in range(8)]
    for budget in (400, 900, 3000):
        prompt = build_prompt(QUESTION, passages, tok, budget=budget)
        assert len(prompt.tokens) <= budget
        assert prompt.sources and prompt.user in prompt.text
        assert prompt.text.startswith("<|begin_of_text|><|start_header_id|>system")
        assert len(tok.encode(prompt.text)) == len(prompt.tokens)
        assert 0 < prompt.prefix_len < len(prompt.tokens)
    small = build_prompt(QUESTION, passages, tok, budget=400)
    assert small.truncated and len(small.sources) < len(passages)


@pytest.mark.slow
def test_open_remote_loads_a_configured_tokenizer(pack_paths, tmp_path):
    from rag.config import load_config
    from rag.models import ModelError

    config = load_config({"generator_url": "http://127.0.0.1:9/v1",
                          "generator_tokenizer": str(pack_paths.generator)}, env={},
                         file=tmp_path / "none.toml")
    with open_remote(config) as engine:
        tok = engine.tokenizer
        assert tok.encode("Hello world", add_special_tokens=False)
        assert "<|im_start|>" in tok.chat_template
        prompt = build_prompt(QUESTION, [], tok, budget=500)
        assert prompt.text.startswith("<|im_start|>system")
    missing = load_config({"generator_url": "http://127.0.0.1:9/v1",
                           "generator_tokenizer": "no-such-org/no-such-tokenizer"}, env={},
                          file=tmp_path / "none.toml")
    with pytest.raises(ModelError, match="no-such-org/no-such-tokenizer"):
        open_remote(missing)


@pytest.mark.slow
def test_a_question_answered_by_a_remote_mlx_lm_server_carries_checked_citations(
        server, runtime):
    from conftest import CORPORA

    import rag
    from ingest import ingest_paths
    from rag.remote import RemoteEngine

    runtime.config = rag.replace(runtime.config, generator_url=server.url)
    assert ingest_paths([CORPORA], runtime).ok
    result = rag.answer("When was the Aurora observatory completed?", runtime, max_tokens=60)
    assert isinstance(runtime.engine(), RemoteEngine)
    assert not result.refused and "1987" in result.text
    assert result.citations and all(c.doc_id in {s.doc_id for s in result.sources}
                                    for c in result.citations)
    assert any(c.supported and "Aurora" in c.title for c in result.citations)
    runtime.close()


@pytest.mark.slow
def test_rag_ask_with_an_unreachable_generator_fails_with_one_line(tmp_path):
    from click.testing import CliRunner
    from conftest import CORPORA

    from rag.cli import main

    db = str(tmp_path / "db")
    runner = CliRunner()
    assert runner.invoke(main, ["ingest", str(CORPORA), "--db", db, "--offline", "-q"]
                         ).exit_code == 0
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    result = runner.invoke(main, ["ask", "When was the Aurora observatory completed?",
                                  "--db", db, "--offline", "--generator-url", url])
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("Error: generator http://127.0.0.1:") and "connect" in message
