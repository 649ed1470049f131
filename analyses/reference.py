"""Where the published reference surfaces (the paper's guided-dropout HDF5 files) are found.

One lookup for the analyses, the gallery script and the tests: an explicit folder, else the
``LANDSCAPE_REFERENCE`` environment variable, else ``../shared/reference`` next to the repository
root. A candidate counts when it holds :data:`MARKER` itself or in :data:`SUBFOLDER`.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "LANDSCAPE_REFERENCE"
MARKER = "surf_res256_bert.h5"
SUBFOLDER = "guided-dropout-surfaces"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _holding(folder: Path) -> Path | None:
    for cand in (folder, folder / SUBFOLDER):
        if (cand / MARKER).is_file():
            return cand
    return None


def reference_candidates(explicit: str | os.PathLike | None = None) -> list[Path]:
    """The folders looked in, in order: ``explicit`` alone when given, else $LANDSCAPE_REFERENCE and
    ``<repo>/../shared/reference``."""
    if explicit is not None:
        return [Path(explicit).expanduser()]
    env = os.environ.get(ENV, "")
    return ([Path(env).expanduser()] if env else []) + [REPO_ROOT.parent / "shared" / "reference"]


def find_reference(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding the reference surfaces; ``FileNotFoundError`` naming every place looked in."""
    tried = reference_candidates(explicit)
    for cand in tried:
        found = _holding(cand)
        if found is not None:
            return found
    where = ", ".join(str(p) for p in tried)
    raise FileNotFoundError(f"the reference surfaces ({MARKER}) are not in {where}; give --reference DIR, or set "
                            f"{ENV}=DIR (the folder of the guided-dropout surfaces).")
