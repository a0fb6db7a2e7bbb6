"""The loaded resources a process shares: configuration, embedder, store, generator.

Built once (by the CLI command or the web app's lifespan) and passed down
explicitly. The generator loads on first use, so ingestion-only commands never
pay for it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from rag.config import Config
from rag.embed import Embedder, load_embedder
from rag.store import Store


@dataclass
class Runtime:
    config: Config
    embedder: Embedder
    store: Store
    _generator: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def generator(self):
        """The shared generator (rag.generate.Generator), loaded once."""
        with self._lock:
            if self._generator is None:
                from rag.generate import load_generator

                self._generator = load_generator(self.config)
            return self._generator


def open_runtime(config: Config) -> Runtime:
    embedder = load_embedder(config)
    store = Store(config.db, embedder.dim, embedder.name)
    return Runtime(config=config, embedder=embedder, store=store)
