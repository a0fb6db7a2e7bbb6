"""The store on Azure Blob Storage (`--db az://container/prefix`): Azurite, Azure
Storage's own emulator (npm; `scripts/setup.sh --dev` installs it into .venv/azurite),
started here on a loopback port, holds the tables and the original files; the real
`rag` commands use it with the usual AZURE_STORAGE_* variables."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from rag.store.location import lance_options
from tests.conftest import CORPORA, ROOT
from tests.test_faults import HANG_GUARD, free_port
from tests.test_s3 import DIM, _doc, rag

AZURITE = ROOT / ".venv" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's one account and its published development key (not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def test_an_http_endpoint_allows_plain_http_for_s3_and_azure():
    assert lance_options("az://c/p", {"azure_storage_endpoint": "http://h:1/a"}, env={}) == \
        {"azure_storage_endpoint": "http://h:1/a", "allow_http": "true"}
    assert lance_options("az://c/p", {}, env={"AZURE_STORAGE_ENDPOINT": "http://h:1/a"}) == \
        {"allow_http": "true"}
    assert lance_options("s3://b/p", {"aws_endpoint": "http://h:1"}, env={})["allow_http"] \
        == "true"
    # https, an explicit choice, or another scheme: left as configured.
    assert lance_options("az://c/p", {}, env={"AZURE_STORAGE_ENDPOINT": "https://h/a"}) == {}
    assert lance_options("az://c/p", {"azure_allow_http": "false",
                                      "azure_endpoint": "http://h"}, env={}) == \
        {"azure_allow_http": "false", "azure_endpoint": "http://h"}
    assert lance_options("gs://b/p", {"endpoint": "http://h"}, env={}) == {"endpoint": "http://h"}


class Azure:
    """Azurite's blob service on a loopback port, with one container per test."""

    def __init__(self, port: int):
        self.endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"

    def env(self) -> dict[str, str]:
        """Account, key and endpoint as the usual Azure variables (http: allowed for it)."""
        return {"AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT, "AZURE_STORAGE_ACCOUNT_KEY": KEY,
                "AZURE_STORAGE_ENDPOINT": self.endpoint}

    def options(self) -> dict[str, str]:
        return {"account_name": ACCOUNT, "account_key": KEY,
                "azure_storage_endpoint": self.endpoint}

    def container(self, name: str) -> str:
        """A new container (Shared Key signed request); the store URI of a prefix in it."""
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
        headers = {"x-ms-date": date, "x-ms-version": "2021-08-06"}
        signed = ("PUT\n" + "\n" * 11 + "".join(f"{k}:{v}\n" for k, v in headers.items())
                  + f"/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container")
        digest = hmac.new(base64.b64decode(KEY), signed.encode(), hashlib.sha256).digest()
        headers["Authorization"] = f"SharedKey {ACCOUNT}:{base64.b64encode(digest).decode()}"
        request = urllib.request.Request(f"{self.endpoint}/{name}?restype=container",
                                         method="PUT", headers={**headers,
                                                                "Content-Length": "0"})
        urllib.request.urlopen(request, timeout=30).close()
        return f"az://{name}/store"


@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    if not AZURITE.exists():
        pytest.skip(f"Azurite is not installed ({AZURITE}): scripts/setup.sh --dev installs it")
    port = free_port()
    folder = tmp_path_factory.mktemp("azurite")
    log = open(folder / "azurite.log", "w")
    proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                             "--location", str(folder), "--skipApiVersionCheck", "--loose"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + HANG_GUARD
    while True:
        assert proc.poll() is None, "Azurite exited: " + (folder / "azurite.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "Azurite did not answer"
            time.sleep(0.2)
    yield Azure(port)
    proc.terminate()  # Azurite can wait on open connections: not its data, it is a test's
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    log.close()


@pytest.mark.slow
def test_tables_files_and_search_work_in_a_container(azure):
    import numpy as np

    from rag.store import Store

    uri = azure.container("basics")
    store = Store(uri, DIM, "test", azure.options())
    assert store.remote and store.originals.folder is None
    texts = ["Glaciers carve U-shaped valleys as they move downhill.",
             "The relief valve is serviced every nine hundred hours."]
    items = []
    for i, text in enumerate(texts):
        doc, chunks, _ = _doc(text)
        items.append((doc, chunks, [np.eye(DIM, dtype=np.float32)[i:i + 1]], text.encode()))
    records = store.add_documents(items)
    store.chunks.refresh_indexes()
    assert [r["doc_id"] for r in store.chunks.text_search("glaciers valleys", 2)] == \
        [records[0].id]
    assert store.chunks.vector_search(np.eye(DIM, dtype=np.float32)[1], 1)[0]["doc_id"] == \
        records[1].id
    assert store.original(records[1]) == texts[1].encode()
    again = Store(uri, DIM, "test", azure.options())  # another process's view
    assert again.documents.ids() == {r.id for r in records}
    assert store.delete_document(records[0].id)
    assert store.originals.read(records[0].file) is None
    done = store.maintain(keep_s=0, force=True)
    assert not [t.error for t in done.tables if t.error]
    assert store.documents.ids() == {records[1].id}


@pytest.mark.slow
def test_ingest_ask_and_search_with_an_az_db(azure, pack_config, embedder, tmp_path):
    import os

    from rag.store import Store

    uri = azure.container("cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env.update(azure.env(), RAG_MODELS="pack", RAG_CACHE_DIR=str(pack_config.cache_dir),
               RAG_EMBEDDER=pack_config.embedder, RAG_GENERATOR=pack_config.generator)
    docs = tmp_path / "docs"
    shutil.copytree(CORPORA, docs)
    rag(["ingest", str(docs), "-q", "--offline", "--db", uri], env)
    done = json.loads(rag(["ask", "When was the Aurora observatory completed?", "--json",
                           "--offline", "--db", uri], env).stdout)
    assert done["citations"] and any(c["supported"] for c in done["citations"]), done
    found = json.loads(rag(["search", "sourdough starter", "--json", "--offline",
                            "--db", uri], env).stdout)
    assert "sourdough" in found["passages"][0]["path"]
    store = Store(uri, embedder.dim, embedder.name, azure.options())
    pdf = next(r for r in store.documents.list() if r.path.endswith("aurora-observatory.pdf"))
    assert store.original(pdf) == (CORPORA / "aurora-observatory.pdf").read_bytes()
    assert not (ROOT / "az:").exists()
