"""``landscape scan``: a 1D curve or 2D surface along filter-normalized random directions.

Example::

    landscape scan default --dims 2 --grid 21 --range -1 1 --normalization filter --out runs/scan
    torchrun --nproc_per_node=2 -m analyses.cli scan CKPT --dims 2 --grid 21 --out runs/scan --resume

Writes ``<out>/scan_{1d,2d}.npz`` (coordinates, values, completion mask, metadata), for 2D also
``surface.h5`` in Li et al.'s HDF5 layout, and ``summary.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from analyses.cli import add_common_arguments, add_data_arguments, add_range_argument, parse_range

NAME = "scan"
HELP = "loss along filter-normalized random directions (1D curve or 2D surface), resumable, torchrun-aware"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``landscape scan``."""
    add_common_arguments(parser)
    parser.add_argument("--dims", type=int, choices=(1, 2), default=2, help="1: a curve, 2: a surface (default)")
    parser.add_argument("--grid", type=int, nargs="+", default=[21], metavar="N",
                        help="points per axis (≥ 2): one number, or NX NY for a non-square grid (default 21)")
    add_range_argument(parser, what="coefficient range of the x axis")
    parser.add_argument("--yrange", type=float, nargs="+", default=None, metavar="R | LO HI",
                        help="coefficient range of the y axis (default: --range)")
    parser.add_argument("--normalization", choices=("filter", "tensor", "model", "none"), default="filter")
    parser.add_argument("--one-dim", choices=("zero", "filter", "radial"), default="zero",
                        help="biases/LayerNorm: zero (default), one filter, or radial (d = θ, Li et al.)")
    parser.add_argument("--metrics", nargs="+", choices=("loss", "accuracy"), default=["loss", "accuracy"])
    add_data_arguments(parser)
    parser.add_argument("--batch-points", type=int, default=1, help="grid points per vmapped call (≥ 1; small models)")
    parser.add_argument("--resume", action="store_true", help="compute only the points missing from the output file")


def _grid(args: argparse.Namespace) -> tuple[int, int]:
    """(NX, NY) from --grid, refused before any loading when it cannot make a grid."""
    if args.out is None:
        raise ValueError("--out is required: the folder for scan_*.npz, surface.h5 and summary.json.")
    if len(args.grid) > 2:
        raise ValueError(f"--grid takes one or two integers (NX [NY]), got {len(args.grid)}.")
    if any(n < 2 for n in args.grid):
        raise ValueError(f"--grid needs at least 2 points per axis, got {args.grid}: a 1-point grid is the corner "
                         "of the range, not the origin (for the loss at θ₀ alone, use landscape hessian or fisher).")
    return args.grid[0], args.grid[1] if len(args.grid) > 1 else args.grid[0]


def _scan(args: argparse.Namespace, target: Any, nx: int, ny: int) -> Any:
    """The 1D curve or 2D surface along seeded filter-normalized directions, checkpointed under --out."""
    from landscape import scans
    from landscape.scans import directions

    model, out = target.model, Path(args.out)
    xr = parse_range(args.range)
    yr = parse_range(args.yrange, "--yrange") if args.yrange else xr
    kw = dict(normalization=args.normalization, one_dim=args.one_dim)
    d1 = directions.random(model, seed=args.seed, **kw)
    xs = np.linspace(xr[0], xr[1], nx)
    common = dict(metrics=tuple(args.metrics), resume=args.resume, progress=not args.no_progress,
                  batch_points=args.batch_points)
    if args.dims == 1:
        return scans.scan_1d(model, target.objective, target.data, d1, xs, path=out / "scan_1d.npz", **common)
    d2 = directions.random(model, seed=args.seed + 1, **kw)
    ys = np.linspace(yr[0], yr[1], ny)
    return scans.scan_2d(model, target.objective, target.data, d1, d2, xs, ys, path=out / "scan_2d.npz", **common)


def _write(args: argparse.Namespace, res: Any, world_size: int) -> None:
    """scan_*.npz, surface.h5 (2D, with h5py) and summary.json under --out."""
    from landscape.util.files import write_json

    out = Path(args.out)
    name = "scan_1d.npz" if args.dims == 1 else "scan_2d.npz"
    res.save(out / name)
    files = [name]
    if args.dims == 2:
        try:
            res.to_h5(out / "surface.h5")
            files.append("surface.h5")
        except ImportError:
            pass
    loss = res.values["loss"]
    write_json(out / "summary.json", {
        "command": "scan", "checkpoint": args.checkpoint, "dims": args.dims, "grid": list(loss.shape),
        "n_done": res.n_done, "loss_min": float(np.nanmin(loss)) if np.isfinite(loss).any() else None,
        "loss_max": float(np.nanmax(loss)) if np.isfinite(loss).any() else None,
        "nonfinite_points": int(res.nonfinite.sum()), "files": files, "directions": res.meta["directions"],
        "timing": res.meta.get("timing"), "world_size": world_size,
    })
    print(f"landscape scan: {res.n_done}/{res.done.size} points -> {out / name}")


def run(args: argparse.Namespace) -> int:
    """Load the target, scan, and write the files (rank 0 only under torchrun)."""
    from analyses.common import load_target, read_texts
    from landscape import util

    nx, ny = _grid(args)
    ctx = util.dist_context()
    texts = read_texts(args.texts)
    target = load_target(args.checkpoint, examples=args.examples if args.examples is not None else 64,
                         batch_size=args.batch_size, device=args.device, seed=args.seed, texts=texts,
                         max_length=args.max_length, tokenizer=args.tokenizer, allow_unk=args.allow_unk)
    if ctx.is_main:
        from analyses.cli.eta import announce, time_point

        announce((nx if args.dims == 1 else nx * ny) / ctx.world_size,
                 time_point(target.model, target.objective, target.data), "points")
    res = _scan(args, target, nx, ny)
    res.meta["target"] = {"name": target.name, "task": target.task,
                          **{k: v for k, v in target.meta.items() if isinstance(v, (str, int, float))},
                          "notes": target.meta.get("notes", [])}
    for note in target.meta.get("notes", []):
        print(f"note: {note}")
    if ctx.is_main:
        _write(args, res, ctx.world_size)
    return 0
