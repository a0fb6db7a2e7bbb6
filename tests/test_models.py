"""Model resolution: local folders, and the offline fallback when the hub cannot be reached."""

import socket
import threading
import urllib.request

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


@pytest.fixture
def probes(monkeypatch):
    """Every hub probe rag.models makes: (url, timeout); the real request still goes out."""
    seen = []
    real = urllib.request.urlopen

    def spy(request, *args, **kwargs):
        timeout = kwargs.get("timeout", args[1] if len(args) > 1 else None)
        seen.append((getattr(request, "full_url", request), timeout))
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", spy)
    return seen


def test_unreachable_hub_falls_back_to_the_pack_after_one_bounded_probe(
        offline_hub, probes, pack_paths, capsys):
    from conftest import pack_cache

    config = load_config({"cache_dir": str(pack_cache()),
                          "generator": "some-org/model-that-is-not-cached",
                          "embedder": "some-org/embedder-that-is-not-cached"}, env={})
    generator = models.resolve(config.generator, "generator", config)
    embedder = models.resolve(config.embedder, "embedder", config)
    assert (generator.source, generator.path) == ("pack", str(pack_paths.generator))
    assert (embedder.source, embedder.path) == ("pack", str(pack_paths.embedder))
    # One probe for both models, with the configured timeout: no retries, no unbounded wait.
    assert probes == [(models.hub_endpoint() + "/api/models?limit=1", config.hub_timeout)]
    models.announce(generator)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "offline generator" in err


def test_local_folder_is_used_as_is(tmp_path, offline_hub, probes):
    config = load_config({"embedder": str(tmp_path)}, env={})
    resolved = models.resolve(config.embedder, "embedder", config)
    assert (resolved.source, resolved.path) == ("local", str(tmp_path))
    assert probes == []  # a local folder needs no hub


def test_hub_offline_setting_skips_the_probe(probes, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models.hub_reachable.cache_clear()
    try:
        assert models.hub_reachable(f"http://127.0.0.1:{closed_port()}", 1.0) is False
    finally:
        models.hub_reachable.cache_clear()
    assert probes == []


def test_hub_reachability_probe_has_a_bounded_timeout(probes, monkeypatch):
    # A server that accepts connections and never answers: the probe must give up on its own,
    # pass its timeout down to the socket, and close the connection it opened.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    models.hub_reachable.cache_clear()
    socket_timeouts = []
    real_create_connection = socket.create_connection

    def create_connection(address, *args, **kwargs):
        socket_timeouts.append(kwargs["timeout"] if "timeout" in kwargs else args[0])
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    result = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        probe = threading.Thread(target=lambda: result.append(models.hub_reachable(endpoint, 1.0)),
                                 daemon=True)
        probe.start()
        # Not a speed check: a hang guard, 60x the timeout, so a regression fails, not stalls.
        probe.join(60)
        models.hub_reachable.cache_clear()
        assert not probe.is_alive(), "hub_reachable() did not give up"
        assert result == [False]
        assert probes == [(endpoint + "/api/models?limit=1", 1.0)]
        assert socket_timeouts == [1.0]
        client, _ = server.accept()  # the probe's connection, queued in the backlog
        with client:
            client.settimeout(60)
            received = b""
            while chunk := client.recv(4096):  # until end of file: the prober closed its end
                received += chunk
        assert received.startswith(b"HEAD /api/models?limit=1 HTTP/1.1\r\n")
