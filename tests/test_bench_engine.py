"""`rag bench engine` on a tiny random-weight Llama 3.1 (tests/tiny_models.py): the engine
rounds run, count every generated token, and the random-weight copy keeps the shape."""

from __future__ import annotations

import json

import pytest
from tiny_models import write_llama31

from rag.cli.bench import engine as bench


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_llama31(tmp_path_factory.mktemp("bench-engine") / "tiny-llama")


def test_engine_rounds_count_every_token(tiny):
    figures = bench.run(str(tiny), concurrency=[1, 2], max_tokens=5, prompt_tokens=400,
                        baseline=False, warm=False, prefill_steps=(64,))
    rounds = figures["engine"]["64"]
    assert [r["n"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["errors"] == 0
        # Each stream ends at max_tokens or a stop token: 1 to 5 tokens each.
        assert len(r["generated"]) == r["n"] and all(1 <= g <= 5 for g in r["generated"])


def test_random_weights_keep_the_shape_and_the_tokenizer(tiny, tmp_path):
    out = bench.random_model(tiny, "generator", tmp_path / "random", seed=1)
    config = json.loads((tiny / "config.json").read_text())
    copied = json.loads((out / "config.json").read_text())
    assert {k: copied[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")} == \
        {k: config[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}
    assert (out / "tokenizer.json").read_bytes() == (tiny / "tokenizer.json").read_bytes()
    with pytest.raises(ValueError, match="random-weights"):
        bench.random_model(tiny, "no-such-shape", tmp_path / "other")
