"""Publish a finished main-job run as the README's gallery (run by hand from the repository root).

    landscape analyze fisher-sharpness --models 3 --out runs/fisher-sharpness
    python -m analyses.fisher_sharpness.gallery runs/fisher-sharpness

See :class:`analyses.gallery.Gallery`; the README's answers are the bullet lines under the report's
``## The two answers`` (``tests/test_readme_gallery.py`` checks README and committed report agree).
"""

from __future__ import annotations

import sys

from analyses.fisher_sharpness.report import ANSWERS_HEADING
from analyses.gallery import Gallery

__all__ = ["GALLERY"]

GALLERY = Gallery("fisher-sharpness", ANSWERS_HEADING, bullets_only=True)

if __name__ == "__main__":  # pragma: no cover - run by hand
    GALLERY.main(sys.argv[1:])
