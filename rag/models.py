"""Which model folder to load: a local path, the hub (cached or reachable), or the offline pack.

Resolution never hangs on the network: the hub is probed once with a bounded
timeout, and when it cannot be reached and nothing local is configured we fall
back to the offline pack (rag/pack.py) with a one-line notice.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rag.config import Config


class ModelError(RuntimeError):
    """A model could not be resolved or loaded; the message names it and why."""


@dataclass(frozen=True)
class Resolved:
    name: str  # what was asked for
    path: str  # local folder or hub id to hand to the loader
    source: str  # "local", "hub-cache", "hub", "pack"
    notice: str = ""


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@lru_cache(maxsize=8)
def hub_reachable(endpoint: str, timeout: float) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "yes"):
        return False
    request = urllib.request.Request(endpoint + "/api/models?limit=1", method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
        return True
    except urllib.error.HTTPError as exc:
        # The hub answers this path with 200, or 401/403/429 when it limits us; anything
        # else (a captive portal, a proxy's 404 or 5xx) means the hub is not there.
        return exc.code in (401, 403, 429)
    except (OSError, ValueError):
        return False


def cached_snapshot(repo_id: str) -> str | None:
    """The hub cache's copy of a model, if it was downloaded before."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure here just means "not cached"
        return None


def resolve(name: str, kind: str, config: Config) -> Resolved:
    """Resolve a generator or embedder name (kind is "generator" or "embedder")."""
    if kind not in ("generator", "embedder"):
        raise ValueError(f"kind must be generator or embedder, not {kind!r}")
    local = Path(name).expanduser()
    if local.exists():
        return Resolved(name, str(local), "local")
    from rag import pack

    pack_dir = config.cache_dir / (pack.GENERATOR_DIRNAME if kind == "generator"
                                   else pack.EMBEDDER_DIRNAME)
    if config.models == "pack":
        return _from_pack(name, kind, config, pack_dir, "")
    cached = cached_snapshot(name)
    if cached:
        return Resolved(name, cached, "hub-cache")
    if config.models == "hub" or hub_reachable(hub_endpoint(), config.hub_timeout):
        return Resolved(name, name, "hub")
    return _from_pack(name, kind, config, pack_dir,
                      f"model hub unreachable: using the offline {kind} instead of {name}")


def _from_pack(name: str, kind: str, config: Config, pack_dir: Path, notice: str) -> Resolved:
    from rag import pack

    if not pack.is_complete(pack_dir):
        pack.pull(config.cache_dir, quiet=True)
    return Resolved(name, str(pack_dir), "pack", notice)


def announce(resolved: Resolved) -> None:
    if resolved.notice:
        print(f"notice: {resolved.notice}", file=sys.stderr)


def load_resolved(name: str, kind: str, config: Config, loader: Callable[[str], Any]
                  ) -> tuple[Resolved, Any]:
    """Resolve `name`, say so if it fell back to the pack, and load it with `loader`.

    Loaders raise many types (missing files, bad configs, unknown architectures);
    each becomes one ModelError naming the model, with the cause kept.
    """
    resolved = resolve(name, kind, config)
    announce(resolved)
    try:
        return resolved, loader(resolved.path)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise ModelError(f"{kind} {resolved.name}: cannot load {resolved.path} ({exc})") \
            from exc
