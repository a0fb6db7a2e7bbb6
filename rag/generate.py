"""The loaded generator: an mlx-lm model, its tokenizer and the system-prefix KV cache.

Only the engine's thread (rag/engine.py) runs the model; nothing here locks.

Every prompt starts with the same system message (rag/prompt.py puts it first).
Its key-value cache is computed once per distinct prefix and copied for each
question, so prefill only covers the sources and the question. Greedy output
is the same token for token as without the cache (tests/test_engine.py).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.config import Config
from rag.models import load_resolved

PREFIX_CACHE_ENTRIES = 4  # distinct system prompts kept (one in normal use)


@dataclass
class Generator:
    name: str
    path: str
    model: Any
    tokenizer: Any  # mlx_lm TokenizerWrapper
    _prefixes: OrderedDict = field(default_factory=OrderedDict)
    prefix_hits: int = 0

    @property
    def eos_ids(self) -> list[int]:
        return sorted(self.tokenizer.eos_token_ids)

    def prefix_cache(self, prefix: list[int]) -> list:
        """A private copy of the KV cache after `prefix` (computed on first use)."""
        key = tuple(prefix)
        cached = self._prefixes.get(key)
        if cached is None:
            cached = self._prefill(prefix)
            self._prefixes[key] = cached
            while len(self._prefixes) > PREFIX_CACHE_ENTRIES:
                self._prefixes.popitem(last=False)
        else:
            self.prefix_hits += 1
            self._prefixes.move_to_end(key)
        return copy_cache(cached)

    def _prefill(self, prefix: list[int]) -> list:
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        cache = make_prompt_cache(self.model)
        self.model(mx.array(prefix)[None], cache=cache)
        mx.eval([c.state for c in cache])
        return cache

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))


def copy_cache(cache: list) -> list:
    """An independent copy of a prompt cache: generation then writes only to the copy.

    A KVCache needs no data copy: one holding a view of exactly `offset`
    positions reallocates on its first write, leaving the shared arrays intact.
    Other cache types (rotating, quantized...) are deep-copied.
    """
    from mlx_lm.models.cache import KVCache

    out = []
    for layer in cache:
        if type(layer) is KVCache and layer.keys is not None:
            fresh = KVCache()
            n = layer.offset
            fresh.keys, fresh.values = layer.keys[..., :n, :], layer.values[..., :n, :]
            fresh.offset = n
            out.append(fresh)
        else:
            out.append(copy.deepcopy(layer))
    return out


def settle(model) -> None:
    """Evaluate every array the model holds, private members too, on this thread.

    MLX records a lazy array's operations on the stream of the thread that built
    it, and no other thread can evaluate it ("There is no Stream(cpu, 0) in current
    thread"). The loader evaluates the parameters, but not members built with the
    model such as Llama 3's rope frequencies (`_freqs`, rope_scaling "llama3"):
    without this, the engine's thread would be the first to evaluate them and
    every answer of the default generator would fail.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten

    mx.eval([v for _, v in tree_flatten(model) if isinstance(v, mx.array)])


def load_generator(config: Config) -> Generator:
    """Resolve (hub, local folder or offline pack) and load the configured generator."""
    from mlx_lm import load

    resolved, (model, tokenizer) = load_resolved(config.generator, "generator", config, load)
    settle(model)
    # Name what actually runs: the pack's model when we fell back to it.
    name = Path(resolved.path).name if resolved.source == "pack" else resolved.name
    return Generator(name=name, path=resolved.path, model=model, tokenizer=tokenizer)
