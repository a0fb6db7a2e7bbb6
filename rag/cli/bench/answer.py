"""`python -m rag.cli.bench.answer`: what the answer pipeline costs on top of the model.

1. Throughput: `answer()` vs plain `mlx_lm.stream_generate` on the same prompt
   (the one answer() builds), greedy, so both generate the same tokens.
2. Prefix cache: time to first token with the system message's KV cache reused
   vs prefilled every time.
3. Overhead: seconds from the question to the model's first prefill step with
   `--chunks` chunks stored (default 10,000). The store is synthetic: random unit
   vectors with real words for the full-text index, plus two real documents
   embedded for real, so retrieval finds something relevant and the model runs.

The goal: overhead at most 100 ms, throughput within 5%.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import rag  # noqa: F401 - loads OpenBLAS before mlx

# Long enough an answer (~100 tokens with SmolLM2) for a steady tokens/s figure.
LONG_QUESTION = "Describe the Aurora observatory, its construction and its telescope."
QUESTIONS = ["When was the Aurora observatory completed?",
             "How many flowers does a kilogram of saffron need?",
             "Where was the mirror of the Aurora telescope ground?",
             "Which region does black pepper grow in?"]
REAL = {
    "Aurora Observatory History": [
        ("The Aurora observatory was completed in 1932 on the summit of Mount Keller. Its "
         "construction took six years and employed ninety workers from the valley towns."),
        ("The main telescope of the Aurora observatory has a 2.4 metre mirror, ground in Jena "
         "over two winters. Visitors may tour the dome on Saturdays between May and October.")],
    "Spices of the World": [
        ("Saffron is harvested by hand from the crocus flower in autumn. A kilogram of "
         "saffron needs about 150,000 flowers, which is why it costs more than silver."),
        ("Black pepper grows on a flowering vine in the Malabar region of India, where it "
         "has been traded for more than three thousand years.")],
}
WORDS = ["harbour", "lantern", "granite", "meadow", "orchard", "falcon", "copper", "willow",
         "thunder", "glacier", "saffron", "compass", "velvet", "anchor", "ember", "quarry",
         "river", "mountain", "winter", "summer", "library", "engine", "castle", "forest",
         "market", "bridge", "village", "tower", "garden", "island"]


def build_store(runtime, n_chunks: int, per_doc: int = 100, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    items = []
    for d in range(max(1, n_chunks // per_doc)):
        doc_id = hashlib.sha256(f"synthetic {d}".encode()).hexdigest()
        texts = [" ".join(" ".join(rng.choice(WORDS, 15)).capitalize() + "." for _ in range(6))
                 for _ in range(per_doc)]
        # Six sentence pieces per chunk, as in real text (covidqa: 2,616 chunks, ~16k pieces).
        vectors = rng.standard_normal((per_doc, 6, runtime.embedder.dim)).astype("float32")
        vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
        items.append(_item(doc_id, f"Synthetic {d}", texts, vectors))
    for title, texts in REAL.items():
        items.append(_item(hashlib.sha256(title.encode()).hexdigest(), title, texts,
                           runtime.embedder.embed_batch(texts)))
    runtime.store.add_documents(items)
    runtime.store.chunks.refresh_indexes()


def _item(doc_id, title, texts, vectors):
    from rag.types import Chunk, Document

    doc = Document(path=f"/bench/{title}.txt", title=title, mime="text/plain", sha256=doc_id,
                   pages=[])
    chunks = [Chunk(doc_id, i, t, i + 1, i + 1, 0, len(t)) for i, t in enumerate(texts)]
    return doc, chunks, vectors, b""


def throughput(runtime, question: str, max_tokens: int, repeats: int) -> dict:
    """Generation tok/s of answer() and of stream_generate on answer()'s own prompt."""
    from mlx_lm import stream_generate

    from rag.answering import answer
    from rag.prompt import build_prompt
    from rag.retrieve import search

    generator = runtime.generator()
    config = runtime.config
    prompt = build_prompt(question, search(question, runtime, k=config.k), generator.tokenizer,
                          budget=config.context_tokens - max_tokens)
    ours, plain = [], []
    for _ in range(repeats):  # alternate, so drift in machine load hits both alike
        a = answer(question, runtime, max_tokens=max_tokens, temperature=0.0)
        ours.append((a.generation_tokens, a.generation_tps))
        last = None
        # The last response carries the totals.
        for last in stream_generate(generator.model, generator.tokenizer,  # noqa: B007
                                    prompt.tokens, max_tokens=max_tokens):
            pass
        plain.append((last.generation_tokens, last.generation_tps))
    return {"tokens": ours[0][0], "plain_tokens": plain[0][0],
            "answer_tps": statistics.median(t for _, t in ours),
            "plain_tps": statistics.median(t for _, t in plain)}


def prefix_speedup(runtime, question: str, repeats: int) -> dict:
    """Seconds to the first token with and without the prefix cache (same prompt)."""
    from rag.prompt import build_prompt
    from rag.retrieve import search
    from rag.streams import GenRequest

    engine = runtime.engine()
    prompt = build_prompt(question, search(question, runtime), engine.tokenizer,
                          budget=runtime.config.context_tokens - 8)
    timings: dict[str, list[float]] = {"cached": [], "uncached": []}
    for _ in range(repeats):
        for name, prefix_len in (("cached", prompt.prefix_len), ("uncached", 0)):
            start = time.perf_counter()
            stream = engine.submit(GenRequest(prompt.tokens, 2, 0.0, prefix_len=prefix_len))
            next(e for e in stream if e.tokens or e.finish)
            timings[name].append(time.perf_counter() - start)
            stream.close()
    return {"prompt_tokens": len(prompt.tokens), "prefix_tokens": prompt.prefix_len,
            **{name: statistics.median(v) for name, v in timings.items()}}


def overhead(runtime, repeats: int) -> dict:
    """Question -> first prefill step: timings of stream_answer before the model runs."""
    from rag.answering import DoneEvent, stream_answer

    rows: dict[str, list[float]] = {"retrieve_s": [], "prompt_s": [], "to_generate_s": [],
                                    "to_prefill_s": []}
    for i in range(repeats):
        question = QUESTIONS[i % len(QUESTIONS)]
        for event in stream_answer(question, runtime, max_tokens=2):
            if isinstance(event, DoneEvent):
                a = event.answer
        t = a.timings
        if a.refused:
            raise RuntimeError(f"{question!r} was refused: the benchmark needs the model to run")
        # The model's own prefill time, measured by mlx-lm, taken off the first-token time.
        prefill = (a.prompt_tokens - a.cached_tokens) / a.prompt_tps
        for key in ("retrieve_s", "prompt_s", "to_generate_s"):
            rows[key].append(t[key])
        rows["to_prefill_s"].append(t["first_token_s"] - prefill)
    return {k: statistics.median(v) for k, v in rows.items()}


def main(argv: list[str] | None = None) -> None:
    from rag.config import load_config, replace
    from rag.runtime import open_runtime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--offline", action="store_true", help="Use the offline model pack.")
    args = parser.parse_args(argv)
    config = load_config({"models": "pack"} if args.offline else {})
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        runtime = open_runtime(replace(config, db=Path(tmp) / "db"))
        started = time.perf_counter()
        build_store(runtime, args.chunks)
        print(f"store: {runtime.store.chunks.count()} chunks in"
              f" {time.perf_counter() - started:.1f} s; generator: {runtime.generator().path}")
        stream_answer_warmup(runtime)
        report(throughput(runtime, LONG_QUESTION, args.max_tokens, args.repeats),
               prefix_speedup(runtime, QUESTIONS[1], max(args.repeats, 3)),
               overhead(runtime, max(2 * args.repeats, 8)))


def stream_answer_warmup(runtime) -> None:
    from rag.answering import answer

    answer(QUESTIONS[0], runtime, max_tokens=2)  # loads the model, fills the prefix cache


def report(tp: dict, pc: dict, oh: dict) -> None:
    ratio = tp["answer_tps"] / tp["plain_tps"] if tp["plain_tps"] else 0.0
    print(f"\nthroughput, same prompt, greedy ({tp['tokens']} vs {tp['plain_tokens']} tokens)")
    print(f"  {'answer()':<28}{tp['answer_tps']:8.2f} tok/s")
    print(f"  {'mlx_lm.stream_generate':<28}{tp['plain_tps']:8.2f} tok/s")
    print(f"  ratio {ratio:.3f}  ({'PASS' if ratio >= 0.95 else 'FAIL'}: within 5%)")
    print(f"\nprefix cache ({pc['prefix_tokens']} of {pc['prompt_tokens']} prompt tokens)")
    print(f"  {'first token, cache reused':<28}{pc['cached'] * 1000:8.0f} ms")
    print(f"  {'first token, full prefill':<28}{pc['uncached'] * 1000:8.0f} ms")
    print(f"  speedup {pc['uncached'] / pc['cached']:.2f}x")
    print("\noverhead, question -> first prefill step (median)")
    for key, label in (("retrieve_s", "retrieval"), ("prompt_s", "prompt"),
                       ("to_generate_s", "to the engine's queue"),
                       ("to_prefill_s", "to the model's prefill")):
        print(f"  {label:<28}{oh[key] * 1000:8.1f} ms")
    print(f"  ({'PASS' if oh['to_prefill_s'] <= 0.1 else 'FAIL'}: <= 100 ms)")


if __name__ == "__main__":
    main()
