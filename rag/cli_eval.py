"""`rag eval`: ingest a document folder, run retrieval for a question set, report and plot."""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import click

from rag.cli_common import config_options
from rag.config import Config, replace


@click.command("eval")
@click.option("--docs", "docs_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of documents to ingest (skip to reuse the documents in --db).")
@click.option("--questions", "questions_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Questions, one JSON object a line (see ../shared/eval/README.md).")
@click.option("--k", default=10, show_default=True, help="Passages retrieved per question.")
@click.option("--answers", is_flag=True, help="Also generate answers and score their citations.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON report here (and the hit@k plot next to it).")
@click.option("--limit", type=int, help="Only the first N questions.")
@config_options
def eval_command(docs_dir: Path | None, questions_file: Path, k: int, answers: bool,
                 out: Path | None, limit: int | None, config: Config) -> None:
    """Measure retrieval (and answers) on a question set with gold evidence.

    Without --db the documents go into a temporary store that is deleted afterwards.
    """
    from rag import evaluate

    questions = evaluate.load_questions(questions_file, limit)
    with tempfile.TemporaryDirectory(prefix="rag-eval-") as tmp:
        explicit_db = click.get_current_context().params.get("db")
        if not explicit_db:
            config = replace(config, db=Path(tmp) / "db")
        report = run(config, docs_dir, questions, k=k, answers=answers)
    report["questions_file"] = str(questions_file)
    _print(report)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        evaluate.plot_hits(report, out.with_suffix(".png"))
        click.echo(f"wrote {out} and {out.with_suffix('.png')}")


def run(config: Config, docs_dir: Path | None, questions, *, k: int, answers: bool) -> dict:
    from rag import evaluate, retrieve
    from rag.runtime import open_runtime

    runtime = open_runtime(config)
    ingest_s = 0.0
    if docs_dir is not None:
        start = time.perf_counter()
        ingest_folder(docs_dir, runtime)
        ingest_s = time.perf_counter() - start
    runtime.embedder.embed_batch(["warm up"], query=True)  # first call compiles kernels
    report = evaluate.evaluate_retrieval(
        questions, lambda q, n: retrieve.search(q, runtime, k=n), k=k)
    report["ingest_seconds"] = ingest_s
    report["documents"] = len(runtime.store.list_documents())
    report["passages"] = runtime.store.count_chunks()
    report["embedder"] = runtime.embedder.name
    if answers:
        from rag.answer import answer

        report["answers"] = evaluate.evaluate_answers(
            questions, lambda q: answer(q, runtime, k=config.k))
    return report


def ingest_folder(docs_dir: Path, runtime) -> None:
    try:
        from ingest.pipeline import ingest_paths
    except ImportError:  # FALLBACK until ingest.loaders / ingest.chunking land
        fallback_ingest(docs_dir, runtime)
        return
    report = ingest_paths([docs_dir], runtime, recursive=True)
    failed = [f for f in report.files if f.status == "failed"]
    if failed:
        click.echo(f"{len(failed)} files failed to ingest, e.g. {failed[0].path}: "
                   f"{failed[0].reason}", err=True)


# --- FALLBACK ingestion (plain-text files only) -----------------------------------------
# Used only while ingest.pipeline cannot be imported; delete once it always can.

_SENTENCE = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])|\n")


def fallback_ingest(docs_dir: Path, runtime) -> None:
    import hashlib

    from rag.types import Document, Page

    config, embedder = runtime.config, runtime.embedder
    items = []
    for path in sorted(p for p in docs_dir.rglob("*") if p.is_file() and p.suffix in
                       (".txt", ".md")):
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig", errors="replace")
        doc = Document(path=str(path), title=path.stem, mime="text/plain",
                       sha256=hashlib.sha256(raw).hexdigest(), pages=[Page(1, text)])
        chunks = fallback_chunks(doc, embedder, config.chunk_tokens, config.chunk_overlap)
        items.append((doc, chunks, embedder.embed_batch([c.text for c in chunks]), path))
    runtime.store.add_documents(items)
    runtime.store.refresh_indexes()


def fallback_chunks(doc, embedder, max_tokens: int, overlap: int) -> list:
    """Sentences packed into chunks of at most `max_tokens`, overlapping inside paragraphs."""
    from rag.types import Chunk

    text = doc.pages[0].text
    units = []  # (start, end, tokens, paragraph)
    for para, pm in enumerate(re.finditer(r"[^\n]+(?:\n(?!\s*\n)[^\n]+)*", text)):
        pos = pm.start()
        for piece in _SENTENCE.split(pm.group()) + [""]:
            if not piece:
                continue
            start = text.index(piece, pos)
            pos = start + len(piece)
            units.extend((s, e, n, para) for s, e, n in _split_long(text, start, pos, embedder,
                                                                     max_tokens))
    chunks, i = [], 0
    while i < len(units):
        j, size = i, 0
        while j < len(units) and (j == i or size + units[j][2] <= max_tokens):
            size += units[j][2]
            j += 1
        chunks.append(Chunk(doc.id, len(chunks), text[units[i][0]:units[j - 1][1]], 1, 1,
                            units[i][0], units[j - 1][1]))
        if j >= len(units):
            break
        back, carried = j, 0  # overlap only within the paragraph the next chunk starts in
        while (back - 1 > i and units[back - 1][3] == units[j][3]
               and carried + units[back - 1][2] <= overlap):
            back -= 1
            carried += units[back][2]
        i = back
    return chunks


def _split_long(text: str, start: int, end: int, embedder, max_tokens: int):
    enc = embedder.tokenizer.encode(text[start:end], add_special_tokens=False)
    n = len(enc.ids)
    if n <= max_tokens:
        return [(start, end, n)]
    out = []
    for a in range(0, n, max_tokens):
        b = min(n, a + max_tokens)
        s = start + enc.offsets[a][0] if a else start
        e = start + enc.offsets[b][0] if b < n else end
        if e > s:
            out.append((s, e, b - a))
    return out


def _print(report: dict) -> None:
    def line(name: str, r: dict) -> str:
        return (f"{name:>6}  n={r['n']:<5} hit@1={r['hit@1']:.3f} hit@5={r['hit@5']:.3f} "
                f"hit@10={r['hit@10']:.3f} mrr@10={r['mrr@10']:.3f}")

    click.echo(line("all", report))
    for lang, r in report.get("by_lang", {}).items():
        if len(report["by_lang"]) > 1:
            click.echo(line(lang, r))
    q = report["query_ms"]
    click.echo(f"documents={report['documents']} passages={report['passages']} "
               f"ingest={report['ingest_seconds']:.1f}s query={report['query_seconds']:.1f}s "
               f"({q['mean']:.1f} ms mean, {q['p95']:.1f} ms p95)")
    if "answers" in report:
        a = report["answers"]
        click.echo(f"answers: refused={a['refusal_rate']:.2f} valid markers="
                   f"{a['valid_marker_share']:.2f} supported={a['supported_share']:.2f} "
                   f"tokens/s={a['tokens_per_s']}")
