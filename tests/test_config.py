"""Configuration precedence: defaults < config file < environment < flags."""

import os
from pathlib import Path

import pytest
from conftest import KEPT_RAG_VARIABLES, NO_CONFIG, isolate_environment
from platformdirs import user_config_dir

from rag.config import DEFAULT_GENERATOR, Config, ConfigError, config_path, load_config


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


def test_the_users_config_file_and_environment_do_not_reach_the_tests(tmp_path, monkeypatch):
    # A user's ~/.config/rag/config.toml, in a temporary home (never the real one).
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    users_file = Path(user_config_dir("rag")) / "config.toml"
    assert tmp_path in users_file.parents
    users_file.parent.mkdir(parents=True)
    users_file.write_text('k = 99\nmodels = "hub"\ndb = "/users/own/db"\n')
    # Without the tests' isolation this file would be read...
    assert config_path(env={}) == users_file
    assert load_config({}, env={}).k == 99
    # ... with it (conftest.py, before anything loaded a configuration) it is not.
    assert os.environ["RAG_CONFIG"] == str(NO_CONFIG) and not NO_CONFIG.exists()
    assert config_path() == NO_CONFIG
    pack_cache = os.environ.get("RAG_CACHE_DIR")  # kept on purpose: the shared model cache
    assert load_config() == Config(**({"cache_dir": Path(pack_cache)} if pack_cache else {}))
    assert {n for n in os.environ if n.startswith("RAG_")} <= {"RAG_CONFIG", *KEPT_RAG_VARIABLES}
    assert os.environ["HF_HUB_OFFLINE"] == "1"

    # The user's RAG_* variables are dropped, the model pack cache and full-eval switch kept.
    env = {"RAG_K": "7", "RAG_CONFIG": str(users_file), "RAG_BLAS": "bundled",
           "RAG_CACHE_DIR": "/pack/cache", "RAG_FULL_EVAL": "1", "PATH": "/bin"}
    isolate_environment(env)
    assert load_config({}, env=env) == Config(cache_dir=Path("/pack/cache"))
    assert env["RAG_CACHE_DIR"] == "/pack/cache" and env["RAG_FULL_EVAL"] == "1"
    assert "RAG_K" not in env and "RAG_BLAS" not in env and env["PATH"] == "/bin"
