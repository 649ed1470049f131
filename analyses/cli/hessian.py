"""``landscape hessian [CHECKPOINT]``: top eigenvalues, trace and spectral density of the loss Hessian."""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path
from typing import Any, TextIO

from analyses.cli import add_common_arguments, add_data_arguments, add_include_argument
from analyses.common import read_texts

NAME = "hessian"
HELP = "Hessian curvature of the loss: top eigenvalues (Lanczos), trace (Hutch++), eigenvalue density (SLQ)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``landscape hessian``."""
    add_common_arguments(parser)
    parser.set_defaults(examples=32)
    add_data_arguments(parser)
    parser.add_argument("--top-k", type=int, default=1, help="number of top eigenvalues (≥ 0; 0 to skip)")
    parser.add_argument("--which", default="largest", choices=["largest", "smallest", "magnitude"])
    parser.add_argument("--method", default="lanczos", choices=["lanczos", "arpack", "power"])
    parser.add_argument("--tol", type=float, default=1e-3, help="relative eigenvalue tolerance")
    parser.add_argument("--trace", action="store_true", help="estimate the trace")
    parser.add_argument("--trace-method", default="hutch++", choices=["hutch++", "hutchinson"])
    parser.add_argument("--trace-matvecs", type=int, default=30,
                        help="matvecs for the trace (hutch++: ≥ 3, and ≥ 6 for an error estimate; hutchinson: ≥ 2)")
    parser.add_argument("--density", action="store_true", help="estimate the eigenvalue density (SLQ)")
    parser.add_argument("--density-runs", type=int, default=4, help="SLQ runs (probe vectors, ≥ 1)")
    parser.add_argument("--lanczos-steps", type=int, default=32, help="Lanczos steps per SLQ run (≥ 1)")
    parser.add_argument("--mode", default="auto", choices=["auto", "double_backward", "forward_over_reverse"])
    add_include_argument(parser)
    parser.add_argument("--fisher", action="store_true", help="also the empirical-Fisher spectrum, for comparison")


def _analyse(op: Any, args: argparse.Namespace) -> dict[str, Any]:
    from landscape import curvature

    out: dict[str, Any] = {"operator": op.describe()}
    if args.top_k > 0:
        out["eigenvalues"] = curvature.top_eigenvalues(op, k=args.top_k, tol=args.tol, method=args.method,
                                                     which=args.which, seed=args.seed).to_dict()
    if args.trace:
        r = curvature.trace(op, num_matvecs=args.trace_matvecs, method=args.trace_method, seed=args.seed)
        out["trace"] = {**r.to_dict(), "per_dim": r.estimate / op.dim}
    if args.density:
        out["density"] = curvature.spectral_density(op, num_runs=args.density_runs, lanczos_steps=args.lanczos_steps,
                                                  seed=args.seed).to_dict()
    out["n_matvecs"] = op.n_matvecs
    return out


def _with_error(trace: dict[str, Any]) -> str:
    """``estimate ± stderr``, or the estimate with "no error estimate" when there is none."""
    stderr = trace.get("stderr")
    if stderr is None or not math.isfinite(stderr):
        return f"{trace['estimate']:.5g} (no error estimate)"
    return f"{trace['estimate']:.5g} ± {stderr:.2g}"


def table(results: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one column per operator (Hessian, Fisher)."""
    rows: list[tuple[str, list[str]]] = []
    ops = list(results)
    first = results[ops[0]]
    rows.append(("dimension", [str(results[o]["operator"]["dim"]) for o in ops]))
    rows.append(("loss", [f"{results[o]['operator']['loss']:.5g}" for o in ops]))
    if "eigenvalues" in first:
        for i in range(len(first["eigenvalues"]["values"])):
            rows.append((f"eigenvalue {i + 1}", [f"{results[o]['eigenvalues']['values'][i]:.6g}" for o in ops]))
    if "trace" in first:
        rows.append(("trace", [_with_error(results[o]["trace"]) for o in ops]))
    if "density" in first:
        rows.append(("density nodes range", [
            f"[{min(min(n) for n in results[o]['density']['nodes']):.3g}, "
            f"{max(max(n) for n in results[o]['density']['nodes']):.3g}]" for o in ops]))
    rows.append(("matvecs", [str(results[o]["n_matvecs"]) for o in ops]))
    width = max(len(r[0]) for r in rows) + 2
    col = max(18, *(len(c) + 2 for _, cs in rows for c in cs))
    lines = [" " * width + "".join(f"{o:>{col}}" for o in ops)]
    lines += [f"{name:<{width}}" + "".join(f"{c:>{col}}" for c in cells) for name, cells in rows]
    return "\n".join(lines)


def announce_products(op: Any, args: argparse.Namespace, n_ops: int = 1, stream: TextIO | None = None) -> str:
    """Print the estimated time: per operator, top-k eigenvalues (a typical Lanczos run,
    min(dim, max(20, 4k)) products), the trace's and the density's products, × ``n_ops``.

    Every rank times the product (under torchrun it is a collective); ``stream`` (default stdout)
    lets the other ranks keep the line to themselves."""
    from analyses.cli.eta import announce, time_product

    n = min(op.dim, max(20, 4 * args.top_k)) if args.top_k > 0 else 0
    n += args.trace_matvecs if args.trace else 0
    n += args.density_runs * args.lanczos_steps if args.density else 0
    return announce(n * n_ops, time_product(op), "products", stream=stream)


def run(args: argparse.Namespace) -> int:
    """Top eigenvalues, trace and spectral density of the Hessian, written under --out."""
    from analyses.common import load_target
    from landscape import curvature, util
    from landscape.params import ParamSpace
    from landscape.util import versions
    from landscape.util.files import write_json

    if args.top_k < 0:
        raise ValueError("--top-k must be ≥ 0.")
    if args.top_k == 0 and not args.trace and not args.density:
        raise ValueError("nothing to compute: pass --top-k N, --trace and/or --density.")
    start = time.perf_counter()
    target = load_target(args.checkpoint, examples=args.examples, batch_size=args.batch_size, device=args.device,
                         seed=args.seed, texts=read_texts(args.texts), max_length=args.max_length,
                         tokenizer=args.tokenizer, allow_unk=args.allow_unk)
    space = ParamSpace(target.model, include=args.include) if args.include else None
    ops: dict[str, curvature.HessianOperator | curvature.EmpiricalFisherOperator] = {
        "hessian": curvature.HessianOperator(target.model, target.objective, target.data, params=space, mode=args.mode)}
    if args.fisher:
        ops["fisher"] = curvature.EmpiricalFisherOperator(target.model, target.objective, target.data, params=space)
    is_main = util.dist_context().is_main
    announce_products(ops["hessian"], args, len(ops), stream=None if is_main else io.StringIO())
    results = {name: _analyse(op, args) for name, op in ops.items()}
    if not is_main:  # rank 0 prints and writes; the others computed the same all-reduced numbers
        return 0
    print(table(results))
    payload = {
        "checkpoint": target.meta.get("checkpoint", args.checkpoint), "n_examples": target.n_examples,
        "seed": args.seed, "include": args.include, "results": results, "versions": versions(),
        "wall_s": time.perf_counter() - start,
    }
    if args.out:
        path = Path(args.out) / "hessian.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, payload)
        print(f"\nwrote {path}")
    return 0
