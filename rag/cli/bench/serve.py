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

The measurement (the formula, percentiles, SSE parsing, each stream's record) is in
`serve_measure`; the HTTP clients and the baseline server's process in
`serve_clients`.
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.cli.bench.serve_clients import baseline_job, get_json, mlx_server, rag_job, run_round
from rag.cli.bench.serve_clients import stream_request as stream_request  # for bench loadtest
from rag.cli.bench.serve_measure import RoundSummary, summarize
from rag.cli.bench.serve_measure import StreamResult as StreamResult  # for bench loadtest
from rag.cli.bench.serve_measure import rag_event as rag_event  # for bench loadtest

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


# -- the command ---------------------------------------------------------------------
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
