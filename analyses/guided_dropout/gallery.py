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

__all__ = ["GALLERY"]

GALLERY = Gallery("guided-dropout", ANSWERS_HEADING, stop_at=("Decided before the data",))

if __name__ == "__main__":  # pragma: no cover - run by hand
    GALLERY.main(sys.argv[1:])
