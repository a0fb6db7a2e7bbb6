"""`rag bench serve`, the parts that need no model: the rate formula, percentiles, SSE parsing."""

from __future__ import annotations

import json
import math

import pytest

from rag.cli.bench.serve import load_questions, parse_concurrency, plan_rounds
from rag.cli.bench.serve_measure import (
    SSEParser,
    StreamResult,
    decode_rate,
    openai_event,
    parse_sse,
    percentile,
    rag_event,
    summarize,
    union_length,
)


# -- the formula ---------------------------------------------------------------
def test_union_length_merges_overlaps_and_skips_gaps():
    assert union_length([]) == 0
    assert union_length([(0, 2)]) == 2
    assert union_length([(0, 2), (1, 3)]) == 3  # overlap counted once
    assert union_length([(0, 1), (2, 3)]) == 2  # the gap is not counted
    assert union_length([(5, 6), (0, 10)]) == 10  # nested, given out of order
    assert union_length([(0, 1), (1, 2)]) == 2  # touching
    assert union_length([(3, 3), (1, 1)]) == 0  # single-token streams take no time


def test_one_stream_is_its_own_decode_rate():
    # 11 tokens, the first at t=1 and the last at t=3: 10 tokens after the first in 2 s.
    rate, tokens, seconds = decode_rate([(1.0, 3.0, 11)])
    assert (rate, tokens, seconds) == (5.0, 10, 2.0)


def test_streams_decoding_together_add_up():
    # Two streams decoding over the same 2 s: twice the tokens in the same time.
    assert decode_rate([(0.0, 2.0, 11), (0.0, 2.0, 11)])[0] == 10.0
    # Partly overlapping: 20 + 10 tokens over the union [0, 4] = 4 s.
    rate, tokens, seconds = decode_rate([(0.0, 3.0, 21), (2.0, 4.0, 11)])
    assert (tokens, seconds) == (30, 4.0)
    assert rate == 7.5


def test_one_at_a_time_stays_flat():
    # A server that answers in turn: the same per-stream rate, intervals end to end,
    # with idle gaps (the next prefill) left out of the denominator.
    serial = [(0.0, 2.0, 21), (3.0, 5.0, 21), (6.0, 8.0, 21)]
    assert decode_rate(serial)[0] == decode_rate(serial[:1])[0] == 10.0


def test_streams_without_decoding_add_nothing():
    rate, tokens, seconds = decode_rate([(0.0, 2.0, 5), (1.0, 1.0, 1), (None, None, 0),
                                         (0.5, 9.0, 0)])
    assert (rate, tokens, seconds) == (2.0, 4, 2.0)
    assert math.isnan(decode_rate([])[0])
    assert math.isnan(decode_rate([(1.0, 1.0, 1)])[0])


def test_summarize_uses_the_servers_count_and_leaves_out_failures():
    good = StreamResult("a", status=200, start=0.0, first=1.0, last=3.0, end=3.5, chunks=7,
                        server_tokens=11, sources=3, done=True)
    chunks_only = StreamResult("b", status=200, start=0.0, first=2.0, last=4.0, end=4.0,
                               chunks=5, done=True)  # no count from the server: 5 chunks
    refused = StreamResult("c", status=200, start=0.0, first=0.2, last=0.2, end=0.3,
                           chunks=1, server_tokens=0, sources=0, done=True)
    failed = StreamResult("d", status=500, start=0.0, end=0.1, error="internal error")
    s = summarize(4, [good, chunks_only, refused, failed])
    assert (s.tokens, s.decode_s) == (10 + 4, 3.0)
    assert s.rate == pytest.approx(14 / 3)
    assert (s.errors, s.refused) == (1, 1)
    assert s.ttft_p50 == 1.5 and s.total_p50 == 3.75
    assert s.generated == [11, 5]


# -- percentiles -----------------------------------------------------------------------
def test_percentile_interpolates_like_numpy():
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([7.0], 95) == 7.0
    assert math.isnan(percentile([], 50))


# -- server-sent events -----------------------------------------------------------------
def test_sse_parser_events_data_and_comments():
    body = (": keepalive 10/200\n\n"  # a comment alone dispatches nothing
            "event: sources\r\ndata: {\"sources\": []}\r\n\r\n"
            "event: token\ndata:{\"text\": \" hi\"}\n\n"  # no space after the colon
            "id: 7\nretry: 100\ndata: line one\ndata: line two\n\n"
            "data: [DONE]")  # the stream ends without the closing blank line
    assert parse_sse(body) == [("sources", '{"sources": []}'), ("token", '{"text": " hi"}'),
                               ("message", "line one\nline two"), ("message", "[DONE]")]


def test_sse_parser_is_incremental():
    parser = SSEParser()
    assert parser.feed("event: done\n") is None
    assert parser.feed("data: {}\n") is None
    assert parser.feed("\n") == ("done", "{}")
    assert parser.feed("\n") is None  # nothing pending
    assert parser.feed("event: lonely\n") is None
    assert parser.feed("\n") is None  # an event without data is not dispatched
    assert parser.close() is None


def test_rag_events_make_a_record():
    r = StreamResult("q", status=200, start=10.0)
    events = [("sources", {"sources": [{"marker": 1}, {"marker": 2}]}, 10.5),
              ("token", {"text": "The"}, 11.0), ("token", {"text": ""}, 11.1),
              ("token", {"text": " answer"}, 11.5), ("citation", {"marker": 1}, 12.0),
              ("done", {"generation_tokens": 9, "prompt_tokens": 700, "cached_tokens": 120,
                        "refused": False, "timings": {}}, 12.1)]
    for name, payload, now in events:
        rag_event(r, name, json.dumps(payload), now)
    r.end = 12.1
    assert (r.first, r.last, r.chunks, r.tokens) == (11.0, 11.5, 2, 9)
    assert (r.sources, r.citations, r.prompt_tokens, r.cached_tokens) == (2, 1, 700, 120)
    assert r.ok and not r.no_model and r.ttft == 1.0 and r.total == pytest.approx(2.1)


def test_rag_refusal_without_the_model_and_errors():
    r = StreamResult("q", status=200)
    for name, payload in [("sources", {"sources": []}), ("token", {"text": "Not found."}),
                          ("done", {"generation_tokens": 0, "refused": True})]:
        rag_event(r, name, json.dumps(payload), 1.0)
    assert r.ok and r.no_model
    broken = StreamResult("q", status=200)
    rag_event(broken, "error", json.dumps({"error": "model crashed"}), 1.0)
    assert broken.error == "model crashed" and not broken.ok


def test_openai_stream_with_usage():
    # What mlx_lm.server sends for /v1/completions with include_usage: one chunk per
    # token with text, a closing chunk with finish_reason (empty text after EOS), a
    # usage chunk with no choices, then [DONE].
    messages = [
        {"object": "text_completion", "choices": [{"index": 0, "finish_reason": None,
                                                   "text": "Paris"}]},
        {"object": "text_completion", "choices": [{"index": 0, "finish_reason": None,
                                                   "text": " is"}]},
        {"object": "text_completion", "choices": [{"index": 0, "finish_reason": "stop",
                                                   "text": ""}]},
        {"object": "chat.completion", "choices": [],
         "usage": {"prompt_tokens": 600, "completion_tokens": 3, "total_tokens": 603,
                   "prompt_tokens_details": {"cached_tokens": 100}}},
    ]
    r = StreamResult("q", status=200, start=0.0)
    for i, message in enumerate(messages):
        openai_event(r, "message", json.dumps(message), 1.0 + i)
    assert not r.done
    openai_event(r, "message", "[DONE]", 9.0)
    assert r.done and r.ok
    # The empty closing chunk is not a token arriving: t_last is the second chunk.
    assert (r.first, r.last, r.chunks) == (1.0, 2.0, 2)
    assert (r.tokens, r.prompt_tokens, r.cached_tokens) == (3, 600, 100)


def test_openai_chat_deltas_without_usage_count_chunks():
    r = StreamResult("q", status=200)
    for i, text in enumerate(["a", "b", "c"]):
        openai_event(r, "message", json.dumps({"choices": [{"delta": {"content": text}}]}),
                     float(i))
    openai_event(r, "message", json.dumps({"error": {"message": "boom"}}), 5.0)
    assert r.tokens == 3 and r.error == "boom"


# -- options -------------------------------------------------------------------------
def test_concurrency_and_round_plan(tmp_path):
    assert parse_concurrency("8, 1,2,4,2") == [1, 2, 4, 8]
    for bad in ("", "0", "a,b", "-1"):
        with pytest.raises(ValueError):
            parse_concurrency(bad)
    questions = [f"q{i}" for i in range(20)]
    warmup, rounds, repeats = plan_rounds(questions, [1, 2, 4, 8])
    assert warmup == "q0" and not repeats
    assert rounds[0] == (1, ["q1"]) and rounds[1] == (2, ["q2", "q3"])
    asked = [q for _, qs in rounds for q in qs]
    assert len(asked) == len(set(asked)) == 15 and "q0" not in asked
    assert plan_rounds(questions[:5], [1, 2, 4])[2]  # 8 asks from 5 questions: repeats
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": " What? ", "answer": "x"}\n\n{"question": "Why?"}\n')
    assert load_questions(path) == ["What?", "Why?"]
    path.write_text('{"q": "no"}\n')
    with pytest.raises(ValueError):
        load_questions(path)


# -- the client against a fake server (no model) ---------------------------------------
def test_run_round_reads_streams_from_a_server():
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from rag.cli.bench.serve_clients import baseline_job, rag_job, run_round

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/api/ask" and body["question"] == "bad":
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b'{"error": "internal error"}')
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            if self.path == "/api/ask":
                assert body["stream"] is True
                messages = [b'event: sources\ndata: {"sources": [{"marker": 1}]}\n\n'] + [
                    b'event: token\ndata: {"text": "w"}\n\n'] * 3 + [
                    b'event: done\ndata: {"generation_tokens": 4, "prompt_tokens": 50}\n\n']
            else:
                assert body["stream_options"] == {"include_usage": True}
                chunk = json.dumps({"choices": [{"text": "w", "finish_reason": None}]})
                usage = json.dumps({"choices": [], "usage": {"completion_tokens": 3}})
                messages = [b": keepalive 1/2\n\n"] + [f"data: {chunk}\n\n".encode()] * 3 + [
                    f"data: {usage}\n\n".encode(), b"data: [DONE]\n\n"]
            for message in messages:
                self.wfile.write(message)
                self.wfile.flush()
                time.sleep(0.01)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        rag = run_round([rag_job(url, "a"), rag_job(url, "b"), rag_job(url, "bad")],
                        timeout=120)  # a hang guard
        base = run_round([baseline_job(url, "prompt", 3, "a")], timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    good, other, bad = rag
    assert good.ok and other.ok and (good.tokens, good.chunks, good.prompt_tokens) == (4, 3, 50)
    assert good.start < good.first < good.last <= good.end
    assert bad.status == 500 and not bad.ok and "internal error" in bad.error
    assert summarize(2, rag).errors == 1
    [b] = base
    assert b.ok and (b.tokens, b.chunks) == (3, 3) and b.first < b.last
