"""The `rag` command: subcommands are imported only when used, so `rag --help` is instant."""

from __future__ import annotations

import importlib

import click

# name -> (module, attribute, one-line help)
COMMANDS = {
    "models": ("rag.cli.models", "models",
               "Show configured and local models; pull the offline pack."),
    "ingest": ("rag.cli.ingest", "ingest", "Ingest files and folders into the store."),
    "ask": ("rag.cli.ask", "ask", "Answer a question from the stored documents, with citations."),
    "search": ("rag.cli.ask", "search", "Show the passages retrieved for a query."),
    "threads": ("rag.cli.threads", "threads", "List conversations; show or delete one."),
    "eval": ("rag.cli.eval", "eval_command", "Measure retrieval (and answers) on a question set."),
    "serve": ("rag.cli.serve", "serve", "Run the web page and JSON API."),
    "mcp": ("rag.cli.mcp", "mcp_command", "Serve search and cited answers to MCP clients (stdio)."),
    "bench": ("rag.cli.bench", "bench", "Benchmarks that print figures side by side."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RuntimeError as exc:  # a store that cannot be opened: one line, not a trace
            from rag.store import StoreError

            if isinstance(exc, StoreError):
                raise click.ClickException(str(exc)) from exc
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][2]) for name in COMMANDS])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rag-local", prog_name="rag")
def main() -> None:
    """Private, cited question answering over your own documents (Built with Llama)."""
