"""Publish a finished guided-dropout run as the gallery and the README's answers (run by hand).

    landscape analyze guided-dropout --full --out runs/guided-dropout
    python -m analyses.guided_dropout.gallery runs/guided-dropout

See :class:`analyses.gallery.Gallery`; the README's answers are the report's ``## Answers`` bullets
and its power line, so the README's words are the ones the numbers gave
(``tests/dropout/test_guided_dropout_power.py`` checks that README and committed report agree).
"""

from __future__ import annotations

import sys

from analyses.gallery import Gallery
from analyses.guided_dropout.report import ANSWERS_HEADING

__all__ = ["GALLERY", "answers_from_report"]


def answers_from_report(text: str) -> list[str]:
    """The non-empty lines under ``## Answers`` of a report (the bullets and the power line)."""
    lines = text.splitlines()
    try:
        start = lines.index(ANSWERS_HEADING) + 1
    except ValueError:
        raise ValueError(f"the report has no '{ANSWERS_HEADING}' section; is it a guided-dropout report of this "
                         "version? Rerun `landscape analyze guided-dropout`.") from None
    out = []
    for line in lines[start:]:
        if line.startswith("Decided before the data") or line.startswith("## "):
            break
        if line.strip():
            out.append(line)
    return out


GALLERY = Gallery("guided-dropout", answers_from_report)

if __name__ == "__main__":  # pragma: no cover - run by hand
    GALLERY.main(sys.argv[1:])
