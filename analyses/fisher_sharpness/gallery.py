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

__all__ = ["GALLERY", "answers_from_report"]


def answers_from_report(text: str) -> list[str]:
    """The bullet lines under ``## The two answers`` of a report."""
    lines = text.splitlines()
    try:
        start = lines.index(ANSWERS_HEADING) + 1
    except ValueError:
        raise ValueError(f"the report has no '{ANSWERS_HEADING}' section; is it a fisher-sharpness report?") from None
    out = []
    for line in lines[start:]:
        if line.startswith("## "):
            break
        if line.startswith("- "):
            out.append(line)
    return out


GALLERY = Gallery("fisher-sharpness", answers_from_report)

if __name__ == "__main__":  # pragma: no cover - run by hand
    GALLERY.main(sys.argv[1:])
