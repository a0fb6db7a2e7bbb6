"""`rag eval`: ingest a document folder, run retrieval for a question set, report and plot."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click

from rag import Config, replace
from rag.cli.common import config_options


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
@click.option("--opaque-names", is_flag=True,
              help="Ingest the documents under opaque file names (doc-0001.pdf, ...), to "
                   "measure retrieval that cannot lean on the names.")
@config_options
def eval_command(docs_dir: Path | None, questions_file: Path, k: int, answers: bool,
                 out: Path | None, limit: int | None, opaque_names: bool, config: Config) -> None:
    """Measure retrieval (and answers) on a question set with gold evidence.

    Without --db the documents go into a temporary store that is deleted afterwards.
    """
    from rag import evaluate

    questions = evaluate.load_questions(questions_file, limit)
    with tempfile.TemporaryDirectory(prefix="rag-eval-") as tmp:
        explicit_db = click.get_current_context().params.get("db")
        if not explicit_db:
            config = replace(config, db=Path(tmp) / "db")
        names: dict[str, str] = {}
        if opaque_names:
            if docs_dir is None:
                raise click.UsageError("--opaque-names needs --docs")
            docs_dir, names = opaque_copy(docs_dir, Path(tmp) / "docs")
        report = run(config, docs_dir, questions, k=k, answers=answers,
                     name=lambda path: names.get(Path(path).name, Path(path).name))
        report["opaque_names"] = opaque_names
    report["questions_file"] = str(questions_file)
    _print(report)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        evaluate.plot_hits(report, out.with_suffix(".png"))
        click.echo(f"wrote {out} and {out.with_suffix('.png')}")


def opaque_copy(docs_dir: Path, into: Path) -> tuple[Path, dict[str, str]]:
    """Copies of the folder's files named doc-0001.ext, ... in an order unrelated to their
    names (by content hash); opaque name -> original name."""
    import hashlib
    import shutil

    files = [p for p in docs_dir.rglob("*") if p.is_file()]
    files.sort(key=lambda p: hashlib.sha256(p.read_bytes()).hexdigest())
    into.mkdir(parents=True)
    names = {}
    for i, path in enumerate(files, 1):
        opaque = f"doc-{i:04d}{path.suffix.lower()}"
        shutil.copyfile(path, into / opaque)
        names[opaque] = path.name
    return into, names


def run(config: Config, docs_dir: Path | None, questions, *, k: int, answers: bool,
        name=None) -> dict:
    from rag import evaluate, open_runtime, search

    runtime = open_runtime(config)
    ingest_s = 0.0
    if docs_dir is not None:
        start = time.perf_counter()
        ingest_folder(docs_dir, runtime)
        ingest_s = time.perf_counter() - start
    runtime.embedder.embed_batch(["warm up"], query=True)  # first call compiles kernels
    report = evaluate.evaluate_retrieval(
        questions, lambda q, n, history: search(q, runtime, k=n, history=history), k=k,
        turn_k=config.k, name=name or evaluate.file_name)
    report["ingest_seconds"] = ingest_s
    report["documents"] = len(runtime.store.documents.list())
    report["passages"] = runtime.store.chunks.count()
    report["embedder"] = runtime.embedder.name
    if answers:
        from rag import answer

        report["answers"] = evaluate.evaluate_answers(
            questions, lambda q: answer(q, runtime, k=config.k))
    return report


def ingest_folder(docs_dir: Path, runtime) -> None:
    from ingest import ingest_paths

    report = ingest_paths([docs_dir], runtime, recursive=True)
    failed = [f for f in report.files if f.status == "failed"]
    if failed:
        click.echo(f"{len(failed)} files failed to ingest, e.g. {failed[0].path}: "
                   f"{failed[0].reason}", err=True)


def _print(report: dict) -> None:
    from rag import evaluate

    def line(name: str, r: dict) -> str:
        return (f"{name:>6}  n={r['n']:<5} hit@1={r['hit@1']:.3f} hit@5={r['hit@5']:.3f} "
                f"hit@10={r['hit@10']:.3f} mrr@10={r['mrr@10']:.3f} "
                f"doc_hit@1={r['doc_hit@1']:.3f} doc_hit@5={r['doc_hit@5']:.3f}")

    click.echo(line("all", report))
    for lang, r in report.get("by_lang", {}).items():
        if len(report["by_lang"]) > 1:
            click.echo(line(lang, r))
    for kind, r in report.get("by_kind", {}).items():
        scores = [" ".join(f"hit@{c}={r[way][f'hit@{c}']:.3f}" for c in evaluate.KS)
                  for way in ("history", "alone")]
        click.echo(f"{kind:>6}  n={r['history']['n']:<5} with history: {scores[0]} | "
                   f"alone: {scores[1]}")
    q = report["query_ms"]
    click.echo(f"documents={report['documents']} passages={report['passages']} "
               f"ingest={report['ingest_seconds']:.1f}s query={report['query_seconds']:.1f}s "
               f"({q['mean']:.1f} ms mean, {q['p95']:.1f} ms p95)")
    if "answers" in report:
        a = report["answers"]
        click.echo(f"answers: refused={a['refusal_rate']:.2f} markers={a['markers']} "
                   f"valid={a['valid_marker_share']} citations={a['citations']} "
                   f"supported={a['supported_share']} inferred={a['inferred_share']} "
                   f"tokens/s={a['tokens_per_s']}")
