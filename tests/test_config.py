"""Configuration precedence: defaults < config file < environment < flags."""

from pathlib import Path

import pytest

from rag.config import DEFAULT_GENERATOR, ConfigError, load_config


def test_defaults_apply_without_file_env_or_flags(tmp_path):
    config = load_config({}, env={}, file=tmp_path / "none.toml")
    assert config.generator == DEFAULT_GENERATOR
    assert config.k == 6


def test_each_layer_overrides_the_one_below(tmp_path):
    file = tmp_path / "config.toml"
    file.write_text('k = 3\nmax_tokens = 100\ntemperature = 0.5\ndb = "/from/file"\n')
    env = {"RAG_MAX_TOKENS": "200", "RAG_TEMPERATURE": "0.7"}
    config = load_config({"temperature": 0.9}, env=env, file=file)
    assert config.k == 3  # file over default
    assert config.max_tokens == 200  # environment over file
    assert config.temperature == 0.9  # flag over environment
    assert config.db == Path("/from/file")


def test_config_file_found_through_environment(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('embedder = "some/model"\n')
    config = load_config({}, env={"RAG_CONFIG": str(file)})
    assert config.embedder == "some/model"


def test_bad_values_name_the_setting_and_source(tmp_path):
    with pytest.raises(ConfigError, match=r"^k: invalid value 'many' in environment"):
        load_config({}, env={"RAG_K": "many"}, file=tmp_path / "none.toml")
    file = tmp_path / "c.toml"
    file.write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="colour: unknown setting in .*c.toml"):
        load_config({}, env={}, file=file)
