"""`rag serve`: the web page and JSON API on one port (loopback unless an API key is set)."""

from __future__ import annotations

import click

from rag import replace
from rag.cli.common import config_options

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@click.command("serve")
@click.option("--host", default=None, help="Interface to bind (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from config: 8000).")
@click.option("--api-key", default=None, help="Require Authorization: Bearer KEY on the API.")
@click.option("--max-upload-mb", type=int, default=None, help="Largest upload, in MB.")
@config_options
def serve(host, port, api_key, max_upload_mb, config) -> None:
    """Run the web page and JSON API."""
    changes = {k: v for k, v in {"host": host, "port": port, "api_key": api_key,
                                 "max_upload_mb": max_upload_mb}.items() if v is not None}
    config = replace(config, **changes)
    if config.host not in LOOPBACK and not config.api_key:
        raise click.UsageError(f"refusing to bind {config.host} without --api-key"
                               " (only loopback hosts may run without a key)")
    if config.max_upload_mb < 1:
        raise click.UsageError("--max-upload-mb must be at least 1")
    import uvicorn

    from web.app import create_app

    # Without a key, answer only to loopback names: a page elsewhere that rebinds its
    # DNS name to 127.0.0.1 must not reach the documents.
    hosts = None if config.api_key else sorted(LOOPBACK)
    app = create_app(config, allowed_hosts=hosts)
    shown = f"[{config.host}]" if ":" in config.host else config.host
    click.echo(f"Serving on http://{shown}:{config.port}")
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
