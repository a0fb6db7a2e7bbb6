"""`rag ask` (streamed, cited answer) and `rag search` (the passages retrieval finds)."""

from __future__ import annotations

import json
import sys

import click

from rag import replace
from rag.cli.common import config_options


def _errors():
    """The library's named exceptions, which the CLI turns into click errors."""
    from rag import Busy, EngineError, ModelError, StoreError

    return (ModelError, StoreError, EngineError, Busy, ValueError)


def _runtime(config):
    from rag import open_runtime

    try:
        return open_runtime(config)
    except _errors() as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.argument("question")
@click.option("--doc", "doc_ids", multiple=True, metavar="ID",
              help="Only search these documents (repeatable).")
@click.option("--k", type=click.IntRange(1, 50), help="Passages to retrieve.")
@click.option("--max-tokens", type=click.IntRange(1), help="Longest answer, in tokens.")
@click.option("--temperature", type=click.FloatRange(0.0), help="0 = greedy.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--thread", "thread_id", metavar="ID|new",
              help="Ask within a conversation (rag threads lists them): its earlier turns"
                   " guide the search and the answer, which becomes its next turn; 'new'"
                   " starts one and prints its id.")
@config_options
def ask(question, doc_ids, k, max_tokens, temperature, as_json, thread_id, config):
    """Answer QUESTION from the stored documents, citing sources as [n]."""
    from rag import DoneEvent, TokenEvent, stream_answer

    runtime = _runtime(config)
    threads, history = None, []
    if thread_id:
        threads, thread_id, history = _open_thread(runtime, thread_id)
    done = None
    try:
        for event in stream_answer(question, runtime, k=k, doc_ids=doc_ids,
                                   max_tokens=max_tokens, temperature=temperature,
                                   history=history):
            if isinstance(event, TokenEvent) and not as_json:
                click.echo(event.text, nl=False)
            elif isinstance(event, DoneEvent):
                done = event.answer
    except _errors() as exc:
        raise click.ClickException(str(exc)) from exc
    if threads is not None:
        threads.add_turn(thread_id, question, done.to_json())
    if as_json:
        out = done.to_json()
        if threads is not None:
            out["thread"] = thread_id
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    click.echo()
    _print_sources(done)


def _open_thread(runtime, thread_id: str):
    """(threads, id, history) for --thread; 'new' creates one and says its id on stderr."""
    from rag.store.threads import Threads

    threads = Threads(runtime.store.db)
    if thread_id == "new":
        thread_id = threads.create().id
        click.echo(f"thread {thread_id}", err=True)
    elif threads.get(thread_id) is None:
        raise click.ClickException(f"--thread {thread_id}: no such thread (rag threads"
                                   " lists them)")
    return threads, thread_id, threads.history(thread_id)


def _print_sources(answer) -> None:
    from rich.console import Console
    from rich.markup import escape

    from rag import pages_label, source_title

    console = Console(highlight=False)
    _print_support(answer, console)
    if answer.citations:
        console.print("\n[bold]Citations[/bold]")
    for c in answer.citations:
        source = answer.sources[c.passage]
        mark = "[green]supported[/green]" if c.supported else "[red]not supported[/red]"
        how = " (inferred: the model gave no marker)" if c.inferred else ""
        console.print(f"[{c.marker}] {escape(source_title(source))}, {pages_label(source)}"
                      f" - {mark}{how} (score {c.score:.2f})")
        console.print(f"    claim: {escape(c.sentence)}", style="dim")
        console.print(f"    quote: \"{escape(c.quote)}\"")
    if answer.sources:
        console.print("\n[bold]Sources[/bold]")
    for i, p in enumerate(answer.sources, 1):
        console.print(f"[{i}] {escape(source_title(p))}, {pages_label(p)}  [dim]{p.doc_id[:12]}"
                      f"[/dim]")
    t = answer.timings
    if answer.generation_tokens:
        print(f"\n{answer.prompt_tokens} prompt tokens ({answer.cached_tokens} cached),"
              f" {answer.generation_tokens} generated at {answer.generation_tps:.1f} tok/s;"
              f" first token after {t.get('first_token_s', 0):.2f} s", file=sys.stderr)


def _print_support(answer, console) -> None:
    """Under the streamed answer: its unsupported sentences, then any notice."""
    from rich.markup import escape

    unsupported = [s for s in answer.sentences if s.supported is False]
    if unsupported:
        console.print("\n[bold yellow]Not supported by the sources[/bold yellow]")
    for s in unsupported:
        console.print(f"  {escape('[unsupported]')} {escape(s.text)}", style="yellow")
    if answer.notice:
        console.print(f"\n[yellow]notice:[/yellow] {escape(answer.notice)}")


@click.command()
@click.argument("query")
@click.option("--doc", "doc_ids", multiple=True, metavar="ID",
              help="Only search these documents (repeatable).")
@click.option("--k", type=click.IntRange(1, 200), help="Passages to show.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@config_options
def search(query, doc_ids, k, as_json, config):
    """Show the passages retrieved for QUERY, best first, with their scores."""
    import rag

    if k:
        config = replace(config, k=k)
    runtime = _runtime(config)
    try:
        passages = rag.search(query, runtime, k=config.k, doc_ids=list(doc_ids) or None)
    except _errors() as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({"query": query, "relevant": rag.is_relevant(passages),
                               "passages": [rag.source_json(i + 1, p)
                                            for i, p in enumerate(passages)]},
                              ensure_ascii=False, indent=2))
        return
    _print_passages(passages)


def _print_passages(passages) -> None:
    from rich.console import Console
    from rich.markup import escape

    from rag import pages_label, source_title

    console = Console(highlight=False)
    if not passages:
        console.print("no passages found")
    for i, p in enumerate(passages, 1):
        signals = " ".join(f"{k}={v:.3f}" for k, v in p.scores.items()
                           if isinstance(v, float))
        console.print(f"[bold][{i}] {escape(source_title(p))}, {pages_label(p)}[/bold]"
                      f"  [dim]{p.doc_id[:12]} {signals}[/dim]")
        console.print(escape(" ".join(p.text.split())[:400]))
        console.print()
