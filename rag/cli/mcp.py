"""`rag mcp`: the store as an MCP server over stdio (rag/mcp_server.py), for MCP clients
that start it as a subprocess. stdout carries the protocol: everything else (logs,
notices) goes to stderr."""

from __future__ import annotations

import contextlib
import logging
import sys

import click

from rag.cli.common import config_options


@click.command("mcp")
@config_options
def mcp_command(config) -> None:
    """Serve search, ask and the documents to an MCP client over stdio.

    The client starts this command and talks JSON-RPC on its stdin and stdout; logs go
    to stderr. The generator loads on the first `ask`.
    """
    from rag import ModelError, StoreError, open_runtime
    from rag.mcp_server import build_server

    # Before the SDK's own set-up, which would log to stderr too but at INFO.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="rag mcp: %(levelname)s %(name)s: %(message)s")
    # Loading the models may print notices (the offline pack, hub fallbacks): never on
    # stdout, the protocol's stream. While serving, the SDK itself points fd 1 at stderr.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            runtime = open_runtime(config)
        except (ModelError, StoreError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    count = len(runtime.store.documents.list())
    click.echo(f"rag mcp: {count} documents in {config.db}; serving MCP over stdio", err=True)
    try:
        build_server(lambda: runtime).run("stdio")
    finally:
        runtime.close()
