"""The loaded resources a process shares: configuration, embedder, store, generation engine.

Built once (by the CLI command or the web app's lifespan) and passed down
explicitly. The engine (and its model) loads on first use, so ingestion-only
commands never pay for it. `worker` is a small fixed pool for the blocking
steps of an answer (retrieval, citation checks) when the caller is an event
loop: the web app never starts a thread per request.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rag.config import Config
from rag.embed import Embedder, load_embedder
from rag.store import PieceSearch, Store


@dataclass
class Runtime:
    config: Config
    embedder: Embedder
    store: Store
    _engine: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    worker: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=2, thread_name_prefix="rag-work"))

    def engine(self):
        """The generation engine (rag/engine.py, or rag/remote.py with generator_url)."""
        with self._lock:
            if self._engine is None:
                self._engine = open_engine(self.config)
                self.embedder.owner.yield_to = self._engine.busy  # ingestion yields
            return self._engine

    def loaded_engine(self):
        """The engine if a question has loaded it already, else None (never loads it)."""
        return self._engine

    def generator(self):
        """The in-process model (rag.generate.Generator) behind the local engine."""
        engine = self.engine()
        if not hasattr(engine, "generator"):
            raise RuntimeError("the generator is remote (generator_url): no local model")
        return engine.generator

    def close(self) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
        self.worker.shutdown(wait=False, cancel_futures=True)


def open_engine(config: Config):
    if config.generator_url:
        from rag.remote import open_remote

        return open_remote(config)
    from rag.engine import LocalEngine
    from rag.generate import load_generator

    return LocalEngine(load_generator(config), max_running=config.max_running,
                       max_waiting=config.max_waiting, prefill_step=config.prefill_step,
                       time_limit_s=config.answer_time_limit)


def piece_search(config: Config) -> PieceSearch:
    return PieceSearch(table_chunks=config.piece_table_chunks, nprobes=config.piece_nprobes,
                       refine=config.piece_refine)


def open_runtime(config: Config) -> Runtime:
    embedder = load_embedder(config)
    store = Store(config.db, embedder.dim, embedder.name, config.storage_options,
                  pieces=piece_search(config))
    return Runtime(config=config, embedder=embedder, store=store)
