"""`rag bench serve`: concurrent streamed questions against a running rag server,
and the same prompts against a plain `mlx_lm.server` with the same model (the baseline).

    rag bench serve --offline --url http://127.0.0.1:8000 --concurrency 1,2,4,8 \
        --max-tokens 64 [--questions FILE.jsonl] [--docs DIR] [--key KEY] [--no-baseline]

For each N in --concurrency, N distinct questions are sent at once as streams
(`POST /api/ask` with `"stream": true`, server-sent events), and per N it prints
the aggregate decode rate, time to first token (p50/p95), total time (p50/p95)
and errors.

The aggregate decode rate (one client-side formula, applied alike to both servers):
for each stream i the client records

    t_first_i  when its first generated token arrived (the first chunk carrying text),
    t_last_i   when its last generated token arrived (the last chunk carrying text),
    n_i        the tokens it generated, by the server's own count: the `done` event's
               `generation_tokens` (rag), `usage.completion_tokens` (mlx_lm.server,
               asked for with `stream_options: {"include_usage": true}`), else the
               number of streamed chunks that carried text,

and

    aggregate decode rate = sum_i (n_i - 1) / |union of the intervals [t_first_i, t_last_i]|

that is, the tokens generated after each stream's first token, per second during
which at least one stream was decoding. Prefill (and the queueing before it) is
left out: it is reported separately as the time to first token, since prefill is
compute-bound on a CPU and would otherwise hide how well decoding is shared. A
server that answers one question at a time keeps this figure flat as N grows; one
that decodes N streams in one batch raises it.

The baseline: `mlx_lm.server` started on a free loopback port with the generator
folder the rag server uses (the offline pack's by default, or --generator), with
OpenBLAS loaded the way the project loads it (`import rag` first), and
`--decode-concurrency`/`--prompt-concurrency` set to the largest N. It gets the
prompt text the rag server would build for each question (rendered here: the
same store, `--db` or `--docs`, the same retrieval and `rag.prompt.build_prompt`
with budget `context_tokens - max_tokens`), on `/v1/completions`, streamed,
temperature 0, `max_tokens` = --max-tokens. Both servers get one warm-up ask, then
each N runs on the rag server and then on the baseline (one at a time, so drift in
the machine's speed weighs on both alike). Questions the rag server refuses
without calling the model (nothing relevant retrieved) have no prompt: they are
skipped for both servers, and the command says so.

The rag API takes no max_tokens: start the rag server with RAG_MAX_TOKENS equal
to --max-tokens for a like-for-like comparison (the command warns when a rag
answer ran longer).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Questions about the demo documents in corpora/ (each one answerable from them).
DEFAULT_QUESTIONS = [
    "When was the Aurora observatory completed?",
    "How many members did the Greenway cooperative have at the end of 2025?",
    "How often does the supply boat Petrel bring new residents to Kestrel Bay?",
    "How fast does the yellow map lichen grow?",
    "How high does the spring tide reach at Orlow harbour?",
    "How long was the bulk fermentation of the best sourdough loaf?",
    "How wide is the primary mirror of the Halden Eye telescope?",
    "How much electricity did the Brannock solar array produce in 2025?",
    "When are the quiet hours at the Kestrel Bay research station?",
    "Why are beard lichens used as indicators of clean air?",
    "On which VHF channel does the Orlow harbour master answer?",
    "What is the feeding ratio for the Bramble sourdough starter?",
    "Who discovered the comet C/1996 H2 at the Aurora observatory?",
    "What battery storage system did the Greenway assembly approve for 2026?",
    "Which radio channel is used for emergencies at Kestrel Bay?",
    "Is reindeer moss a moss or a lichen?",
    "How much does an adult ticket for an Aurora observatory tour cost?",
    "What dividend does the Greenway cooperative pay for 2025?",
    "How many bird species has the Kestrel Bay station recorded since 1994?",
    "Where do visiting boats berth in Orlow harbour?",
]

RATE_FORMULA = ("aggregate decode rate = sum_i (n_i - 1) / |union_i [t_first_i, t_last_i]|:"
                " tokens generated after each stream's first token, per second during which"
                " at least one stream was decoding")


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


def _json(data: str) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def rag_event(result: StreamResult, event: str, data: str, now: float) -> None:
    """Apply one event of the rag API's stream (sources, token, citation, done, error)."""
    payload = _json(data)
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
    payload = _json(data)
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


# -- a round of concurrent streams ---------------------------------------------------
def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return kind(parts.hostname, parts.port, timeout=timeout), parts.path or "/"


def stream_request(url: str, body: dict, apply: Callable, result: StreamResult, *,
                   key: str = "", timeout: float = 600.0,
                   barrier: threading.Barrier | None = None) -> StreamResult:
    """POST `body` to `url`, read the event stream, `apply` each message to `result`."""
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    raw = json.dumps(body).encode()
    if barrier is not None:  # every stream of the round starts at the same moment
        try:
            barrier.wait()
        except threading.BrokenBarrierError as exc:
            result.error = f"BrokenBarrierError: {exc}"
            return result
    try:
        conn, path = _connection(url, timeout)
    except (ValueError, OSError) as exc:
        result.error = f"bad url {url}: {exc}"
        return result
    try:
        result.start = time.perf_counter()
        conn.request("POST", path, raw, headers)
        response = conn.getresponse()
        result.status = response.status
        if response.status != 200:
            result.error = response.read(300).decode(errors="replace") or response.reason
            result.end = time.perf_counter()
            return result
        parser = SSEParser()
        while line := response.readline():
            message = parser.feed(line.decode("utf-8", errors="replace"))
            if message:
                apply(result, *message, time.perf_counter())
        if message := parser.close():
            apply(result, *message, time.perf_counter())
        result.end = time.perf_counter()
        if not result.done and not result.error:
            result.error = "stream ended early"
    except (OSError, http.client.HTTPException) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
        result.end = time.perf_counter()
    finally:
        conn.close()
    return result


def run_round(jobs: Sequence[tuple[str, dict, Callable, str]], *, key: str = "",
              timeout: float = 600.0) -> list[StreamResult]:
    """Start every (url, body, apply, question) stream at the same moment; wait for all."""
    barrier = threading.Barrier(len(jobs)) if jobs else None
    results = [StreamResult(question) for *_, question in jobs]
    threads = [threading.Thread(target=stream_request, args=(url, body, apply, result),
                                kwargs={"key": key, "timeout": timeout, "barrier": barrier},
                                daemon=True)
               for (url, body, apply, _), result in zip(jobs, results)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


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


# -- questions and their prompts ------------------------------------------------------
def parse_concurrency(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise ValueError(f"--concurrency: comma-separated integers, not {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise ValueError(f"--concurrency: integers of at least 1, not {text!r}")
    return sorted(set(values))


def load_questions(path: Path) -> list[str]:
    """The "question" field of each JSON line (blank lines skipped)."""
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
        question = row.get("question") if isinstance(row, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{path}:{number}: no \"question\" string")
        out.append(question.strip())
    return out


def plan_rounds(questions: Sequence[str], concurrency: Sequence[int]
                ) -> tuple[str, list[tuple[int, list[str]]], bool]:
    """(warm-up question, [(N, its N questions)], whether any question is used twice).

    Questions are taken in order, cycling: the warm-up takes the first, each round
    the next N, so no question repeats while the list lasts (a repeated prompt would
    be served from mlx_lm.server's prompt cache).
    """
    if not questions:
        raise ValueError("no questions")
    cursor = 0

    def take(n: int) -> list[str]:
        nonlocal cursor
        out = [questions[(cursor + i) % len(questions)] for i in range(n)]
        cursor += n
        return out

    warmup = take(1)[0]
    rounds = [(n, take(n)) for n in concurrency]
    return warmup, rounds, cursor > len(questions)


@dataclass
class Rendered:
    question: str
    text: str | None  # the prompt text to send; None: refused without the model
    tokens: int = 0
    same_tokens: bool = True  # the baseline's own tokenizer.encode(text) == the rag tokens


def generator_folder(config) -> str:
    """The folder the rag server loads for `config.generator` (pack, local or hub cache)."""
    from rag.models import announce, resolve

    resolved = resolve(config.generator, "generator", config)
    announce(resolved)
    return resolved.path


def render_prompts(questions: Sequence[str], config, max_tokens: int, folder: str,
                   docs: Path | None = None) -> list[Rendered]:
    """Each question's prompt exactly as the rag server builds it (see the module doc)."""
    # This module lives in the rag package: `import rag` (OpenBLAS) has already run.
    from mlx_lm.utils import load_tokenizer

    from rag import retrieve
    from rag.config import replace
    from rag.prompt import build_prompt
    from rag.runtime import open_runtime

    tokenizer = load_tokenizer(Path(folder))
    with contextlib.ExitStack() as stack:
        if docs is not None:
            from ingest import ingest_paths

            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-bench-serve-"))
            runtime = open_runtime(replace(config, db=Path(tmp)))
            report = ingest_paths([docs], runtime)
            failed = [f"{Path(f.path).name}: {f.reason}" for f in report.files
                      if f.status == "failed"]
            if failed or not report.files:
                raise RuntimeError(f"--docs {docs}: ingestion failed for "
                                   + ("; ".join(failed[:5]) or "every file (none found)"))
        else:
            runtime = open_runtime(config)
        out = []
        for question in questions:
            passages = retrieve.search(question, runtime, k=config.k)
            if not passages or not retrieve.is_relevant(passages):
                out.append(Rendered(question, None))
                continue
            prompt = build_prompt(question, passages, tokenizer,
                                  budget=config.context_tokens - max_tokens)
            text = server_text(prompt.text, prompt.tokens, tokenizer)
            out.append(Rendered(question, text, len(prompt.tokens),
                                list(tokenizer.encode(text)) == list(prompt.tokens)))
    return out


def server_text(text: str, tokens: Sequence[int], tokenizer) -> str:
    """The text to post so that mlx_lm.server's `tokenizer.encode(text)` gives `tokens`.

    The rag prompt spells out its special tokens (BOS included) and is encoded
    without adding any; /v1/completions encodes with them, which would add a second
    BOS for tokenizers that add one (Llama): drop the spelled-out one then.
    """
    bos = getattr(tokenizer, "bos_token", None)
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos and bos_id is not None and text.startswith(bos) and tokens and tokens[0] == bos_id:
        added = list(tokenizer.encode("x"))
        if added and added[0] == bos_id:
            return text[len(bos):]
    return text


# -- the baseline server -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlx_server_command(folder: str, port: int, concurrency: int) -> list[str]:
    return [sys.executable, "-c", "import rag; from mlx_lm.server import main; main()",
            "--model", folder, "--host", "127.0.0.1", "--port", str(port),
            "--decode-concurrency", str(concurrency),
            "--prompt-concurrency", str(concurrency), "--log-level", "WARNING"]


@contextlib.contextmanager
def mlx_server(folder: str, concurrency: int, *, startup: float = 300.0
               ) -> Iterator[tuple[str, list[str]]]:
    """Run mlx_lm.server on a free loopback port; yield (base URL, command line)."""
    port = free_port()
    command = mlx_server_command(folder, port, concurrency)
    log = tempfile.NamedTemporaryFile(prefix="mlx-server-", suffix=".log", delete=False)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlx_lm.server exited with {process.returncode}:\n"
                                   + _tail(log.name))
            if get_json(base + "/health", timeout=2)[0] == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlx_lm.server not healthy after {startup:.0f} s:\n"
                                   + _tail(log.name))
            time.sleep(0.5)
        yield base, command
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        with contextlib.suppress(OSError):
            os.unlink(log.name)


def _tail(path: str, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    return ""


def get_json(url: str, key: str = "", timeout: float = 10.0) -> tuple[int, dict]:
    try:
        conn, path = _connection(url, timeout)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        status, body = response.status, response.read()
        conn.close()
    except (OSError, http.client.HTTPException, ValueError):
        return 0, {}
    return status, _json(body.decode(errors="replace"))


# -- the command ---------------------------------------------------------------------
def rag_job(url: str, question: str) -> tuple[str, dict, Callable, str]:
    return url.rstrip("/") + "/api/ask", {"question": question, "stream": True}, rag_event, \
        question


def baseline_job(url: str, prompt: str, max_tokens: int, question: str
                 ) -> tuple[str, dict, Callable, str]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
    return url.rstrip("/") + "/v1/completions", body, openai_event, question


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _ratio(a: float, b: float) -> str:
    return "-" if not (a > 0 and b > 0) else f"{a / b:.2f}"


def server_table(title: str, summaries: Sequence[RoundSummary]):
    from rich.table import Table

    base = next((s.rate for s in summaries if s.n == min(x.n for x in summaries)), math.nan)
    first_n = min(s.n for s in summaries)
    table = Table(title=title, show_edge=False)
    for column in ("N", "decode tok/s", f"x N={first_n}", "TTFT p50", "p95", "total p50",
                   "p95", "tokens", "errors"):
        table.add_column(column, justify="right")
    for s in summaries:
        errors = str(s.errors) + (f" (+{s.refused} refused)" if s.refused else "")
        table.add_row(str(s.n), _fmt(s.rate, 1), _ratio(s.rate, base), _fmt(s.ttft_p50),
                      _fmt(s.ttft_p95), _fmt(s.total_p50), _fmt(s.total_p95),
                      f"{s.tokens}/{_fmt(s.decode_s, 1)}s", errors)
    return table


def ratio_table(rag: Sequence[RoundSummary], base: Sequence[RoundSummary]):
    from rich.table import Table

    table = Table(title="rag / baseline", show_edge=False)
    for column in ("N", "decode rate", "TTFT p50", "total p50"):
        table.add_column(column, justify="right")
    for r, b in zip(rag, base):
        table.add_row(str(r.n), _ratio(r.rate, b.rate), _ratio(r.ttft_p50, b.ttft_p50),
                      _ratio(r.total_p50, b.total_p50))
    return table


def run(config, *, url: str, concurrency: Sequence[int], max_tokens: int,
        questions: Sequence[str], docs: Path | None = None, key: str = "",
        baseline: bool = True, timeout: float = 600.0, console=None) -> dict:
    """Drive the rag server (and the baseline); print the tables; return the figures."""
    from rich.columns import Columns
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()

    def say(text: str, style: str | None = None) -> None:  # plain text: no rich markup
        console.print(text, style=style, markup=False, highlight=False)

    status, health = get_json(url.rstrip("/") + "/health", key)
    if status != 200:
        raise RuntimeError(f"{url}/health answered {status or 'nothing'}: start the rag server"
                           " first (rag serve), with RAG_MAX_TOKENS set to --max-tokens")
    say(f"rag server {url}: generator {health.get('models', {}).get('generator', '?')},"
        f" {health.get('store', {}).get('documents', '?')} documents")
    say(RATE_FORMULA, "dim")

    rendered: dict[str, Rendered] = {}
    folder = ""
    if baseline:
        folder = generator_folder(config)
        say(f"rendering the prompts here (store {docs or config.db}, generator {folder})")
        for item in render_prompts(questions, config, max_tokens, folder, docs):
            rendered[item.question] = item
        skipped = [q for q in questions if rendered[q].text is None]
        if skipped:
            say(f"skipped for both servers, refused without the model ({len(skipped)}): "
                + "; ".join(skipped))
        questions = [q for q in questions if rendered[q].text is not None]
        unequal = [q for q in questions if not rendered[q].same_tokens]
        if unequal:
            say(f"warning: for {len(unequal)} prompts mlx_lm.server's own encoding of the text"
                " differs from the rag tokens", "yellow")
    if not questions:
        raise RuntimeError("no question left to ask")
    warmup, rounds, repeats = plan_rounds(questions, concurrency)
    if repeats:
        say(f"note: {len(questions)} questions for {1 + sum(concurrency)} asks: some repeat"
            " (mlx_lm.server may serve a repeated prompt from its cache)", "yellow")

    def one_round(name: str, n: int, jobs: list) -> tuple[RoundSummary, list]:
        results = run_round(jobs, key=key, timeout=timeout)
        summary = summarize(n, results)
        say(f"  {name} N={n}: {_fmt(summary.rate, 1)} tok/s decode,"
            f" TTFT p50 {_fmt(summary.ttft_p50)} s, total p50 {_fmt(summary.total_p50)} s,"
            f" errors {summary.errors}, wall {_fmt(summary.wall, 1)} s")
        for r in results:
            if not r.ok:
                say(f"    error: {r.status} {r.error} | {r.question}")
        return summary, results

    rag_rounds: list = []
    base_rounds: list = []
    command: list[str] = []
    with contextlib.ExitStack() as stack:
        servers: list[tuple[str, Callable[[str], tuple], list]] = [
            ("rag", lambda q: rag_job(url, q), rag_rounds)]
        if baseline:
            say(f"starting mlx_lm.server (decode and prompt concurrency {max(concurrency)})")
            base_url, command = stack.enter_context(mlx_server(folder, max(concurrency)))
            say("baseline: " + shlex.join(command))
            servers.append(("baseline", lambda q: baseline_job(
                base_url, rendered[q].text, max_tokens, q), base_rounds))
        for name, job, _ in servers:  # loads the rag model, fills the prefix caches
            say(f"{name}: warm-up ask ...")
            [warm] = run_round([job(warmup)], key=key, timeout=timeout)
            if not warm.ok:
                say(f"{name}: warm-up failed: {warm.status} {warm.error}", "yellow")
        # Each N on both servers in turn (one at a time), so that drift in the machine's
        # speed over the run weighs on both alike.
        for n, qs in rounds:
            for name, job, out in servers:
                out.append(one_round(name, n, [job(q) for q in qs]))

    rag_summaries = [s for s, _ in rag_rounds]
    tables = [server_table(escape(f"rag server ({url})"), rag_summaries)]
    base_summaries = [s for s, _ in base_rounds]
    if base_summaries:
        tables.append(server_table("baseline: mlx_lm.server", base_summaries))
    console.print()
    console.print(Columns(tables, padding=(0, 4)))
    if base_summaries:
        console.print(ratio_table(rag_summaries, base_summaries))
    say("seconds; TTFT: request sent -> first token; total: request sent -> end of the"
        " response; tokens: sum (n_i - 1) / union of decode intervals", "dim")
    _checks(say, rag_rounds, base_rounds, rendered, max_tokens)
    return {"rag": rag_summaries, "baseline": base_summaries, "command": command}


def _checks(say, rag_rounds, base_rounds, rendered, max_tokens) -> None:
    """Whether both servers saw the same prompts and the same generation limit."""
    rag_results = [r for _, results in rag_rounds for r in results if r.ok]
    longer = [r for r in rag_results if r.tokens > max_tokens]
    if longer:
        say(f"warning: {len(longer)} rag answers generated more than --max-tokens"
            f" ({max(r.tokens for r in longer)} > {max_tokens}): start the rag server with"
            f" RAG_MAX_TOKENS={max_tokens} for a like-for-like comparison", "yellow")
    if rendered:
        checked = [r for r in rag_results if r.prompt_tokens and rendered.get(r.question)]
        same = sum(r.prompt_tokens == rendered[r.question].tokens for r in checked)
        say(f"prompt check: {same}/{len(checked)} rag answers had as many prompt tokens as"
            " the prompt rendered here for the baseline")
    base_results = [r for _, results in base_rounds for r in results if r.ok]
    if base_results:
        cached = [r.cached_tokens for r in base_results if r.cached_tokens is not None]
        if cached:
            say(f"baseline prompt cache: {sum(cached) / len(cached):.0f} prompt tokens reused"
                " per request on average (rag reuses its system-prompt prefix)")
        counts = {r.question: r.tokens for r in base_results}
        pairs = [(r.tokens, counts[r.question]) for r in rag_results if r.question in counts]
        if pairs:
            say(f"same generated length on both servers: {sum(a == b for a, b in pairs)}"
                f"/{len(pairs)} questions")
