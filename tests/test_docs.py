"""The documentation site builds with ``mkdocs build --strict``, the "Where things go" page's examples
run, and every import path and dotted name the docs, README, benchmarks and examples print exists."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# `from X import Y, Z` (also parenthesized over several lines, and inline in prose) and `import X, Y as Z` lines.
FROM = re.compile(r"\bfrom[ \t]+([A-Za-z_][\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[\w \t,]+)")
IMPORT = re.compile(r"^[ \t]*(?:>>>[ \t]*)?import[ \t]+([\w.]+(?:[ \t]+as[ \t]+\w+)?(?:[ \t]*,[ \t]*[\w.]+"
                    r"(?:[ \t]+as[ \t]+\w+)?)*)", re.M)
# `landscape.x.y`, `analyses.x`, `figures.x` written in backticks (a module, or a name in one).
DOTTED = re.compile(r"`((?:landscape|analyses|figures)(?:\.[A-Za-z_]\w*)+)")


def documented_sources() -> Iterator[tuple[str, str]]:
    """(file, text) of README.md, BENCHMARKS*.md, docs/**/*.md, examples/*.py and the notebooks' cells."""
    files = [ROOT / "README.md", *sorted(ROOT.glob("BENCHMARKS*.md")), *sorted((ROOT / "docs").rglob("*.md")),
             *sorted((ROOT / "examples").glob("*.py"))]
    for f in files:
        yield str(f.relative_to(ROOT)), f.read_text(encoding="utf-8")
    for nb in sorted((ROOT / "examples").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        yield str(nb.relative_to(ROOT)), "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def documented_imports() -> dict[tuple[str, str | None], list[str]]:
    """(module, name or None) -> the files that print that import."""
    found: dict[tuple[str, str | None], list[str]] = {}
    for where, text in documented_sources():
        for m in FROM.finditer(text):
            for part in m.group(2).strip("()").replace("\n", " ").split(","):
                if part.strip():
                    found.setdefault((m.group(1), part.split()[0]), []).append(where)
        for m in IMPORT.finditer(text):
            for part in m.group(1).split(","):
                found.setdefault((part.split()[0], None), []).append(where)
    return found


def documented_dotted() -> dict[str, list[str]]:
    """Dotted ``landscape``/``analyses``/``figures`` paths in backticks -> the files that print them."""
    found: dict[str, list[str]] = {}
    for where, text in documented_sources():
        if where.endswith(".md"):
            for m in DOTTED.finditer(text):
                found.setdefault(m.group(1), []).append(where)
    return found


def _resolves(path: str) -> bool:
    """Import the longest module prefix of ``path``, then look the rest up as attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_documented_import_path_imports():
    imports = documented_imports()
    assert len(imports) > 40 and ("landscape.models.default_model", "load_default") in imports
    bad = []
    for (module, name), where in sorted(imports.items(), key=str):
        if module == "__future__":
            continue
        try:
            mod = importlib.import_module(module)
            if name is not None and not hasattr(mod, name):
                importlib.import_module(f"{module}.{name}")
        except ImportError as exc:
            bad.append(f"{'from ' + module + ' import ' + name if name else 'import ' + module} "
                       f"(in {', '.join(sorted(set(where)))}): {exc}")
    assert not bad, "documented imports that fail; point the docs at the real module paths:\n" + "\n".join(bad)


def test_every_documented_dotted_name_exists():
    dotted = documented_dotted()
    assert len(dotted) > 15
    bad = [f"{path} (in {', '.join(sorted(set(where)))})" for path, where in sorted(dotted.items())
           if not _resolves(path)]
    assert not bad, "documented names that do not exist; update the docs:\n" + "\n".join(bad)


def test_retired_module_paths_are_not_documented():
    retired = ["landscape.fisher_scores", "landscape.scan_store", "landscape.hessian", "landscape.scan",
               "landscape.io", "landscape.li_hdf5"]
    for where, text in documented_sources():
        for path in retired:
            assert not re.search(re.escape(path) + r"(?![\w.])", text), f"{where} names the retired {path}"


def test_every_public_module_has_a_reference_page():
    import pkgutil

    pages = "\n".join(f.read_text(encoding="utf-8") for f in (ROOT / "docs" / "reference").glob("*.md"))
    documented = set(re.findall(r"^::: ([\w.]+)", pages, flags=re.M))
    missing = []
    for package in ("landscape", "analyses", "figures"):
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            parts = info.name.split(".")
            if not any(p.startswith("_") for p in parts) and info.name not in documented:
                missing.append(info.name)
    assert not missing, ("modules without an API reference entry; add a line `::: NAME` to the subpackage's page "
                         "in docs/reference/:\n" + "\n".join(missing))


def python_blocks(page: Path) -> list[str]:
    """The ```python code blocks of a Markdown page, in order."""
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def test_extending_page_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks(ROOT / "docs" / "extending.md")
    assert len(blocks) >= 7, "docs/extending.md lost its worked examples"
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("docs_extending")  # a real module, so dataclasses defined on the page resolve
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/extending.md (python block {i + 1})", "exec"), module.__dict__)


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]' (the test extra has it)")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings-python is not installed: "
                                                              "pip install -e '.[docs]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"mkdocs build --strict failed after {seconds:.0f} s:\n{proc.stderr[-4000:]}"
    for page in ("index.html", "extending/index.html", "reference/curvature/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    assert "register_eigensolver" in (tmp_path / "site" / "reference" / "curvature" / "index.html").read_text()
