"""The generator: one loaded mlx-lm model shared by every caller, streamed, prefix-cached.

Web requests arrive from several threads; MLX evaluation of one model is not
something to interleave, so `Generator.stream` holds a lock for the whole
generation and requests queue. (mlx-lm's BatchGenerator could serve them
together; one private user rarely asks two questions at once, so the simpler
queue wins for now.)

Every prompt starts with the same system message (rag/prompt.py puts it first).
Its key-value cache is computed once per distinct prefix and copied for each
question, so prefill only covers the sources and the question. Greedy output
is the same token for token as without the cache (tests/test_answer.py).
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
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
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _prefixes: OrderedDict = field(default_factory=OrderedDict)
    prefix_hits: int = 0

    def stream(self, prompt_tokens: Sequence[int], max_tokens: int, temperature: float = 0.0,
               *, prefix_len: int = 0) -> Iterator[Any]:
        """Yield mlx_lm GenerationResponse objects for `prompt_tokens`.

        The first `prefix_len` tokens are served from (or added to) the prefix
        cache. The lock is held until the iterator finishes or is closed.
        """
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        tokens = list(prompt_tokens)
        if prefix_len >= len(tokens):
            prefix_len = 0  # stream_generate needs at least one new token to prefill
        with self._lock:
            cache = self._cache_for(tokens[:prefix_len]) if prefix_len else None
            yield from stream_generate(self.model, self.tokenizer, tokens[prefix_len:],
                                       max_tokens=max_tokens,
                                       sampler=make_sampler(temp=temperature),
                                       prompt_cache=cache)

    def _cache_for(self, prefix: list[int]) -> list:
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
        from mlx_lm.generate import generation_stream
        from mlx_lm.models.cache import make_prompt_cache

        cache = make_prompt_cache(self.model)
        with mx.stream(generation_stream):
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


def load_generator(config: Config) -> Generator:
    """Resolve (hub, local folder or offline pack) and load the configured generator."""
    from mlx_lm import load

    resolved, (model, tokenizer) = load_resolved(config.generator, "generator", config, load)
    # Name what actually runs: the pack's model when we fell back to it.
    name = Path(resolved.path).name if resolved.source == "pack" else resolved.name
    return Generator(name=name, path=resolved.path, model=model, tokenizer=tokenizer)
