"""``landscape plot RESULT --kind ...``: re-draw a figure from result files, computing no loss.

RESULT may be an analysis output folder (or its ``result.json``), a scan file (``.npz`` from
``landscape scan``, or an ``.h5`` in Li et al.'s layout), Fisher scores (``.safetensors`` or their
``.json``), or a ``landscape hessian`` JSON with a spectral density.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

NAME = "plot"
HELP = "re-draw figures from result files (analysis folders, scans, Fisher scores, Hessian spectra)"
SURFACE_KINDS = ("contour", "contourf", "heatmap", "surface3d", "vtp")
KINDS = ("all", *SURFACE_KINDS, "curve", "fisher", "convergence", "density", "metrics", "endpoints", "audit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``landscape plot``."""
    parser.add_argument("result", help="result folder, result.json, .npz/.h5 scan, Fisher .safetensors/.json, or "
                                       "hessian .json")
    parser.add_argument("--kind", default="all", choices=KINDS, help="figure to draw (default: every figure the result "
                                                                     "supports)")
    parser.add_argument("--metric", default="loss", help="metric of a scan to draw (loss or accuracy)")
    parser.add_argument("--out", default=None, help="output file (.png/.pdf/.svg, or .vtp); default: beside the result")
    parser.add_argument("--format", default="png", choices=["png", "pdf", "svg"], help="format when --out is not given")


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None


def _scan_kind(path: Path) -> str:
    if path.suffix == ".h5":
        from landscape.scans.li_hdf5 import read_li_h5

        return "surface" if read_li_h5(path)["ycoordinates"] is not None else "curve"
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return "surface" if "ys" in z.files or "ycoordinates" in z.files else "curve"
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is damaged or truncated ({type(exc).__name__}); re-run the scan that wrote "
                         "it.") from None


def _default_out(src: Path, kind: str, fmt: str) -> Path:
    stem = src.stem if src.is_file() else src.name
    return (src.parent if src.is_file() else src) / f"{stem}_{kind}.{'vtp' if kind == 'vtp' else fmt}"


def _draw_result(folder: Path, kind: str, fmt: str) -> list[Path]:
    """Every (or the ``kind``) figure of an analysis folder, drawn by its own report module."""
    if not (folder / "result.json").is_file():
        raise FileNotFoundError(f"{folder} has no result.json: give an analysis output folder or a result file.")
    doc = _load_json(folder / "result.json")
    if "arm_p" in doc:
        from analyses.fisher_sharpness.report import render

        paths = render(folder, doc, fmt=fmt)
        if kind != "all":
            paths = {k: v for k, v in paths.items()
                     if k.startswith(kind) or (kind in SURFACE_KINDS and k.startswith("surfaces"))}
            if not paths:
                raise ValueError(f"a fisher-sharpness result has no {kind!r} figure; use fisher, convergence, "
                                 "curves, surfaces or endpoints.")
        return list(paths.values())
    from analyses.audit.report import render as render_audit

    return list(render_audit(folder, doc, fmt=fmt).values())


def draw(result: str | Path, kind: str = "all", metric: str = "loss", out: str | Path | None = None,
         fmt: str = "png") -> list[Path]:
    """Draw ``kind`` from ``result``; returns the written paths."""
    src = Path(result)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist.")
    if src.is_dir() or src.name == "result.json":
        return _draw_result(src if src.is_dir() else src.parent, kind, fmt)
    if src.suffix in (".npz", ".h5"):
        shape = _scan_kind(src)
        kind = ("contourf" if shape == "surface" else "curve") if kind == "all" else kind
        target = Path(out) if out else _default_out(src, kind, fmt)
        if shape == "curve":
            if kind != "curve":
                raise ValueError(f"{src} holds a 1D curve; use --kind curve.")
            from figures.curves import plot_curves

            plot_curves({src.stem: src}, metric=metric, save=target)
        elif kind == "vtp":
            from figures.vtp import surface_file_to_vtp

            surface_file_to_vtp(src, target, metric=metric)
        elif kind in SURFACE_KINDS:
            from figures.surfaces import plot_surface_file

            plot_surface_file(src, kind=kind, metric=metric, save=target)
        else:
            raise ValueError(f"{src} holds a 2D surface; use --kind one of {', '.join(SURFACE_KINDS)}.")
        return [target]
    if src.suffix in (".safetensors", ".json"):
        return _draw_json_like(src, kind, out, fmt)
    raise ValueError(f"cannot plot {src.name}: expected a result folder, .npz, .h5, .safetensors or .json file.")


def _draw_json_like(src: Path, kind: str, out: str | Path | None, fmt: str) -> list[Path]:
    if src.suffix == ".safetensors" or "convergence" in (doc := _load_json(src)) and "names" in doc:
        from landscape.fisher import FisherDiagonal

        scores = FisherDiagonal.load(src)
        kinds = ["fisher", "convergence"] if kind == "all" else [kind]
        written = []
        for k in kinds:
            target = Path(out) if out and len(kinds) == 1 else _default_out(src, k, fmt)
            if k == "fisher":
                from figures.fisher import plot_fisher

                plot_fisher(scores.per_tensor(), scores.per_layer(), save=target)
            elif k == "convergence":
                if scores.convergence is None:
                    if kind == "all":
                        continue
                    raise ValueError(f"{src} was saved without convergence curves.")
                from figures.convergence import plot_convergence

                plot_convergence(scores.convergence.to_dict(), save=target)
            else:
                raise ValueError(f"Fisher scores support --kind fisher or convergence, not {k!r}.")
            written.append(target)
        return written
    density = doc.get("density") if isinstance(doc.get("density"),
                                               dict) else (doc if "grid" in doc and "density" in doc else None)
    if density is not None and kind in ("all", "density"):
        from figures.spectrum import plot_spectral_density

        target = Path(out) if out else _default_out(src, "density", fmt)
        eig = (doc.get("top_eigenvalues") or {}).get("values") if isinstance(doc.get("top_eigenvalues"), dict) else None
        plot_spectral_density(density["grid"], density["density"], eigenvalues=eig, save=target)
        return [target]
    if {"n", "spearman"} <= set(doc) and kind in ("all", "convergence"):
        from figures.convergence import plot_convergence

        target = Path(out) if out else _default_out(src, "convergence", fmt)
        plot_convergence(doc, save=target)
        return [target]
    raise ValueError(f"{src} holds nothing that --kind {kind} can draw.")


def run(args: argparse.Namespace) -> int:
    """Draw the requested figures from a result file or folder."""
    for path in draw(args.result, args.kind, args.metric, args.out, args.format):
        print(path)
    return 0
