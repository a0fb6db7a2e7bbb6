"""The README's Python example, run as written (only its store folder moved to a temp dir)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, pack_cache

pytestmark = pytest.mark.slow


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("### From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_ingests_searches_and_answers_with_citations(pack_paths, tmp_path):
    code = readme_example()
    assert '"/tmp/rag-example"' in code
    code = code.replace('"/tmp/rag-example"', repr(str(tmp_path / "db")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_CACHE_DIR=str(pack_cache()), RAG_MAX_TOKENS="60",
               RAG_CONFIG=str(tmp_path / "none.toml"))
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert "'ingested': 6" in lines[0], lines[0]
    assert "Aurora" in lines[1]  # the best passage for the search
    assert "1987" in run.stdout  # the answer (corpora/: completed in 1987)
    cited = [line for line in lines if line.startswith("[")]
    assert cited and any("Aurora" in line and "supported=True" in line for line in cited)


def test_every_public_name_resolves_to_the_same_object_twice():
    # A submodule named like a public function would replace it after first use
    # (importing rag.x sets the attribute rag.x to the module).
    import ingest
    import rag

    for package in (rag, ingest):
        for name in package.__all__:
            first = getattr(package, name)
            assert getattr(package, name) is first, f"{package.__name__}.{name}"
            assert not isinstance(first, type(rag)), f"{package.__name__}.{name} is a module"
