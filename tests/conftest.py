"""Shared fixtures: the real offline models (fetched once per cache) and stores on disk."""

from __future__ import annotations

import os
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

import pytest
from platformdirs import user_cache_dir

# The user's own settings never reach the tests (nor the `rag` processes they start, which
# inherit this environment): no config file, no RAG_* variables but the two below, no hub.
# This runs before `import rag` below and before any test module loads a configuration.
KEPT_RAG_VARIABLES = ("RAG_CACHE_DIR", "RAG_FULL_EVAL")  # the model pack cache; full eval runs
# A path that does not exist: load_config() then reads no file at all.
NO_CONFIG = Path(tempfile.gettempdir()) / "rag-tests-no-such-dir" / "config.toml"
# Nothing listens on the discard port; rag.models.hub_reachable() says False without probing
# anyway while HF_HUB_OFFLINE is set (tests/test_models.py lifts it for its own probes).
UNREACHABLE_HUB = "http://127.0.0.1:9"


def isolate_environment(env: MutableMapping[str, str]) -> None:
    for name in [n for n in env if n.startswith("RAG_") and n not in KEPT_RAG_VARIABLES]:
        del env[name]
    env["RAG_CONFIG"] = str(NO_CONFIG)
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_ENDPOINT"] = UNREACHABLE_HUB


isolate_environment(os.environ)

import rag  # noqa: E402, F401 - loads OpenBLAS before anything imports mlx

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT / "corpora"
EVAL = ROOT.parent / "shared" / "eval"


def pack_cache() -> Path:
    explicit = os.environ.get("RAG_CACHE_DIR")
    return Path(explicit) if explicit else Path(user_cache_dir("rag")) / "models"


@pytest.fixture(scope="session")
def pack_paths():
    from rag import pack

    return pack.pull(pack_cache(), quiet=True)


@pytest.fixture(scope="session")
def pack_config(pack_paths, tmp_path_factory):
    """Offline configuration: pack models, a fresh store folder."""
    from rag.config import load_config

    db = tmp_path_factory.mktemp("db")
    return load_config({"models": "pack", "cache_dir": str(pack_cache()), "db": str(db),
                        "generator": str(pack_paths.generator),
                        "embedder": str(pack_paths.embedder)}, env={})


@pytest.fixture(scope="session")
def embedder(pack_config):
    from rag.embed import load_embedder

    return load_embedder(pack_config)


@pytest.fixture
def runtime(pack_config, embedder, tmp_path):
    """A runtime on an empty store in this test's temporary folder."""
    from rag.config import replace
    from rag.runtime import Runtime
    from rag.store import Store

    config = replace(pack_config, db=tmp_path / "db")
    return Runtime(config=config, embedder=embedder,
                   store=Store(config.db, embedder.dim, embedder.name))


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    if not EVAL.is_dir():
        pytest.skip("../shared/eval is absent")
    return EVAL
