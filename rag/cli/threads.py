"""`rag threads`: the conversations in the store (`rag ask --thread ID` asks within one)."""

from __future__ import annotations

import datetime as dt
import json

import click

from rag.cli.common import config_options


@click.command()
@click.argument("thread_id", required=False)
@click.option("--delete", is_flag=True, help="Delete the thread THREAD_ID and its turns.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@config_options
def threads(thread_id, delete, as_json, config):
    """List conversations, most recent first; with THREAD_ID, show (or --delete) one."""
    from rag.store.threads import open_threads

    store = open_threads(config.db, config.storage_options)
    if thread_id is None:
        if delete:
            raise click.UsageError("--delete needs a THREAD_ID")
        _list(store, as_json)
        return
    record = store.get(thread_id)
    if record is None:
        raise click.ClickException(f"{thread_id}: no such thread (rag threads lists them)")
    if delete:
        store.delete(thread_id)
        click.echo(f"deleted {thread_id}")
        return
    turns = store.turns_of(thread_id)
    if as_json:
        click.echo(json.dumps(dict(record.to_json(), turns=turns), indent=2, ensure_ascii=False))
        return
    click.echo(record.title or "(untitled)")
    for turn in turns:
        click.echo(f"\n> {turn['question']}\n{turn['answer'].get('answer', '')}")


def _list(store, as_json: bool) -> None:
    listed = store.list()
    if as_json:
        click.echo(json.dumps({"threads": [t.to_json() for t in listed]}, indent=2,
                              ensure_ascii=False))
        return
    if not listed:
        click.echo("no threads yet: rag ask --thread new \"...\" starts one")
    for t in listed:
        when = dt.datetime.fromtimestamp(t.updated_at).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{t.id}  {when}  {t.title or '(untitled)'}")
