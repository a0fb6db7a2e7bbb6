"""The default models' code paths, on tiny random-weight models of the same architectures.

The defaults (Llama 3.1 8B Instruct 4-bit, multilingual-e5-base) never run in
tests: tests/tiny_models.py writes folders of the same architectures, file
layouts, special tokens and chat template, and they load through the same
functions the defaults do (`load_generator`, `load_embedder`, a config naming a
local folder).
"""

from __future__ import annotations

import json
import math
import shutil

import mlx.core as mx
import numpy as np
import pytest
from tiny_models import LLAMA31_ROPE_SCALING, LLAMA31_SPECIALS, write_llama31, write_xlmr

from rag import fast_encoder
from rag.config import DEFAULT_EMBEDDER, load_config
from rag.embed import load_embedder, model_name
from rag.generate import load_generator
from rag.prompt import SYSTEM_PROMPT, build_prompt, user_message
from rag.types import Passage

QUESTION = "When was the Aurora observatory completed?"
PASSAGES = [
    Passage("a:0", "a", "Aurora Observatory History", "/d/aurora.pdf",
            "The Aurora observatory was completed in 1932 on the summit of Mount Keller.",
            3, 3, 0, 75),
    Passage("b:4", "b", "", "/d/notes/saffron.md", "Saffron is harvested by hand.", 7, 8, 10, 40),
]
# What Llama 3.1's own template adds to the system message and the pinned prompt leaves out.
DATE_HEADER = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
TEXTS = ["the tides", "Tides at Orlow Harbour peak twice a day, 2 metres at spring tide.",
         "aurora " * 40, "x", "The observatory mirror: 2.4 m, ground in Jena (1929)."]


def config_for(tmp, **models):
    return load_config({**models, "db": str(tmp / "db"), "cache_dir": str(tmp / "cache")},
                       env={}, file=tmp / "no-config.toml")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-defaults")


@pytest.fixture(scope="session")
def llama_dir(models_dir):
    return write_llama31(models_dir / "tiny-llama-3.1-instruct-4bit")


@pytest.fixture(scope="session")
def e5_dir(models_dir):
    return write_xlmr(models_dir / "tiny-multilingual-e5")


@pytest.fixture(scope="session")
def llama(llama_dir, models_dir):
    return load_generator(config_for(models_dir, generator=str(llama_dir)))


@pytest.fixture(scope="session")
def e5(e5_dir, models_dir):
    return load_embedder(config_for(models_dir, embedder=str(e5_dir)))


def special_ids(tokenizer) -> dict[str, int]:
    return {s: tokenizer.convert_tokens_to_ids(s) for s in LLAMA31_SPECIALS}


def last_logits(generator, n: int = 120) -> mx.array:
    return generator.model(mx.array([list(range(n))]))[0, -1].astype(mx.float32)


def llama3_inv_freq(dims: int, base: float, scaling: dict) -> np.ndarray:
    """Llama 3.1's rope frequencies (transformers' _compute_llama3_parameters, in NumPy)."""
    inv_freq = 1.0 / base ** (np.arange(0, dims, 2) / dims)
    old = scaling["original_max_position_embeddings"]
    low, high, factor = scaling["low_freq_factor"], scaling["high_freq_factor"], scaling["factor"]
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return np.where(medium, smoothed, scaled)


@pytest.mark.slow
def test_llama31_loads_with_its_rope_scaling(llama, llama_dir, models_dir):
    rope = llama.model.model.layers[0].self_attn.rope
    assert type(rope).__name__ == "Llama3RoPE"
    # mlx-lm keeps 1/frequency (the wavelength over 2 pi) per rotated pair.
    np.testing.assert_allclose(1.0 / np.array(rope._freqs),
                               llama3_inv_freq(16, 500000.0, LLAMA31_ROPE_SCALING), rtol=1e-5)
    unscaled = models_dir / "tiny-llama-3.1-no-rope-scaling"
    shutil.copytree(llama_dir, unscaled)
    config = json.loads((unscaled / "config.json").read_text())
    del config["rope_scaling"]
    (unscaled / "config.json").write_text(json.dumps(config))
    plain = load_generator(config_for(models_dir, generator=str(unscaled)))
    assert type(plain.model.model.layers[0].self_attn.rope).__name__ != "Llama3RoPE"
    # Same weights: only the scaled low frequencies differ, visible within 120 positions.
    assert float(mx.abs(last_logits(llama) - last_logits(plain)).max()) > 0.01


@pytest.mark.slow
def test_llama31_prompt_has_each_special_token_as_one_id(llama):
    tok = llama.tokenizer
    ids = special_ids(tok)
    prompt = build_prompt(QUESTION, PASSAGES, tok, budget=4000)
    for name, i in ids.items():
        assert list(tok.encode(name, add_special_tokens=False)) == [i], name
    bos, start, end, eot = (ids[s] for s in ("<|begin_of_text|>", "<|start_header_id|>",
                                             "<|end_header_id|>", "<|eot_id|>"))
    markers = [t for t in prompt.tokens if t in ids.values()]
    assert markers == [bos, start, end, eot, start, end, eot, start, end]
    assert prompt.tokens[:2] == [bos, start]
    assert tok.decode(prompt.tokens) == prompt.text
    # The pinned prompt is the model's own chat template, less the date header.
    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user_message(QUESTION, PASSAGES)}]
    own = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert DATE_HEADER in own
    assert own.replace(DATE_HEADER, "", 1) == prompt.text
    # The cached prefix is the system message and the user header, nothing of the question.
    prefix = prompt.tokens[:prompt.prefix_len]
    assert [t for t in prefix if t in ids.values()] == [bos, start, end, eot, start, end]
    assert tok.decode(prefix).endswith("<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n")


@pytest.fixture(scope="session")
def engine(llama):
    from rag.engine import LocalEngine

    engine = LocalEngine(llama)
    yield engine
    engine.close()


def test_a_fresh_llama31_answers_on_the_engines_thread_first(llama_dir, models_dir):
    """Nothing runs the model on this thread before the engine does: Llama 3's lazily
    built rope frequencies must already be evaluated (rag/generate.py: settle)."""
    from rag.engine import LocalEngine
    from rag.streams import GenRequest

    fresh = load_generator(config_for(models_dir, generator=str(llama_dir)))
    engine = LocalEngine(fresh)
    try:
        prompt = build_prompt(QUESTION, PASSAGES, fresh.tokenizer, budget=4000)
        events = list(engine.submit(GenRequest(prompt.tokens, 4, 0.0,
                                               prefix_len=prompt.prefix_len)))
    finally:
        engine.close()
    assert events[-1].error == ""
    assert events[-1].finish in ("stop", "length") and events[-1].generation_tokens >= 1


@pytest.mark.slow
def test_prefix_cache_gives_the_same_tokens_as_no_cache(llama, engine):
    from mlx_lm import stream_generate

    from rag.streams import GenRequest

    prompt = build_prompt(QUESTION, PASSAGES, llama.tokenizer, budget=4000)
    assert prompt.prefix_len > 50
    plain = [r.token for r in stream_generate(llama.model, llama.tokenizer, prompt.tokens,
                                              max_tokens=24)]
    assert len(set(plain)) > 3  # the tiny model's greedy output is not one token
    plain = [t for t in plain if t not in llama.eos_ids]
    hits = llama.prefix_hits
    for _ in range(2):  # the first may compute the prefix, the second must reuse it
        events = list(engine.submit(GenRequest(prompt.tokens, 24, 0.0,
                                               prefix_len=prompt.prefix_len)))
        assert [t for e in events for t in e.tokens] == plain
        assert events[-1].cached_tokens == prompt.prefix_len
    assert llama.prefix_hits >= hits + 1
    # The cached prefix holds exactly the prefix's positions (one short would shift every
    # later position, which greedy tokens of a tiny model may not show).
    cache = llama.prefix_cache(prompt.tokens[:prompt.prefix_len])
    assert all(layer.offset == prompt.prefix_len for layer in cache)


class EotAfter:
    """The tiny model, steered: no special token for `n` decode steps, then <|eot_id|>."""

    def __init__(self, model, specials: list[int], eot: int, n: int) -> None:
        self.model, self.n, self.steps = model, n, 0
        bias = np.zeros(model.args.vocab_size, dtype=np.float32)
        bias[specials] = -1e4
        self.before = mx.array(bias)
        bias[eot] = 1e4
        self.after = mx.array(bias)

    def __call__(self, inputs, cache=None, **kwargs):
        logits = self.model(inputs, cache=cache, **kwargs)
        if inputs.shape[1] == 1:  # a decode step (prefill runs in longer steps)
            self.steps += 1
        return logits + (self.after if self.steps > self.n else self.before)

    def __getattr__(self, name):
        return getattr(self.model, name)


@pytest.mark.slow
def test_stream_stops_at_eot_and_never_shows_it(llama, monkeypatch):
    from rag.engine import LocalEngine
    from rag.streams import GenRequest

    tok = llama.tokenizer
    ids = special_ids(tok)
    prompt = build_prompt(QUESTION, PASSAGES, tok, budget=4000)
    n = 5  # ordinary tokens before the model emits <|eot_id|>
    monkeypatch.setattr(llama, "model", EotAfter(llama.model, list(ids.values()),
                                                 ids["<|eot_id|>"], n))
    engine = LocalEngine(llama)
    try:
        events = list(engine.submit(GenRequest(prompt.tokens, 40, 0.0)))
    finally:
        engine.close()
    assert events[-1].finish == "stop"
    assert events[-1].generation_tokens == n + 1  # n tokens, then <|eot_id|>
    shown = [t for e in events for t in e.tokens]
    assert len(shown) == n and not set(ids.values()) & set(shown)
    assert "<|" not in "".join(e.text for e in events)
    # Llama 3.1 ends a turn with <|eot_id|>, a tool call with <|eom_id|>: both stop it.
    assert {ids["<|eot_id|>"], ids["<|eom_id|>"], ids["<|end_of_text|>"]} <= \
        set(tok.eos_token_ids)


def own_forward(embedder, text: str) -> np.ndarray:
    """The model's own forward pass on exactly `text` (special tokens added), unpadded."""
    ids = embedder.tokenizer.encode(text).ids
    return np.array(embedder.model(mx.array([ids])).text_embeds.astype(mx.float32))[0]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.slow
def test_e5_loads_and_prefixes_queries_and_passages(e5, monkeypatch):
    assert (e5.query_prefix, e5.passage_prefix) == ("query: ", "passage: ")
    assert e5.dim == 64 and e5.pad_id == 1
    assert e5.pad_id + e5.max_tokens < 514  # the last position id stays in the table
    seen: list[str] = []
    real = e5.tokenizer

    class Spy:
        def encode_batch(self, texts, *args, **kwargs):
            seen.extend(texts)
            return real.encode_batch(texts, *args, **kwargs)

    monkeypatch.setattr(e5, "tokenizer", Spy())
    query = e5.embed_batch(["the tides"], query=True)[0]
    passage = e5.embed_batch(["the tides"])[0]
    assert seen == ["query: the tides", "passage: the tides"]
    monkeypatch.undo()
    assert cosines(query, own_forward(e5, "query: the tides")) > 0.9999
    assert cosines(passage, own_forward(e5, "passage: the tides")) > 0.9999
    assert cosines(query, own_forward(e5, "the tides")) < 0.999


@pytest.mark.slow
@pytest.mark.parametrize("batch_tokens", [4096, 48])  # one padded batch; several batches
def test_fast_path_matches_the_models_own_forward_on_xlmr(e5, monkeypatch, batch_tokens):
    assert fast_encoder.supports(e5.model)
    monkeypatch.setattr(e5, "batch_tokens", batch_tokens)
    lengths = [len(e5.tokenizer.encode("passage: " + t).ids) for t in TEXTS]
    assert len(set(lengths)) == len(TEXTS)  # every text padded differently in a batch
    fast = e5.embed_batch(TEXTS)
    monkeypatch.setattr(e5, "fast_path", False)
    reference = e5.embed_batch(TEXTS)
    assert cosines(fast, reference).min() > 0.9999
    alone = np.stack([own_forward(e5, "passage: " + t) for t in TEXTS])
    assert cosines(fast, alone).min() > 0.9999
    assert cosines(fast[:1], fast[1:2])[0] < 0.99


@pytest.mark.slow
def test_xlmr_position_ids_start_after_the_padding_index(e5):
    emb = e5.model.embeddings
    ids = e5.tokenizer.encode("passage: the tides").ids
    # XLM-R counts positions from padding_idx + 1; the padding itself sits at padding_idx.
    positions = np.r_[np.arange(len(ids)) + e5.pad_id + 1, [e5.pad_id] * 3]
    padded = mx.array([ids + [e5.pad_id] * 3])
    expected = emb.LayerNorm(emb.word_embeddings(padded) + emb.token_type_embeddings.weight[0]
                             + emb.position_embeddings(mx.array(positions)[None]))
    np.testing.assert_allclose(np.array(emb(padded)), np.array(expected), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("layout, prefixed", [
    ("3e5a9f0c1d2b/tiny-xlmr", False),  # "e5" only in a hash-like parent
    ("models--org--tiny-xlmr/snapshots/3e5a9f0c1d2b", False),  # a hub-cache snapshot
    ("models--org--tiny-multilingual-e5/snapshots/0a1b2c", True),
    ("e5-small-v2", True),
])
def test_e5_prefixes_follow_the_models_own_name(e5_dir, tmp_path, layout, prefixed):
    folder = tmp_path / layout
    shutil.copytree(e5_dir, folder)
    embedder = load_embedder(config_for(tmp_path, embedder=str(folder)))
    expected = ("query: ", "passage: ") if prefixed else ("", "")
    assert (embedder.query_prefix, embedder.passage_prefix) == expected


def test_model_names_for_the_e5_check():
    assert model_name(DEFAULT_EMBEDDER, "/c/models--x/snapshots/3e5a", "hub-cache") == \
        "multilingual-e5-base-mlx"
    assert model_name("intfloat/e5-small-v2", "intfloat/e5-small-v2", "hub") == "e5-small-v2"
    assert model_name("~/m/minilm/", "/home/u/m/minilm", "local") == "minilm"
