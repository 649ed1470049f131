"""Hub names resolved from the local Hugging Face cache, offline (nothing is ever downloaded).

``bert-base-uncased`` or ``org/name`` is looked up as ``<cache>/models--org--name``, where
``<cache>`` is ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub`` (the
order ``huggingface_hub`` uses). The snapshot is the commit named in ``refs/<revision>`` (``main``
by default; ``name@rev`` picks another ref or a commit hash), or the only snapshot when there is no
ref file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["cache_dir", "looks_like_hub_name", "resolve"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?(@[A-Za-z0-9._/-]+)?$")


def cache_dir() -> Path:
    """The hub cache folder: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def looks_like_hub_name(text: str) -> bool:
    """``name``, ``org/name`` or either with ``@revision``: no leading ``.``/``/``/``~``, no file suffix."""
    return bool(_NAME.match(text)) and not text.endswith((".safetensors", ".bin", ".pt", ".pth", ".json"))


def _snapshot(repo: Path, revision: str) -> Path | None:
    snapshots = repo / "snapshots"
    ref = repo / "refs" / revision
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        return snapshots / commit if (snapshots / commit).is_dir() else None
    if (snapshots / revision).is_dir():  # a commit hash
        return snapshots / revision
    found = sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
    return found[0] if len(found) == 1 and revision == "main" else None


def resolve(name: str) -> Path:
    """The local snapshot folder of hub model ``name`` (``org/name[@revision]``).

    Raises:
        FileNotFoundError: the model (or that revision) is not in the cache; one line naming the cache
            searched and how to get the model there.
    """
    repo_id, _, revision = name.partition("@")
    cache = cache_dir()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = _snapshot(repo, revision or "main") if repo.is_dir() else None
    if snapshot is None:
        what = f"{repo_id!r} (revision {revision!r})" if revision else repr(repo_id)
        raise FileNotFoundError(
            f"checkpoint {what} is not a local path and not in the Hugging Face cache {cache} (looked for "
            f"{repo.name}); landscape never downloads: fetch it once on a machine with network "
            f"(huggingface-cli download {repo_id}), set HF_HUB_CACHE or HF_HOME to the cache that has it, "
            "or give a local folder.")
    return snapshot
