"""The project's embedder: one narrow seam, `embed_batch(texts) -> float32 [n, dim]`.

Texts are tokenized with the model's fast tokenizer, sorted by length and
batched so that padding stays small (length bucketing), then encoded. Vectors
are L2-normalised, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.config import Config
from rag.models import load_resolved
from rag.owner import BULK, Owner

BULK_SLICE = 128  # texts per slice of bulk work (about a second of a 2-core CPU)

# E5-family models were trained with these prefixes; others take text as is. Matched
# against the model's own name only ("multilingual-e5-base-mlx"), as a word: other parts
# of its path, such as a hub snapshot hash, can contain "e5" too.
_PREFIXES = ((re.compile(r"(?:^|[-_.\s])e5(?:$|[-_.\s])"), ("query: ", "passage: ")),)


@dataclass
class Embedder:
    name: str
    path: str
    model: object
    tokenizer: object  # tokenizers.Tokenizer
    dim: int
    max_tokens: int = 256
    pad_id: int = 0
    batch_tokens: int = 1024  # padded tokens per forward pass (smaller stays in cache)
    query_prefix: str = ""
    passage_prefix: str = ""
    tokens_embedded: int = 0  # running count, for benchmarks
    fast_path: bool = True  # rag/fast_encoder.py where it applies; False: the model's own forward
    # Every embedding runs on this one thread (rag/owner.py); the runtime points its
    # `yield_to` at the generation engine, so ingestion yields to answering.
    owner: Owner = field(default_factory=lambda: Owner("rag-embed"))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count_tokens_batch(self, texts: Sequence[str]) -> list[int]:
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encs]

    def embed_batch(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        """L2-normalised vectors of `texts` (queries get the query prefix), on the owner's
        thread. Long lists are bulk work, cut into slices a question can overtake."""
        texts = list(texts)
        if len(texts) <= BULK_SLICE or query:
            return self.owner.run(self._embed, texts, query)
        parts = [self.owner.run(self._embed, texts[i:i + BULK_SLICE], False, True,
                                priority=BULK)
                 for i in range(0, len(texts), BULK_SLICE)]
        return np.concatenate(parts)

    def _embed(self, texts: list[str], query: bool, bulk: bool = False) -> np.ndarray:
        import mlx.core as mx

        from rag import fast_encoder

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prefix = self.query_prefix if query else self.passage_prefix
        encs = self.tokenizer.encode_batch([prefix + t for t in texts])
        ids = [e.ids[: self.max_tokens - 1] + e.ids[-1:] if len(e.ids) > self.max_tokens
               else e.ids for e in encs]
        self.tokens_embedded += sum(len(i) for i in ids)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # longest first
        batches = []
        start = 0
        while start < len(order):
            size = max(1, self.batch_tokens // max(len(ids[order[start]]), 1))
            batches.append(order[start:start + size])
            start += len(batches[-1])

        def run(batch: list[int]) -> np.ndarray:
            width = max(len(ids[i]) for i in batch)
            tok = mx.array([ids[i] + [self.pad_id] * (width - len(ids[i])) for i in batch])
            mask = mx.array([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in batch])
            if fast:
                return fast_encoder.encode(self.model, tok, mask)
            return np.array(self.model(tok, attention_mask=mask).text_embeds.astype(mx.float32))

        fast = self.fast_path and fast_encoder.supports(self.model)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        # Bulk work keeps to one core while answers are being generated.
        threads = 1 if bulk and self.owner.yield_to() else None
        results = (fast_encoder.encode_many(batches, run, threads=threads) if fast
                   else map(run, batches))
        for batch, vecs in zip(batches, results):
            out[batch] = vecs
        return out


def _tokenizer(path: Path, hf_tokenizer) -> object:
    from tokenizers import Tokenizer

    file = path / "tokenizer.json"
    tok = Tokenizer.from_file(str(file)) if file.exists() else hf_tokenizer.backend_tokenizer
    tok.no_padding()
    tok.no_truncation()
    return tok


def load_embedder(config: Config) -> Embedder:
    """Resolve and load the configured embedder (hub, local folder or offline pack)."""
    import mlx.core as mx
    from mlx_embeddings import load

    resolved, (model, hf_tok) = load_resolved(config.embedder, "embedder", config, load)
    model.eval()
    path = Path(resolved.path) if Path(resolved.path).exists() else _local_dir(resolved.path)
    tok = _tokenizer(path, getattr(hf_tok, "_tokenizer", hf_tok))
    cfg = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
    probe = model(mx.array([[tok.token_to_id("[CLS]") or 0]])).text_embeds
    name = model_name(resolved.name, resolved.path, resolved.source).lower()
    query_prefix, passage_prefix = next((p for pattern, p in _PREFIXES if pattern.search(name)),
                                        ("", ""))
    if resolved.source == "pack":
        query_prefix = passage_prefix = ""
    max_pos = int(cfg.get("max_position_embeddings", 514))
    return Embedder(
        name=resolved.name if resolved.source != "pack" else path.name,
        path=str(path), model=model, tokenizer=tok, dim=int(probe.shape[-1]),
        max_tokens=min(512, max_pos - 2), pad_id=int(cfg.get("pad_token_id", 0) or 0),
        query_prefix=query_prefix, passage_prefix=passage_prefix,
    )


def model_name(name: str, path: str, source: str) -> str:
    """The model's own name: a hub id's last part, or a local folder's name.

    A local folder inside the hub cache (.../models--org--name/snapshots/<hash>)
    is named by its repository.
    """
    if source != "local":
        return name.rstrip("/").rsplit("/", 1)[-1]
    folder = Path(os.path.abspath(path))
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.rsplit("--", 1)[-1]
    return folder.name


def _local_dir(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id))
