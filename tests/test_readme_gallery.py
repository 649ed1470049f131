"""The README quotes the committed gallery report's answers word for word, so they cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyses.fisher_sharpness.gallery import GALLERY

ROOT = Path(__file__).resolve().parents[1]


def test_readme_answers_equal_the_committed_report():
    report = (ROOT / "figures" / "gallery" / "fisher_sharpness_report.md").read_text()
    readme = (ROOT / "README.md").read_text()
    answers = GALLERY.answers_from_report(report)
    assert len(answers) >= 2 and any("Arm P" in a for a in answers) and any("Arm E" in a for a in answers)
    assert GALLERY.answers_in_readme(readme) == answers, (
        "README's fisher-sharpness answers differ from figures/gallery/fisher_sharpness_report.md; "
        "regenerate with: python -m analyses.fisher_sharpness.gallery runs/fisher-sharpness")


def test_committed_gallery_images_exist():
    report = (ROOT / "figures" / "gallery" / "fisher_sharpness_report.md").read_text()
    import re

    for name in re.findall(r"\]\((fisher_sharpness_[^)]+\.png)\)", report):
        assert (ROOT / "figures" / "gallery" / name).is_file(), name
    readme = (ROOT / "README.md").read_text()
    for name in re.findall(r"\]\(figures/gallery/([^)]+\.png)\)", readme):
        assert (ROOT / "figures" / "gallery" / name).is_file(), name


def test_publish_copies_figures_and_rewrites_the_readme_block(tmp_path):
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "figures" / "endpoints.png").write_bytes(b"png")
    (run / "report.md").write_text("# r\n\n## The two answers\n\n- **Arm P**: yes.\n- **Arm E**: no.\n\n## Setup\n\n"
                                   "![endpoints](figures/endpoints.png)\n")
    repo = tmp_path / "repo"
    (repo / "figures" / "gallery").mkdir(parents=True)
    (repo / "figures" / "gallery" / "fisher_sharpness_stale.png").write_bytes(b"old")
    (repo / "README.md").write_text(f"intro\n{GALLERY.start}\n- old line\n{GALLERY.end}\noutro\n")
    GALLERY.publish(run, repo)
    readme = (repo / "README.md").read_text()
    assert GALLERY.answers_in_readme(readme) == ["- **Arm P**: yes.", "- **Arm E**: no."]
    assert readme.startswith("intro\n") and readme.endswith("outro\n")
    assert not (repo / "figures" / "gallery" / "fisher_sharpness_stale.png").exists()
    assert "](fisher_sharpness_endpoints.png)" in (repo / "figures" / "gallery" / "fisher_sharpness_report.md").read_text()
    with pytest.raises(ValueError, match="markers"):
        GALLERY.replace_answers("no markers here", ["- x"])
