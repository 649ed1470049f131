"""Publish a finished main-job run as the README's gallery (run by hand from the repository root).

    landscape analyze fisher-sharpness --out runs/fisher-sharpness
    python -m analyses.fisher_sharpness.gallery runs/fisher-sharpness

Copies the run's figures to ``figures/gallery/fisher_sharpness_<name>.png`` (removing stale
``fisher_sharpness_*`` files), writes ``figures/gallery/fisher_sharpness_report.md`` (the run's
report with its image links pointing at the gallery copies), and rewrites the README's block
between the ``ANSWERS_START`` and ``ANSWERS_END`` markers with the report's answer lines, so the
README quotes exactly what the committed report says (``tests/test_readme_gallery.py`` checks it).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from analyses.fisher_sharpness.report import ANSWERS_HEADING
from landscape.util.files import write_text

ANSWERS_START = "<!-- fisher-sharpness answers: start (written by analyses.fisher_sharpness.gallery) -->"
ANSWERS_END = "<!-- fisher-sharpness answers: end -->"
PREFIX = "fisher_sharpness_"


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


def answers_in_readme(text: str) -> list[str]:
    """The bullet lines between the README's answer markers."""
    if ANSWERS_START not in text or ANSWERS_END not in text:
        raise ValueError("the README has no fisher-sharpness answers block (its start and end markers are missing).")
    block = text.split(ANSWERS_START, 1)[1].split(ANSWERS_END, 1)[0]
    return [line for line in block.splitlines() if line.startswith("- ")]


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
        raise FileNotFoundError(f"{report} does not exist: give the --out folder of a finished fisher-sharpness run.")
    gallery = repo / "figures" / "gallery"
    gallery.mkdir(parents=True, exist_ok=True)
    for old in gallery.glob(f"{PREFIX}*"):
        old.unlink()
    written = []
    text = report.read_text()
    for fig in sorted((run_dir / "figures").glob("*.png")):
        dest = gallery / f"{PREFIX}{fig.name}"
        shutil.copyfile(fig, dest)
        written.append(dest)
        text = text.replace(f"](figures/{fig.name})", f"]({dest.name})")
    text = re.sub(r"\]\(figures/([^)]+)\)", r"](\1)", text)
    written.append(write_text(gallery / f"{PREFIX}report.md", text))
    readme = repo / "README.md"
    write_text(readme, replace_answers(readme.read_text(), answers_from_report(text)))
    written.append(readme)
    return written


if __name__ == "__main__":  # pragma: no cover - run by hand
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m analyses.fisher_sharpness.gallery RUN_DIR [REPO]")
    for p in publish(*sys.argv[1:]):
        print(p)
