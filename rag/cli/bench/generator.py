"""Benchmark the offline generator on this CPU: `python -m rag.cli.bench.generator --cache DIR`.

Prints, side by side, prefill tokens/s on a 1,000-token prompt, generation
tokens/s over 100 new tokens, peak memory and the wall time of prompt + 100
tokens, for the pack's float32 generator and for the same weights quantized back
to 4 bits (what the GGUF holds), with OpenBLAS and with the BLAS bundled in the
mlx-cpu wheel. Each variant runs in a fresh subprocess: the BLAS choice must be
made before mlx is imported (rag/blas.py), and one variant's memory or caches
must not flatter the next.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# (label, weights, BLAS): "quantized" re-quantizes the float32 pack to 4-bit, group 32
# (8-bit embeddings), the same affine layout Q4_1 uses, so it stands for the stock GGUF path.
VARIANTS = {
    "f32-openblas": ("float32", "openblas"),
    "q4-openblas": ("quantized", "openblas"),
    "f32-bundled": ("float32", "bundled"),
}
FILLER = ("The committee reviewed the quarterly figures, noted that shipping costs rose in "
          "the northern region, and asked the finance team to explain the variance. ")


def measure(model_dir: Path, weights: str, prompt_tokens: int, gen_tokens: int) -> dict:
    """Runs in the worker process, after rag/__init__ has (or has not) loaded OpenBLAS."""
    import mlx.core as mx
    from mlx import nn
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    import rag.blas

    start = time.perf_counter()
    model, tokenizer = load(str(model_dir))
    if weights == "quantized":
        nn.quantize(model, group_size=32, bits=4,
                    class_predicate=lambda p, m: ({"group_size": 32, "bits": 8}
                                                  if p.endswith("embed_tokens")
                                                  else hasattr(m, "to_quantized")))
        mx.eval(model.parameters())
    load_s = time.perf_counter() - start

    text = FILLER * (prompt_tokens // 20 + 10)
    prompt = tokenizer.encode(text)[:prompt_tokens]
    eos = mx.array(sorted(tokenizer.eos_token_ids))

    def no_eos(tokens, logits):  # force exactly gen_tokens new tokens
        logits[:, eos] = -float("inf")
        return logits

    mx.reset_peak_memory()
    start = time.perf_counter()
    for last in stream_generate(model, tokenizer, prompt, max_tokens=gen_tokens,  # noqa: B007
                                sampler=make_sampler(temp=0.0), logits_processors=[no_eos]):
        pass
    total_s = time.perf_counter() - start
    return {"blas": rag.blas.loaded or "bundled", "load_s": load_s,
            "prompt_tokens": last.prompt_tokens, "prompt_tps": last.prompt_tps,
            "generation_tokens": last.generation_tokens, "generation_tps": last.generation_tps,
            "peak_gb": last.peak_memory, "total_s": total_s}


def run_variant(name: str, model_dir: Path, prompt_tokens: int, gen_tokens: int,
                timeout: float) -> dict:
    weights, blas = VARIANTS[name]
    env = dict(os.environ, RAG_BLAS="bundled" if blas == "bundled" else "")
    cmd = [sys.executable, "-m", "rag.cli.bench.generator", "--worker", weights, "--model",
           str(model_dir), "--prompt-tokens", str(prompt_tokens),
           "--gen-tokens", str(gen_tokens)]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}


def print_table(rows: dict[str, dict]) -> None:
    head = f"{'variant':<14}{'prefill tok/s':>14}{'gen tok/s':>11}{'peak GB':>9}" \
           f"{'prompt+gen s':>14}{'load s':>8}"
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<14}  failed: {r['error']}")
            continue
        print(f"{name:<14}{r['prompt_tps']:>14.1f}{r['generation_tps']:>11.1f}"
              f"{r['peak_gb']:>9.2f}{r['total_s']:>14.1f}{r['load_s']:>8.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rag.cli.bench.generator", description=__doc__)
    parser.add_argument("--cache", type=Path, default=None,
                        help="model cache (default: the configured cache_dir)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--gen-tokens", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per variant")
    parser.add_argument("--worker", choices=["float32", "quantized"], help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = measure(args.model, args.worker, args.prompt_tokens, args.gen_tokens)
        print("RESULT " + json.dumps(result), flush=True)
        return

    from rag import pack

    if args.cache is None:
        from rag.config import load_config

        args.cache = load_config().cache_dir
    model_dir = pack.pull(args.cache).generator
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}")
    print(f"generator: {model_dir}\nprompt {args.prompt_tokens} tokens, "
          f"{args.gen_tokens} new tokens, greedy, {os.cpu_count()} CPUs\n", flush=True)
    rows = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows[name] = run_variant(name, model_dir, args.prompt_tokens, args.gen_tokens,
                                 args.timeout)
    print_table(rows)


if __name__ == "__main__":
    main()
