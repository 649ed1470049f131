"""Publish a finished run as the README's gallery: the figures, the report, and the README's answers.

Each study with a committed gallery declares a :class:`Gallery`: its name and where its report keeps
the answer lines (the heading they follow, and what ends them). :meth:`Gallery.publish` copies the run's figures to
``figures/gallery/<study>_<name>.png`` (stale ones removed), writes ``figures/gallery/<study>_report.md``
(image links pointing at the copies) and rewrites the README's block between the study's markers with
the answer lines, so the README quotes exactly what the committed report says (the README tests check
that the two agree).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from landscape.util.files import write_text

__all__ = ["Gallery"]


@dataclass(frozen=True)
class Gallery:
    """A study's published gallery: ``study`` (its command name, e.g. ``fisher-sharpness``); the report's
    answers are the lines after ``heading`` up to the next ``## `` heading or a line starting with one
    of ``stop_at``, only the ``- `` bullets when ``bullets_only``, else every non-empty line."""

    study: str
    heading: str
    bullets_only: bool = False
    stop_at: tuple[str, ...] = ()

    def answers_from_report(self, text: str) -> list[str]:
        """The answer lines of a report (ValueError on a report of another kind or version)."""
        lines = text.splitlines()
        try:
            start = lines.index(self.heading) + 1
        except ValueError:
            raise ValueError(f"the report has no '{self.heading}' section; is it a {self.study} report of this "
                             f"version? Rerun `landscape analyze {self.study}`.") from None
        out = []
        for line in lines[start:]:
            if line.startswith(("## ", *self.stop_at)):
                break
            if line.startswith("- ") if self.bullets_only else line.strip():
                out.append(line)
        return out

    @property
    def module(self) -> str:
        """The study's package under ``analyses`` (``fisher_sharpness``)."""
        return self.study.replace("-", "_")

    @property
    def start(self) -> str:
        """The README marker before the answers."""
        return f"<!-- {self.study} answers: start (written by analyses.{self.module}.gallery) -->"

    @property
    def end(self) -> str:
        """The README marker after the answers."""
        return f"<!-- {self.study} answers: end -->"

    def answers_in_readme(self, text: str) -> list[str]:
        """The non-empty lines between the README's markers."""
        if self.start not in text or self.end not in text:
            raise ValueError(f"the README has no {self.study} answers block (its start and end markers are missing).")
        block = text.split(self.start, 1)[1].split(self.end, 1)[0]
        return [line for line in block.splitlines() if line.strip()]

    def replace_answers(self, readme: str, answers: list[str]) -> str:
        """``readme`` with the block between the markers replaced by ``answers``."""
        self.answers_in_readme(readme)  # raises without markers
        head, rest = readme.split(self.start, 1)
        tail = rest.split(self.end, 1)[1]
        return head + self.start + "\n" + "\n".join(answers) + "\n" + self.end + tail

    def publish(self, run_dir: str | Path, repo: str | Path = ".") -> list[Path]:
        """Copy ``run_dir``'s figures and report into ``repo/figures/gallery`` and update ``repo/README.md``."""
        run_dir, repo = Path(run_dir), Path(repo)
        report = run_dir / "report.md"
        if not report.is_file():
            raise FileNotFoundError(f"{report} does not exist: give the --out folder of a finished {self.study} run.")
        text = report.read_text()
        answers = self.answers_from_report(text)  # refuses another kind of report before touching the gallery
        gallery, prefix = repo / "figures" / "gallery", f"{self.module}_"
        gallery.mkdir(parents=True, exist_ok=True)
        for old in gallery.glob(f"{prefix}*"):
            old.unlink()
        written = []
        for fig in sorted((run_dir / "figures").glob("*.png")):
            dest = gallery / f"{prefix}{fig.name}"
            shutil.copyfile(fig, dest)
            written.append(dest)
            text = text.replace(f"](figures/{fig.name})", f"]({dest.name})")
        text = re.sub(r"\]\(figures/([^)]+)\)", r"](\1)", text)
        written.append(write_text(gallery / f"{prefix}report.md", text))
        readme = repo / "README.md"
        write_text(readme, self.replace_answers(readme.read_text(), answers))
        written.append(readme)
        return written

    def main(self, argv: list[str]) -> None:
        """``python -m analyses.<study>.gallery RUN_DIR [REPO]``: publish and list what was written."""
        if len(argv) not in (1, 2):
            raise SystemExit(f"usage: python -m analyses.{self.module}.gallery RUN_DIR [REPO]")
        for p in self.publish(*argv):
            print(p)
