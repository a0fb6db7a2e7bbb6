"""`rag bench ...`: benchmarks that print figures (never timed tests)."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from rag.cli.common import config_options


@click.group()
def bench() -> None:
    """Benchmarks: BLAS and embeddings, the offline generator, ingestion (local and on Ray),
    serving, storage."""


def _pack(config):
    from rag import pack

    return pack.pull(config.cache_dir, quiet=True)


@bench.command("models")
@config_options
def bench_models(config) -> None:
    """Matmul and MiniLM with the bundled BLAS vs the project's set-up; generator speed."""
    from rag.cli.bench import blas as b

    paths = _pack(config)
    table = Table(title="BLAS: bundled vs project set-up", show_edge=False)
    for column in ("measure", "bundled BLAS", "project set-up"):
        table.add_column(column)
    for row in b.blas_table(str(paths.embedder)):
        table.add_row(*row)
    Console().print(table)
    from rag.cli.bench import generator

    generator.main(["--cache", str(config.cache_dir)])


@bench.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--limit", type=int, help="Only the first N files (sorted by name).")
@config_options
def bench_ingest(paths, limit, config) -> None:
    """Ingest PATHS into a fresh temporary store and print rates and the time split."""
    from rag.cli.bench.ingest import run

    run(list(paths), config, limit=limit)


@bench.command("ocr")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--languages", help="Tesseract packs (default: the ocr_languages setting).")
@click.option("--copies", type=int, default=2, show_default=True,
              help="Scans of each PDF read in one run.")
@config_options
def bench_ocr(paths, languages, copies, config) -> None:
    """Scan the text PDFs PATHS (default: the demo corpus's) to image-only PDFs, read them back with
    OCR: pages/s with 1 and 2 parser processes, character error rate; text PDFs with OCR
    on and off."""
    from rag.cli.bench.ocr import run

    try:
        run(list(paths), languages or config.ocr_languages, copies=max(1, copies))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc


@bench.command("ray")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--address", metavar="ADDRESS",
              help="A running cluster (auto, host:6379, ray://host:10001); default: a new one"
                   " on this machine's cores.")
@click.option("--limit", type=int, help="Only the first N files (sorted by name).")
@config_options
def bench_ray(paths, address, limit, config) -> None:
    """Ingest PATHS on this process's path, then on a Ray cluster: wall times side by side
    (cluster start apart), per-worker rates, and a projection for more nodes."""
    from ingest.distributed import ClusterError
    from rag.cli.bench.ray_ingest import run

    try:
        run(list(paths), config, address=address, limit=limit)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from exc


@bench.command("serve")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="The running rag server.")
@click.option("--concurrency", default="1,2,4,8", show_default=True,
              help="Comma-separated numbers of questions sent at once (one round each).")
@click.option("--max-tokens", type=int, default=None,
              help="The baseline's max_tokens and the prompt budget (default: the configured"
                   " max_tokens); start the rag server with the same RAG_MAX_TOKENS.")
@click.option("--questions", "questions_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON lines with a \"question\" field (default: questions about corpora/).")
@click.option("--docs", type=click.Path(exists=True, path_type=Path),
              help="Render the baseline's prompts from a temporary store with DOCS ingested"
                   " (the documents the server holds) instead of --db.")
@click.option("--key", default=lambda: os.environ.get("RAG_API_KEY", ""),
              help="API key of the rag server (default: $RAG_API_KEY).")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also run mlx_lm.server with the same model and prompts.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds allowed for one streamed answer.")
@config_options
def bench_serve(url, concurrency, max_tokens, questions_file, docs, key, baseline, timeout,
                config) -> None:
    """Concurrent streamed questions against a running rag server, and a baseline.

    For each N in --concurrency, N distinct questions are streamed at once; per N
    it prints the aggregate decode rate, time to first token and total time
    (p50/p95) and errors. With --baseline (the default) the same prompts, rendered
    here from the same store (--db, or --docs), go to a plain mlx_lm.server started
    with the same generator folder, and the rates are compared.

    \b
    aggregate decode rate = sum_i (n_i - 1) / |union_i [t_first_i, t_last_i]|
      t_first_i, t_last_i: when stream i's first and last generated token arrived
      n_i: tokens it generated, by the server's count (rag: done.generation_tokens;
           mlx_lm.server: usage.completion_tokens), else its streamed text chunks
    i.e. tokens generated after each stream's first token, per second during which
    at least one stream was decoding. Prefill shows as time to first token.
    """
    from rag.cli.bench import serve

    try:
        levels = serve.parse_concurrency(concurrency)
        questions = (serve.load_questions(questions_file) if questions_file
                     else list(serve.DEFAULT_QUESTIONS))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    max_tokens = config.max_tokens if max_tokens is None else max_tokens
    if not 1 <= max_tokens < config.context_tokens:
        raise click.UsageError(f"--max-tokens: from 1 to {config.context_tokens - 1}")
    try:
        serve.run(config, url=url, concurrency=levels, max_tokens=max_tokens,
                  questions=questions, docs=docs, key=key, baseline=baseline,
                  timeout=timeout)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc


@bench.command("prefill")
@click.option("--steps", default="128,256,512,1024,2048", show_default=True,
              help="Comma-separated prefill step sizes (tokens) to compare.")
@click.option("--prompt-tokens", type=int, default=2048, show_default=True,
              help="Length of the prompt that arrives while an answer decodes.")
@config_options
def bench_prefill(steps, prompt_tokens, config) -> None:
    """How long a new question's prefill stalls the answers being decoded, per step size."""
    from rag.cli.bench.prefill import run

    run(config, steps=[int(s) for s in steps.split(",")], prompt_tokens=prompt_tokens)


@bench.command("engine")
@click.option("--concurrency", default="1,2,4,8", show_default=True,
              help="Comma-separated numbers of prompts submitted at once (one round each).")
@click.option("--max-tokens", type=int, default=128, show_default=True)
@click.option("--prompt-tokens", type=int, default=800, show_default=True,
              help="About this many tokens per prompt (corpora/ passages, the pinned prompt).")
@click.option("--random-weights", type=click.Choice(["generator", "llama-3.1-8b"]),
              help="Seeded random weights of this shape with the generator's tokenizer"
                   " (llama-3.1-8b: the default generator's shape, 4-bit).")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also run mlx_lm.server with the same model and prompts.")
@click.option("--warm/--no-warm", default=True, show_default=True,
              help="Run each N twice per server and count the second round (kernels compiled"
                   " on first use of a shape are not counted).")
@click.option("--prefill-steps", default=None,
              help="Comma-separated prefill step sizes to compare, one engine each"
                   " (default: the configured prefill_step).")
@click.option("--timeout", type=float, default=600.0, show_default=True)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every figure as JSON.")
@config_options
def bench_engine(concurrency, max_tokens, prompt_tokens, random_weights, baseline, warm,
                 prefill_steps, timeout, report, config) -> None:
    """The generation engine alone, in-process, against mlx_lm.server on the same prompts.

    Per N: aggregate decode rate, time to first token and total time (p50/p95), with
    the formula of `rag bench serve`; no web server or store needed (an accelerator
    box). See rag/cli/bench/engine.py.
    """
    from rag.cli.bench import engine
    from rag.cli.bench.serve import parse_concurrency

    try:
        levels = parse_concurrency(concurrency)
        steps = parse_concurrency(prefill_steps) if prefill_steps else [config.prefill_step]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        engine.measure(config, random_weights=random_weights, concurrency=levels,
                       max_tokens=max_tokens, prompt_tokens=prompt_tokens, baseline=baseline,
                       timeout=timeout, report=report, warm=warm, prefill_steps=steps)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc


@bench.command("contention")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--max-tokens", type=int, default=128, show_default=True)
@config_options
def bench_contention(folder, max_tokens, config) -> None:
    """Decode rate of one answer: idle, while this process ingests FOLDER, and while a
    separate `rag ingest` does."""
    from rag.cli.bench.contention import run

    run(folder, config, max_tokens=max_tokens)


@bench.command("scale")
@click.option("--sizes", default="100000,1000000", show_default=True,
              help="Comma-separated store sizes, in chunks of 6 sentence pieces.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the stores and the cached sentence vectors (default: a"
                   " temporary one, removed at the end).")
@click.option("--keep", is_flag=True, help="Keep the stores (with --work: reused next time).")
@click.option("--matrix-max", type=int, default=300_000, show_default=True,
              help="Measure the in-memory matrix up to this many chunks (4 bytes x dim per"
                   " piece; its search process peaked at 6 GB at 300k chunks of 384"
                   " dimensions).")
@click.option("--hnsw-max", type=int, default=100_000, show_default=True,
              help="Compare IVF-HNSW-SQ up to this many chunks (its build is slow).")
@click.option("--append", type=int, default=1000, show_default=True,
              help="Chunks appended after the index is built, then searched unindexed.")
@click.option("--project", type=int, default=5_000_000, show_default=True,
              help="Project the figures to this many chunks (0: none).")
@click.option("--questions", type=int, default=200, show_default=True,
              help="covidqa dev questions searched at each size.")
@click.option("--eval-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default="../shared/eval", show_default=True,
              help="The evaluation sets (covidqa's papers lend their sentence vectors).")
@click.option("--dim", type=int, default=None,
              help="Lift the real vectors to this many dimensions by one fixed random map"
                   " (768: the default embedder's width, measured with the offline pack's"
                   " 384-dimensional one); default: the embedder's own.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every figure as JSON.")
@config_options
def bench_scale(sizes, work, keep, matrix_max, hnsw_max, append, project, questions, eval_dir,
                dim, report, config) -> None:
    """Sentence-piece search at 100k to millions of chunks: the indexed piece table
    (IVF-PQ; IVF-HNSW-SQ to compare) beside today's in-memory matrix where it fits.

    Prints p50/p95 latency, recall@10 against exact search, resident memory of a
    search-only process (no model loaded), index build time, the full-text side, and
    a projection to --project chunks; see rag/cli/bench/scale.py.
    """
    from rag.cli.bench.scale import run

    try:
        counts = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError as exc:
        raise click.UsageError(f"--sizes: {exc}") from exc
    if not counts or min(counts) < 1000:
        raise click.UsageError("--sizes: at least 1000 chunks each")
    if dim is not None and dim < 16:
        raise click.UsageError("--dim: at least 16")
    try:
        run(config, sizes=counts, work=work, keep=keep, matrix_max=matrix_max,
            hnsw_max=hnsw_max, append=max(0, append), project=project, questions=questions,
            eval_dir=eval_dir, report=report, dim=dim)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc


@bench.command("storage")
@click.option("--docs", type=int, default=1000, show_default=True,
              help="Small text documents uploaded one by one.")
@click.option("--baseline", type=int, default=100, show_default=True,
              help="Also upload the first N into a store optimized after every upload"
                   " (the old behaviour); 0 for none.")
@click.option("--every", type=int, default=100, show_default=True,
              help="Print a row every N documents.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the rows as JSON.")
@config_options
def bench_storage(docs, baseline, every, report, config) -> None:
    """Store bytes on disk against live data, and upload time, over DOCS small uploads.

    Each document takes the web upload's path (ingest_file, then the maintenance the
    server runs between jobs), with the offline pack's embedder, in a fresh
    temporary store; see rag/cli/bench/storage.py for the columns.
    """
    from rag.cli.bench.storage import run

    if docs < 1 or every < 1 or baseline < 0:
        raise click.UsageError("--docs and --every: at least 1; --baseline: at least 0")
    run(config, docs=docs, baseline=min(baseline, docs), every=every, report=report)
