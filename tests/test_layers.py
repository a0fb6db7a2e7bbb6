"""Imports point down only (../shared/DESIGN.md): web -> ingest -> rag.

The `rag` command (rag/cli/) sits on top of all three: it is the only code in
rag/ that may import ingest/ or web/, and only inside functions, so `rag --help`
and the core never load them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rag", "ingest", "web")


def imports(path: Path) -> list[tuple[str, bool, list[str]]]:
    """(module, at top level, names) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name, id(node) in top, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, id(node) in top, [a.name for a in node.names]))
    return out


def package_files():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT), path


def forbidden(rel: Path, module: str, top: bool) -> str | None:
    target = module.split(".")[0]
    if rel.parts[0] == "rag" and target in ("ingest", "web"):
        if rel.parts[1] != "cli":
            return "the core imports neither ingest/ nor web/"
        if top:
            return "the command imports ingest/ and web/ only inside its functions"
    if rel.parts[0] == "ingest" and target == "web":
        return "ingest/ never imports web/"
    return None


def test_imports_point_down_only():
    wrong = []
    for rel, path in package_files():
        for module, top, _ in imports(path):
            reason = forbidden(rel, module, top)
            if reason:
                wrong.append(f"{rel}: import {module} ({reason})")
    assert not wrong, "\n".join(wrong)


def test_no_private_name_is_imported_across_modules():
    wrong = [f"{rel}: from {module} import {name}"
             for rel, path in package_files()
             for module, _, names in imports(path)
             if module.split(".")[0] in PACKAGES
             for name in names if name.startswith("_")]
    assert not wrong, "\n".join(wrong)


def test_the_check_itself_catches_an_upward_import(tmp_path):
    # The walker must see imports at any depth, or the two tests above prove nothing.
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from web.app import create_app\n")
    found = imports(source)
    assert ("web.app", False, ["create_app"]) in found
    assert forbidden(Path("rag/retrieve.py"), "web.app", False)
    assert forbidden(Path("rag/cli/ask.py"), "ingest.pipeline", True)
    assert not forbidden(Path("rag/cli/ask.py"), "ingest.pipeline", False)
    assert forbidden(Path("ingest/pipeline.py"), "web.jobs", False)
    assert not forbidden(Path("web/jobs.py"), "ingest.pipeline", True)


def test_no_runtime_module_grows_past_400_lines():
    long = [f"{rel}: {n} lines" for rel, path in package_files()
            if (n := len(path.read_text().splitlines())) > 400]
    assert not long, "\n".join(long)
