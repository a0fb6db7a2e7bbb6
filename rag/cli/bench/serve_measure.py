"""`rag bench serve`, the measurement (pure: no server, no model): the aggregate
decode rate, percentiles, the server-sent-events parser, each stream's record and a
round's summary.

    aggregate decode rate = sum_i (n_i - 1) / |union of the intervals [t_first_i, t_last_i]|

with t_first_i and t_last_i when stream i's first and last generated token arrived,
and n_i the tokens it generated, by the server's own count, else the streamed chunks
that carried text (`StreamResult.tokens`). The full definition, and why prefill is
left out of it, is in the doc of `rag.cli.bench.serve`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


# -- the formula and the statistics (pure) ------------------------------------
def union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length of the union of closed intervals (start, end); empty ones count 0."""
    total = 0.0
    current: list[float] | None = None
    for start, end in sorted((a, b) for a, b in intervals if b > a):
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = [start, end]
        else:
            current[1] = max(current[1], end)
    if current is not None:
        total += current[1] - current[0]
    return total


def decode_rate(streams: Iterable[tuple[float, float, int]]) -> tuple[float, int, float]:
    """(rate, tokens, seconds) for streams given as (t_first, t_last, n): see the module doc.

    A stream with n < 1 or without both times adds nothing. The rate is NaN when no
    stream decoded for any length of time.
    """
    tokens = 0
    intervals = []
    for t_first, t_last, n in streams:
        if t_first is None or t_last is None or n < 1:
            continue
        tokens += n - 1
        intervals.append((t_first, t_last))
    seconds = union_length(intervals)
    return (tokens / seconds if seconds > 0 else math.nan), tokens, seconds


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return math.nan
    rank = (len(data) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


# -- server-sent events (pure) -------------------------------------------------
class SSEParser:
    """Incremental parser of a text/event-stream, fed one line at a time.

    `feed(line)` returns (event, data) when a blank line ends a message with data,
    else None. Comments (":" lines, e.g. mlx_lm.server's keepalives), `id:` and
    `retry:` are ignored; several `data:` lines are joined with newlines; the
    event name defaults to "message".
    """

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None

    def close(self) -> tuple[str, str] | None:
        """The last message, when the stream ended without its blank line."""
        return self._dispatch()

    def _dispatch(self) -> tuple[str, str] | None:
        event, data = self.event or "message", self.data
        self.event, self.data = "", []
        return (event, "\n".join(data)) if data else None


def parse_sse(text: str) -> list[tuple[str, str]]:
    """Every (event, data) message in a whole event-stream body."""
    parser = SSEParser()
    out = [m for line in text.splitlines() if (m := parser.feed(line))]
    last = parser.close()
    return out + [last] if last else out


# -- one stream's record ---------------------------------------------------------
@dataclass
class StreamResult:
    question: str
    status: int = 0
    start: float = 0.0  # request sent (perf_counter seconds)
    first: float | None = None  # first generated token arrived
    last: float | None = None  # last generated token arrived
    end: float | None = None  # response complete
    chunks: int = 0  # streamed chunks that carried text
    server_tokens: int | None = None  # tokens generated, by the server's own count
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    sources: int | None = None
    citations: int = 0
    refused: bool | None = None
    done: bool = False  # the closing message arrived (rag: `done`; OpenAI: [DONE])
    error: str = ""

    @property
    def tokens(self) -> int:
        """n_i: the server's count of generated tokens, else the text chunks streamed."""
        return self.server_tokens if self.server_tokens is not None else self.chunks

    @property
    def no_model(self) -> bool:
        """The rag server refused without calling the model (no sources, nothing generated)."""
        return self.sources == 0 and not self.server_tokens

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.done and not self.error

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.start

    @property
    def total(self) -> float | None:
        return None if self.end is None else self.end - self.start

    def token_arrived(self, now: float) -> None:
        self.chunks += 1
        if self.first is None:
            self.first = now
        self.last = now


def json_object(data: str) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def rag_event(result: StreamResult, event: str, data: str, now: float) -> None:
    """Apply one event of the rag API's stream (sources, token, citation, done, error)."""
    payload = json_object(data)
    if event == "sources":
        result.sources = len(payload.get("sources") or [])
    elif event == "token":
        if payload.get("text"):
            result.token_arrived(now)
    elif event == "citation":
        result.citations += 1
    elif event == "done":
        result.done = True
        result.server_tokens = int(payload.get("generation_tokens") or 0)
        result.prompt_tokens = payload.get("prompt_tokens")
        result.cached_tokens = payload.get("cached_tokens")
        result.refused = payload.get("refused")
    elif event == "error":
        result.error = str(payload.get("error") or data)[:300]


def openai_event(result: StreamResult, event: str, data: str, now: float) -> None:
    """Apply one message of an OpenAI-style stream (/v1/completions or chat)."""
    if data.strip() == "[DONE]":
        result.done = True
        return
    payload = json_object(data)
    if "error" in payload:
        error = payload["error"]
        result.error = str(error.get("message", error) if isinstance(error, dict)
                           else error)[:300]
        return
    for choice in payload.get("choices") or []:
        text = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
        if text:
            result.token_arrived(now)
    usage = payload.get("usage")
    if isinstance(usage, dict):
        if usage.get("completion_tokens") is not None:
            result.server_tokens = int(usage["completion_tokens"])
        result.prompt_tokens = usage.get("prompt_tokens")
        details = usage.get("prompt_tokens_details") or {}
        result.cached_tokens = details.get("cached_tokens")



# -- a round's summary --------------------------------------------------------------
@dataclass
class RoundSummary:
    n: int
    rate: float
    tokens: int  # sum of (n_i - 1)
    decode_s: float  # |union of [t_first_i, t_last_i]|
    ttft_p50: float
    ttft_p95: float
    total_p50: float
    total_p95: float
    errors: int
    refused: int  # answered without the model (rag only)
    generated: list[int] = field(default_factory=list)  # n_i per ok stream
    wall: float = 0.0


def summarize(n: int, results: Sequence[StreamResult]) -> RoundSummary:
    good = [r for r in results if r.ok and not r.no_model]
    rate, tokens, seconds = decode_rate((r.first, r.last, r.tokens) for r in good)
    ttfts = [r.ttft for r in good if r.ttft is not None]
    totals = [r.total for r in good if r.total is not None]
    starts = [r.start for r in results if r.start]
    ends = [r.end for r in results if r.end]
    return RoundSummary(
        n=n, rate=rate, tokens=tokens, decode_s=seconds,
        ttft_p50=percentile(ttfts, 50), ttft_p95=percentile(ttfts, 95),
        total_p50=percentile(totals, 50), total_p95=percentile(totals, 95),
        errors=sum(not r.ok for r in results),
        refused=sum(r.ok and r.no_model for r in results),
        generated=[r.tokens for r in good],
        wall=(max(ends) - min(starts)) if starts and ends else math.nan)
