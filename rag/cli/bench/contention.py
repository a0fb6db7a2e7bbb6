"""`rag bench contention DIR`: does ingestion slow answering down?

Measures the decode rate of one answer (tokens/s after its first token) three
ways, side by side: with nothing else running; while the same process ingests
the files of DIR one by one, the way the web app ingests uploads (its job
thread calling `ingest.ingest_file`); and while a separate `rag ingest DIR`
process runs. In the process, ingestion yields to answering (rag/owner.py); a
separate process cannot be asked to, so that row shows what the operating
system's scheduler alone gives.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STORY = "Write a long story about a lighthouse keeper who collects maps, with many details."


def decode_rate(runtime, max_tokens: int) -> float:
    """One greedy generation of `max_tokens` tokens on the runtime's engine; tokens/s."""
    from rag.streams import GenRequest

    engine = runtime.engine()
    messages = [{"role": "user", "content": STORY}]
    text = engine.tokenizer.apply_chat_template(messages, tokenize=False,
                                                add_generation_prompt=True)
    tokens = list(engine.tokenizer.encode(text, add_special_tokens=False))
    last = list(engine.submit(GenRequest(tokens, max_tokens, 0.0)))[-1]
    return last.generation_tps


def rate_while(runtime, max_tokens: int, start_work, is_running) -> tuple[float, float]:
    """(decode rate, seconds the work ran before the answer started) while work runs."""
    began = time.perf_counter()
    start_work()
    time.sleep(5.0)  # let ingestion reach its steady state (parsing, embedding)
    if not is_running():
        raise RuntimeError("the ingestion finished before the answer started: use a bigger DIR")
    return decode_rate(runtime, max_tokens), time.perf_counter() - began


def run(folder: Path, config, *, max_tokens: int = 128, repeats: int = 2) -> dict:
    from rich.console import Console
    from rich.table import Table

    import rag
    from ingest import discover, ingest_file
    from rag.config import replace

    files = discover([folder])
    with tempfile.TemporaryDirectory() as tmp:
        runtime = rag.open_runtime(replace(config, db=Path(tmp) / "in-process"))
        decode_rate(runtime, 8)  # load and warm up
        idle = max(decode_rate(runtime, max_tokens) for _ in range(repeats))

        done = threading.Event()

        def ingest_uploads() -> None:
            for path in files:
                if done.is_set():
                    return
                ingest_file(path, runtime)

        worker = threading.Thread(target=ingest_uploads, daemon=True)
        in_process, _ = rate_while(runtime, max_tokens, worker.start, worker.is_alive)
        done.set()
        worker.join()
        yielded = runtime.embedder.owner.yielded_s

        command = [sys.executable, "-m", "rag.cli", "ingest", str(folder), "-q", "--db",
                   str(Path(tmp) / "other-process")]
        if config.models == "pack":
            command.append("--offline")
        procs: list[subprocess.Popen] = []
        other, _ = rate_while(runtime, max_tokens,
                              lambda: procs.append(subprocess.Popen(
                                  command, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)),
                              lambda: procs[0].poll() is None)
        procs[0].kill()
        procs[0].wait()
        runtime.close()

    table = Table(title=f"decode rate of one answer ({max_tokens} tokens)", show_edge=False)
    for column in ("while", "tokens/s", "vs idle"):
        table.add_column(column, justify="right" if column != "while" else "left")
    rows = [("nothing else runs", idle), ("this process ingests (uploads)", in_process),
            ("a separate `rag ingest` runs", other)]
    for label, rate in rows:
        table.add_row(label, f"{rate:.1f}", f"{rate / idle:.2f}x" if idle else "-")
    Console().print(table)
    print(f"ingestion in this process yielded {yielded:.1f} s to the answer")
    return {"idle": idle, "in_process": in_process, "other_process": other,
            "yielded_s": yielded}
