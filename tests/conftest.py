"""Shared fixtures: the real offline models (fetched once per cache) and stores on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from platformdirs import user_cache_dir

import rag  # noqa: F401 - loads OpenBLAS before anything imports mlx

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
