"""Publish a finished guided-dropout run as the gallery and the README's answers (run by hand).

    landscape analyze guided-dropout --full --out runs/guided-dropout
    python -m analyses.guided_dropout.gallery runs/guided-dropout

Copies the run's figures to ``figures/gallery/guided_dropout_<name>.png``, writes
``figures/gallery/guided_dropout_report.md`` (image links pointing at the copies) and rewrites the
README's block between :data:`ANSWERS_START` and :data:`ANSWERS_END` with the report's ``## Answers``
bullets and its power line, so the README's words are the ones the numbers gave
(``tests/dropout/test_guided_dropout_gallery.py`` checks that README and committed report agree).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from analyses.guided_dropout.report import ANSWERS_HEADING
from landscape.util.files import write_text

__all__ = ["ANSWERS_END", "ANSWERS_START", "answers_from_report", "answers_in_readme", "publish", "replace_answers"]

ANSWERS_START = "<!-- guided-dropout answers: start (written by analyses.guided_dropout.gallery) -->"
ANSWERS_END = "<!-- guided-dropout answers: end -->"
PREFIX = "guided_dropout_"


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


def answers_in_readme(text: str) -> list[str]:
    """The non-empty lines between the README's guided-dropout markers."""
    if ANSWERS_START not in text or ANSWERS_END not in text:
        raise ValueError("the README has no guided-dropout answers block (its start and end markers are missing).")
    block = text.split(ANSWERS_START, 1)[1].split(ANSWERS_END, 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def replace_answers(readme: str, answers: list[str]) -> str:
    """``readme`` with the block between the markers replaced by ``answers``."""
    answers_in_readme(readme)  # raises without markers
    head, rest = readme.split(ANSWERS_START, 1)
    tail = rest.split(ANSWERS_END, 1)[1]
    return head + ANSWERS_START + "\n" + "\n".join(answers) + "\n" + ANSWERS_END + tail


def publish(run_dir: str | Path, repo: str | Path = ".") -> list[Path]:
    """Copy ``run_dir``'s figures and report into ``repo/figures/gallery`` and update ``repo/README.md``."""
    run_dir, repo = Path(run_dir), Path(repo)
    report = run_dir / "report.md"
    if not report.is_file():
        raise FileNotFoundError(f"{report} does not exist: give the --out folder of a finished guided-dropout run.")
    text = report.read_text()
    answers = answers_from_report(text)  # refuses an old-format report before touching the gallery
    gallery = repo / "figures" / "gallery"
    gallery.mkdir(parents=True, exist_ok=True)
    for old in gallery.glob(f"{PREFIX}*"):
        old.unlink()
    written = []
    for fig in sorted((run_dir / "figures").glob("*.png")):
        dest = gallery / f"{PREFIX}{fig.name}"
        shutil.copyfile(fig, dest)
        written.append(dest)
        text = text.replace(f"](figures/{fig.name})", f"]({dest.name})")
    text = re.sub(r"\]\(figures/([^)]+)\)", r"](\1)", text)
    written.append(write_text(gallery / f"{PREFIX}report.md", text))
    readme = repo / "README.md"
    write_text(readme, replace_answers(readme.read_text(), answers))
    written.append(readme)
    return written


if __name__ == "__main__":  # pragma: no cover - run by hand
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m analyses.guided_dropout.gallery RUN_DIR [REPO]")
    for p in publish(*sys.argv[1:]):
        print(p)
