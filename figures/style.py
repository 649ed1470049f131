"""House style for every figure: fonts, colour-blind-safe palette, units, saving.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``), never through
``pyplot``: no global figure registry holds them (nothing to close, no leak in loops), no GUI
backend is needed, and saving picks the canvas from the file suffix (Agg for PNG). In Jupyter a
returned ``Figure`` displays inline as the cell's value. To show one in a script window,
``figures.style.show(fig)`` hands it to pyplot.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
from cycler import cycler
from matplotlib.figure import Figure

DPI = 150
#: Okabe & Ito (2008) colour-blind-safe palette, black last.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: perceptually uniform, colour-blind-safe sequential map for surfaces.
CMAP = "viridis"
SAVE_FORMATS = (".png", ".pdf", ".svg")

RC: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 12,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.8,
    "axes.prop_cycle": cycler(color=list(PALETTE)),
    "image.cmap": CMAP,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,  # embed TrueType: editable text in PDF
    "svg.fonttype": "none",
}

#: axis labels with units, by metric name.
LABELS = {
    "loss": "loss (nats per token)",
    "test_loss": "test loss (nats per token)",
    "accuracy": "accuracy (fraction)",
    "test_acc": "test accuracy (fraction)",
    "alpha": "α (step along the direction, × filter norm)",
    "x": "α (direction 1, × filter norm)",
    "y": "β (direction 2, × filter norm)",
    "fisher": "mean Fisher score (grad², nats²)",
    "eigenvalue": "Hessian eigenvalue λ (nats / unit²)",
    "trace": "Hessian trace (nats / unit²)",
    "density": "spectral density (per unit λ)",
}


def label(name: str) -> str:
    """Axis label with units for a metric name; unknown names come back unchanged."""
    return LABELS.get(name, name)


def color(i: int) -> str:
    """The i-th palette colour (cycling)."""
    return PALETTE[i % len(PALETTE)]


@contextlib.contextmanager
def context() -> Iterator[None]:
    """Apply the house rcParams for building and saving one figure."""
    with matplotlib.rc_context(RC):  # type: ignore[arg-type]  # stubs list every rc key as a Literal
        yield


def new_figure(width: float = 6.0, height: float = 4.0, dpi: int = DPI) -> Figure:
    """A pyplot-free ``Figure`` of ``width x height`` inches with constrained (tight) layout.

    Saved PNGs are ``round(width * dpi) x round(height * dpi)`` pixels.
    """
    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def save(fig: Figure, path: str | os.PathLike, dpi: int | None = None) -> Path:
    """Save ``fig`` to PNG, PDF or SVG (format from the suffix); creates parent folders."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAVE_FORMATS:
        raise ValueError(f"cannot save a figure as {path.name!r}: use a .png, .pdf or .svg suffix.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with context():
        fig.savefig(path, dpi=dpi or fig.dpi, format=suffix[1:])
    return path


def finish(fig: Figure, save_to: str | os.PathLike | None, dpi: int | None = None) -> Figure:
    """Save when a path is given, and return the figure."""
    if save_to is not None:
        save(fig, save_to, dpi=dpi)
    return fig


def show(fig: Figure) -> None:  # pragma: no cover - needs a display
    """Show a pyplot-free figure in a window (scripts); notebooks display returned figures as is."""
    import matplotlib.pyplot as plt

    manager = plt.figure().canvas.manager
    if manager is None:  # a non-interactive backend: nothing to show
        return
    manager.canvas.figure = fig
    fig.set_canvas(manager.canvas)
    plt.show()
