"""`rag bench engine`: the generation engine in-process against mlx_lm.server, same prompts.

    rag bench engine --offline [--generator FOLDER] [--random-weights SHAPE] \
        --concurrency 1,2,4,8 --max-tokens 128 [--prompt-tokens 800] [--no-baseline]
    python -m rag.cli.bench.engine ...   (the same, without the `rag` command's imports)

`rag bench serve` measures answers through the web server; this measures the
engine alone (rag/engine.py), for machines where the web stack and the store are
not installed (an accelerator box) and to tell the engine's share from the web
tier's. For each N in --concurrency, N distinct prompts are submitted at once
to one LocalEngine (max_running = the largest N) and read as streams; then the
same prompts go to `mlx_lm.server` (started on a free loopback port with the same
model folder and `--decode-concurrency` = the largest N) on `/v1/completions`,
streamed, temperature 0. Both use `serve_measure`'s formula:

    aggregate decode rate = sum_i (n_i - 1) / |union_i [t_first_i, t_last_i]|

The engine is read in-process and the baseline over HTTP: the baseline pays for
its HTTP streaming, which is small next to a decode step of a real model.

With --warm (the default) each N runs twice on each server and the second round
counts: MLX's CUDA backend compiles kernels on first use of a shape (the first
round of 8 streams took 37 s to its first token on an H200), which is not what
a server that has been running a while pays.

Prompts: passages from the repository's corpora/ (its Markdown and text files),
rotated so every prompt differs, rendered by rag.prompt.build_prompt (the pinned
system prompt, so the engine's system-prefix cache applies) to about
--prompt-tokens tokens.

--random-weights SHAPE replaces the model's weights by seeded random ones and
keeps its tokenizer: `generator` keeps the generator's own shape (the offline
pack's SmolLM2-135M), `llama-3.1-8b` is the default generator's shape (Llama 3.1
8B, 4-bit, group 64, as mlx-community's) with the tokenizer's vocabulary. The
decode rate depends on the shape, not on the values; it lets the default model's
shape be measured where it cannot be downloaded. Greedy output of random weights
is noise, the same for both servers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import rag  # noqa: F401  (OpenBLAS before mlx.core, rag/blas.py)
from rag.cli.bench.serve_measure import StreamResult, summarize

ROOT = Path(__file__).resolve().parents[3]
# The default generator's shape (mlx-community/Meta-Llama-3.1-8B-Instruct-4bit).
SHAPES = {
    "llama-3.1-8b": {
        "config": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
                   "intermediate_size": 14336, "num_attention_heads": 32,
                   "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-05,
                   "rope_theta": 500000.0, "max_position_embeddings": 131072,
                   "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 8192,
                                    "rope_type": "llama3"},
                   "tie_word_embeddings": False},
        "quantization": {"group_size": 64, "bits": 4},
    },
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "generation_config.json", "chat_template.jinja")


def random_model(source: Path, shape: str, dest: Path, seed: int = 0) -> Path:
    """A model folder at `dest`: `source`'s tokenizer, seeded random weights of `shape`."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes, save_config, save_model

    own = json.loads((source / "config.json").read_text())
    if shape == "generator":
        config, quant = dict(own), None
    elif shape in SHAPES:
        config = {**SHAPES[shape]["config"], "vocab_size": own["vocab_size"]}
        for key in ("bos_token_id", "eos_token_id"):
            if key in own:
                config[key] = own[key]
        quant = SHAPES[shape]["quantization"]
    else:
        raise ValueError(f"--random-weights: {shape!r} is not one of generator, "
                         + ", ".join(SHAPES))
    config.pop("quantization", None)
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    model.set_dtype(mx.bfloat16 if quant else mx.float32)
    mx.eval(model.parameters())  # nn's default initialisers, drawn once from the seed
    if quant:
        nn.quantize(model, **quant)
        config["quantization"] = dict(quant)
    dest.mkdir(parents=True, exist_ok=True)
    save_model(dest, model)
    save_config(config, dest / "config.json")
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, dest / name)
    count = sum(v.size for _, v in tree_flatten(model.parameters()))
    print(f"random weights ({shape}, seed {seed}): {count / 1e6:,.0f}M stored values in {dest}")
    return dest


def corpus_passages(limit: int = 200) -> list:
    """Paragraphs of corpora/'s Markdown and text files as Passages."""
    from rag.types import Passage

    out = []
    for path in sorted((ROOT / "corpora").glob("*")):
        if path.suffix not in (".md", ".txt"):
            continue
        for i, part in enumerate(p.strip() for p in path.read_text().split("\n\n")):
            if len(part) >= 80:
                out.append(Passage(f"{path.stem}-{i}", path.stem, path.stem, str(path), part,
                                   1, 1, 0, len(part)))
    if not out:
        raise RuntimeError(f"no passages in {ROOT / 'corpora'}")
    return out[:limit]


def build_prompts(tokenizer, count: int, prompt_tokens: int) -> list:
    """`count` distinct prompts of about `prompt_tokens` tokens each."""
    from rag.prompt import build_prompt

    passages = corpus_passages()
    prompts = []
    for i in range(count):
        shift = (i * 7) % len(passages)
        ranked = passages[shift:] + passages[:shift]
        question = f"Question {i + 1}: what do these sources say about {ranked[0].title}?"
        prompts.append(build_prompt(question, ranked, tokenizer, budget=prompt_tokens))
    return prompts


def engine_round(engine, requests: Sequence, timeout: float) -> list[StreamResult]:
    """Submit every request at the same moment, read each stream on its own thread."""
    barrier = threading.Barrier(len(requests))
    results = [StreamResult(f"prompt {i + 1}") for i in range(len(requests))]

    def consume(request, result: StreamResult) -> None:
        barrier.wait()
        result.start = time.perf_counter()
        try:
            stream = engine.submit(request)
        except Exception as exc:  # Busy, EngineError: counted as errors
            result.error = str(exc)
            return
        result.status = 200
        for event in stream:
            now = time.perf_counter()
            if event.text:
                result.token_arrived(now)
            if event.finish is not None:
                result.done = event.finish in ("stop", "length")
                result.error = event.error or ("" if result.done else event.finish)
                result.server_tokens = event.generation_tokens
                result.prompt_tokens = event.prompt_tokens
                result.cached_tokens = event.cached_tokens
        result.end = time.perf_counter()

    threads = [threading.Thread(target=consume, args=(r, res), daemon=True)
               for r, res in zip(requests, results)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return results


def run(folder: str, *, concurrency: Sequence[int], max_tokens: int, prompt_tokens: int,
        baseline: bool = True, timeout: float = 600.0, name: str = "", warm: bool = True,
        prefill_steps: Sequence[int] = (256,)) -> dict:
    """Measure the engine (and mlx_lm.server) at each N; print the tables; return figures."""
    import mlx.core as mx
    from mlx_lm import load
    from rich.columns import Columns
    from rich.console import Console

    from rag.cli.bench.serve import RATE_FORMULA, ratio_table, server_table, server_text
    from rag.cli.bench.serve_clients import baseline_job, mlx_server, run_round
    from rag.engine import LocalEngine
    from rag.generate import Generator, settle
    from rag.streams import GenRequest

    console = Console()
    say = lambda text: console.print(text, markup=False, highlight=False)  # noqa: E731
    say(f"mlx {mx.__version__}, device {mx.default_device()}; model {name or folder}")
    say(RATE_FORMULA)
    model, tokenizer = load(folder)
    settle(model)  # built here, run on the engine's thread (rag/generate.py)
    generator = Generator(name=name or Path(folder).name, path=folder, model=model,
                          tokenizer=tokenizer)
    top = max(concurrency)
    prompts = build_prompts(tokenizer, top + 1, prompt_tokens)
    say(f"{len(prompts)} prompts of {min(len(p.tokens) for p in prompts)}-"
        f"{max(len(p.tokens) for p in prompts)} tokens, max_tokens {max_tokens}")

    def request(p):
        return GenRequest(tokens=list(p.tokens), max_tokens=max_tokens, prefix_len=p.prefix_len,
                          time_limit_s=timeout)

    figures: dict = {"engine": {}, "baseline": []}
    tables, runs = [], {}
    for step in prefill_steps:
        engine = LocalEngine(generator, max_running=top, max_waiting=top, prefill_step=step)
        try:
            engine_round(engine, [request(prompts[-1])], timeout)  # warm-up
            mine = []
            for n in concurrency:
                for _ in range(1 + warm):  # the last round counts
                    results = engine_round(engine, [request(p) for p in prompts[:n]], timeout)
                mine.append(summarize(n, results))
        finally:
            engine.close()
        runs[step] = mine
        figures["engine"][str(step)] = [s.__dict__ for s in mine]
        tables.append(server_table(f"engine, prefill step {step}", mine))
    if baseline:
        texts = [server_text(p.text, p.tokens, tokenizer) for p in prompts]
        theirs = []
        with mlx_server(folder, top) as (url, _):
            run_round([baseline_job(url, texts[-1], max_tokens, "warm-up")], timeout=timeout)
            for n in concurrency:
                jobs = [baseline_job(url, texts[i], max_tokens, f"prompt {i + 1}")
                        for i in range(n)]
                for _ in range(1 + warm):
                    results = run_round(jobs, timeout=timeout)
                theirs.append(summarize(n, results))
        figures["baseline"] = [s.__dict__ for s in theirs]
        tables.append(server_table("mlx_lm.server (HTTP)", theirs))
        tables += [ratio_table(mine, theirs) for mine in runs.values()]
    console.print(Columns(tables))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rag.cli.bench.engine",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", help="model folder (default: the configured generator)")
    parser.add_argument("--offline", action="store_true", help="use the offline model pack")
    parser.add_argument("--random-weights", choices=["generator", *SHAPES],
                        help="seeded random weights of this shape, the generator's tokenizer")
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=800)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-warm", action="store_true", help="measure each N's first round")
    parser.add_argument("--prefill-steps",
                        help="the engine's prefill step sizes to compare, one engine each"
                             " (default: the configured prefill_step)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--report", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    from rag.cli.bench.serve import parse_concurrency
    from rag.config import load_config

    config = load_config({"models": "pack" if args.offline else None,
                          "generator": args.generator})
    try:
        levels = parse_concurrency(args.concurrency)
        steps = (parse_concurrency(args.prefill_steps) if args.prefill_steps
                 else [config.prefill_step])
    except ValueError as exc:
        parser.error(str(exc))
    measure(config, random_weights=args.random_weights, concurrency=levels,
            max_tokens=args.max_tokens, prompt_tokens=args.prompt_tokens,
            baseline=not args.no_baseline, timeout=args.timeout, report=args.report,
            warm=not args.no_warm, prefill_steps=steps)


def measure(config, *, random_weights: str | None, concurrency: Sequence[int],
            max_tokens: int, prompt_tokens: int, baseline: bool, timeout: float,
            report: Path | None, warm: bool = True, prefill_steps: Sequence[int] = (256,)
            ) -> dict:
    """The configured generator (or random weights of a shape), measured by run()."""
    from rag.cli.bench.serve import generator_folder

    folder = generator_folder(config)
    with tempfile.TemporaryDirectory(prefix="rag-bench-engine-") as tmp:
        name = ""
        if random_weights:
            folder = str(random_model(Path(folder), random_weights, Path(tmp) / "model"))
            name = f"random {random_weights}"
        figures = run(folder, concurrency=concurrency, max_tokens=max_tokens,
                      prompt_tokens=prompt_tokens, baseline=baseline, timeout=timeout,
                      name=name, warm=warm, prefill_steps=prefill_steps)
    if report:
        report.write_text(json.dumps(figures, indent=1, default=str))
    return figures


if __name__ == "__main__":
    sys.exit(main())
