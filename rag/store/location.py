"""Where a store lives and how LanceDB opens it: a local folder or an object-store URI.

A local store is a folder: its tables under `lance/`, original files under
`files/`, queued uploads under `uploads/`. An object-store store
(`s3://bucket/prefix`, `gs://...`, `az://...`) keeps its tables under
`<uri>/lance`, and its original files and queued uploads in two more tables of
the same database (`files`, `uploads`: rag/store/files.py), so every process
that can open the tables sees all of it and nothing lives on a replica's disk.

Credentials and endpoints: LanceDB (lance's object_store) reads the usual
environment variables itself (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL or AWS_ENDPOINT,
AWS_ALLOW_HTTP; GOOGLE_SERVICE_ACCOUNT, ...; AZURE_STORAGE_ACCOUNT_NAME,
AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_ENDPOINT, ...),
and takes the same settings as `storage_options` (`aws_access_key_id`,
`aws_endpoint`, `aws_region`, `allow_http`, ...), which override them. One
convenience: an S3 or Azure endpoint given as `http://...` (MinIO, Azurite)
allows plain HTTP (object_store refuses it otherwise), since naming an http
endpoint says so already.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from rag.config import is_object_store, store_location
from rag.store.maintenance import READ_CONSISTENCY_S

# Endpoint settings per scheme (storage_options keys, then environment variables).
_ENDPOINTS = {
    "s3": (("aws_endpoint", "aws_endpoint_url", "endpoint", "endpoint_url"),
           ("AWS_ENDPOINT_URL", "AWS_ENDPOINT")),
    "az": (("azure_storage_endpoint", "azure_endpoint", "endpoint"),
           ("AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT")),
}
_ALLOW_HTTP = {"s3": ("allow_http", "aws_allow_http", "AWS_ALLOW_HTTP"),
               "az": ("allow_http", "azure_allow_http", "AZURE_ALLOW_HTTP")}


def tables_uri(root: Path | str) -> str:
    """The LanceDB database of the store at `root`."""
    return f"{root}/lance" if is_object_store(root) else str(Path(root) / "lance")


def lance_options(root: Path | str, options: Mapping[str, str] | None = None,
                  env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`storage_options` for LanceDB: the configured ones, plus `allow_http` when the S3 or
    Azure endpoint (configured or from the environment) is a plain http:// URL."""
    env = os.environ if env is None else env
    out = {k.lower(): str(v) for k, v in (options or {}).items()}
    scheme = str(root).split("://", 1)[0].lower()
    scheme = {"s3a": "s3", "abfs": "az", "abfss": "az", "azure": "az"}.get(scheme, scheme)
    if scheme not in _ENDPOINTS:
        return out
    keys, variables = _ENDPOINTS[scheme]
    endpoint = next((out[k] for k in keys if k in out), "") or next(
        (env[v] for v in variables if env.get(v)), "")
    option, long_option, variable = _ALLOW_HTTP[scheme]
    told = option in out or long_option in out or variable in env
    if endpoint.lower().startswith("http://") and not told:
        out["allow_http"] = "true"
    return out


class StoreError(RuntimeError):
    """The store cannot be opened or does not match the embedder."""


def connect(root: Path | str, options: Mapping[str, str] | None = None):
    """The LanceDB connection of the store at `root` (a folder or an object-store URI).

    Its handles look for versions written by other processes (another replica, a `rag
    ingest` beside `rag serve`) at most READ_CONSISTENCY_S late, on an object store
    too (one listing request per look), so a replica sees another's writes within
    seconds, and never reads a version that maintenance elsewhere removed
    (maintenance.KEEP_S is far longer)."""
    import lancedb

    root = store_location(root)
    try:
        return lancedb.connect(tables_uri(root),
                               storage_options=lance_options(root, options) or None,
                               read_consistency_interval=timedelta(seconds=READ_CONSISTENCY_S))
    except (ValueError, OSError, RuntimeError) as exc:  # unreachable, refused, no bucket
        raise cannot_open(root, exc) from exc


def cannot_open(root: Path | str, exc: BaseException) -> StoreError:
    return StoreError(f"{root}: cannot open the store ({one_line(exc)})")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An object store's error in one line. lance nests the cause in a debug dump; say
    what the server answered (an S3 error code and message, an HTTP status, a refused
    connection) and where, else the first line."""
    text = str(exc)
    where = re.search(r"uri: Some\((https?://[^/)\s]+)", text)
    code = re.search(r"<Code>([^<]+)</Code>\s*<Message>([^<]*)</Message>", text)
    status = re.search(r"status: (\d{3})", text)
    refused = re.search(r'message: "([^"]+)"', text)
    if code:
        reason = f"{code.group(1)}: {code.group(2)}"
    elif status:
        reason = f"HTTP {status.group(1)}"
    elif refused:
        reason = refused.group(1)
    else:
        reason = " ".join(text.split("\n", 1)[0].split()) or type(exc).__name__
    if where and (code or status or refused):
        reason += f" from {where.group(1)}"
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"
