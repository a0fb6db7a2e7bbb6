"""`rag bench prefill`: how long a new question's prefill stalls the answers being decoded.

For each prefill step size, one engine decodes a long answer while a second
question with a long prompt arrives. Its prefill runs in steps of that many
tokens between the first answer's decode steps, so the first answer's longest
gap between two tokens is about one prefill step. Printed side by side: that
longest gap, the first answer's median gap (its decode pace), and the second
question's time to its first token (a bigger step prefills faster overall).
"""

from __future__ import annotations

import statistics
import threading
import time

STORY = "Write a long story about a lighthouse keeper who collects maps, with many details."
FILLER = ("The committee reviewed the quarterly figures, noted that shipping costs rose in "
          "the northern region, and asked the finance team to explain the variance. ")


def _tokens(tokenizer, user: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)
    return list(tokenizer.encode(text, add_special_tokens=False))


def measure(generator, step: int, prompt_tokens: int) -> dict:
    from rag.engine import LocalEngine
    from rag.streams import GenRequest

    engine = LocalEngine(generator, prefill_step=step)
    try:
        list(engine.submit(GenRequest(_tokens(generator.tokenizer, "Hi"), 4)))  # warm up
        long_prompt = _tokens(generator.tokenizer, FILLER * 200)[-prompt_tokens:]
        arrivals: list[float] = []
        running = engine.submit(GenRequest(_tokens(generator.tokenizer, STORY), 400))
        reader = threading.Thread(target=lambda: arrivals.extend(
            time.perf_counter() for event in running if event.tokens))
        reader.start()
        while len(arrivals) < 20:  # the first answer is decoding steadily
            time.sleep(0.01)
        sent = time.perf_counter()
        second = engine.submit(GenRequest(long_prompt, 8))
        first_token = next(time.perf_counter() for event in second if event.tokens)
        list(second)
        running.cancel()
        reader.join()
    finally:
        engine.close()
    during = [b - a for a, b in zip(arrivals, arrivals[1:]) if b >= sent and a <= first_token]
    before = [b - a for a, b in zip(arrivals, arrivals[1:]) if b < sent]
    return {"step": step, "max_gap_s": max(during, default=0.0),
            "median_gap_s": statistics.median(before), "ttft_s": first_token - sent}


def run(config, steps=(128, 256, 512, 1024, 2048), prompt_tokens: int = 2048) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    from rag.generate import load_generator

    generator = load_generator(config)
    rows = [measure(generator, step, prompt_tokens) for step in steps]
    table = Table(title=f"a {prompt_tokens}-token prompt arrives while an answer decodes",
                  show_edge=False)
    for column in ("prefill step", "longest gap (s)", "usual gap (s)", "new prompt TTFT (s)"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["step"]), f"{r['max_gap_s']:.2f}", f"{r['median_gap_s']:.3f}",
                      f"{r['ttft_s']:.1f}")
    Console().print(table)
    return rows
