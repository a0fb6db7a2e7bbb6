"""Model resolution: local folders, and the offline fallback when the hub cannot be reached."""

import socket
import time

import pytest

from rag import models
from rag.config import load_config


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again once the socket is released


@pytest.fixture
def offline_hub(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    models.hub_reachable.cache_clear()
    yield
    models.hub_reachable.cache_clear()


def test_unreachable_hub_falls_back_to_the_pack_quickly(offline_hub, pack_paths, capsys):
    from conftest import pack_cache

    config = load_config({"cache_dir": str(pack_cache()),
                          "generator": "some-org/model-that-is-not-cached"}, env={})
    start = time.monotonic()
    resolved = models.resolve(config.generator, "generator", config)
    elapsed = time.monotonic() - start
    assert resolved.source == "pack"
    assert resolved.path == str(pack_paths.generator)
    assert elapsed < 5
    models.announce(resolved)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "offline generator" in err


def test_local_folder_is_used_as_is(tmp_path, offline_hub):
    config = load_config({"embedder": str(tmp_path)}, env={})
    resolved = models.resolve(config.embedder, "embedder", config)
    assert (resolved.source, resolved.path) == ("local", str(tmp_path))


def test_hub_reachability_probe_has_a_bounded_timeout():
    # A server that accepts connections and never answers: the probe must give up.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        start = time.monotonic()
        assert models.hub_reachable(f"http://127.0.0.1:{server.getsockname()[1]}", 1.0) is False
        assert time.monotonic() - start < 3
