r"""Side by side with the peers: hessian-eigenthings 1.0.0a5 and curvlinops, on the default model.

    pip install --no-deps hessian-eigenthings==1.0.0a5 curvlinops-for-pytorch einops einconv opt-einsum \\
        linear_operator backpack-for-pytorch          # never a different torch
    python bench/bench_peers.py            # prints Markdown rows (with the load average)
    python bench/bench_peers.py --quick    # a few sequences and small budgets: checks that it runs

The same batch (our ``MaskedLM`` masks, fixed), the same loss (Hugging Face's own MLM loss,
``model(**batch).loss``: the mean cross-entropy over the labelled tokens) and the default model.
Rows: HVP / gradient for each method of each library (ours: double backward, forward-over-reverse,
finite differences, GGN; hessian-eigenthings: autograd, finite differences, GGN; curvlinops:
Hessian, GGN); top eigenvalue to a true relative error of 1e-3 (wall incl. construction and
matvecs; the truth is our exact Lanczos to 1e-6); Hutch++ trace with a fixed matvec budget and
its error against a long Hutchinson run; peak RSS growth per row (``/proc/self/status`` VmHWM,
reset through ``clear_refs``). A peer that fails records its error as its row.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from analyses.cli.eta import timed  # noqa: E402


def peak_rss_reset() -> None:
    """Reset the peak resident set size (Linux ``clear_refs``; silently skipped elsewhere)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak resident set size (VmHWM) in MiB, or nan."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def setup(quick: bool) -> tuple[Any, dict[str, torch.Tensor], list[torch.Tensor]]:
    """The default model, one HF batch with fixed MLM labels, and its trainable parameters."""
    from landscape import objectives
    from landscape.models.default_model import load_default

    dm = load_default(progress=False)
    model = dm.model.eval()
    raw = dm.heldout_batches(batch_size=4 if quick else 8, max_examples=4 if quick else 8)[0]
    prep = objectives.MaskedLM(mask_prob=0.15, seed=0).prepare(raw, model)
    batch = {k: prep[k] for k in ("input_ids", "attention_mask", "labels")}
    params = list(dict.fromkeys(p for p in model.parameters() if p.requires_grad))
    return model, batch, params


def ours(model: Any, batch: dict, method: str) -> Any:
    """Our operator on the HF loss: ``method`` a Hessian mode or ``"ggn"``."""
    from landscape import curvature, objectives

    obj = objectives.HFLoss()
    if method == "ggn":
        return curvature.GGNOperator(model, obj, [batch], check_determinism=False)
    return curvature.HessianOperator(model, obj, [batch], mode=method, check_determinism=False, reuse_graph=False)


def eigenthings(model: Any, batch: dict, method: str) -> Any:
    """hessian-eigenthings' operator (``autograd``, ``finite_difference`` or ``ggn``)."""
    import hessian_eigenthings as he

    if method == "ggn":
        return he.GGNOperator(model, [batch], he.hf_lm_forward(), he.hf_lm_loss_of_output())
    return he.HessianOperator(model, [batch], he.hf_lm_loss(), method=method)  # type: ignore[arg-type]


def curvlinops_op(model: Any, batch: dict, params: list[torch.Tensor], method: str) -> Any:
    """The curvlinops Hessian or GGN of the mean token cross-entropy (= the HF loss)."""
    import curvlinops as cl

    x = {k: batch[k] for k in ("input_ids", "attention_mask")}
    y = batch["labels"].reshape(-1)

    class TokenLogits(torch.nn.Module):  # curvlinops wants a module: logits [tokens, vocab]
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, inputs: Any) -> torch.Tensor:
            logits = self.inner(**inputs).logits
            return logits.reshape(-1, logits.shape[-1])

    cls = cl.HessianLinearOperator if method == "hessian" else cl.GGNLinearOperator
    return cls(TokenLogits(), torch.nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False,
               batch_size_fn=lambda inputs: inputs["input_ids"].shape[0])


def matvec_fn(lib: str, op: Any, v: torch.Tensor) -> Callable[[], Any]:
    """One product with the flat vector ``v`` in each library's own calling convention."""
    if lib == "ours":
        d = op.from_flat(v)
        return lambda: op.matvec(d)
    if lib == "eigenthings":
        return lambda: op.matvec(v)
    return lambda: op @ v


def gradient_time(model: Any, batch: dict, params: list[torch.Tensor], repeats: int) -> float:
    """Seconds per gradient of the HF loss (the floor the ratios divide by)."""
    def grad() -> None:
        torch.autograd.grad(model(**batch).loss, params, allow_unused=True)
    return timed(grad, warmup=True, repeat=repeats)


def product_rows(model: Any, batch: dict, params: list[torch.Tensor], repeats: int) -> list[tuple[str, str]]:
    """(figure, measured) rows: HVP / gradient for every method of every library."""
    t_grad = gradient_time(model, batch, params, repeats)
    dim = sum(p.numel() for p in params)
    v = torch.randn(dim, generator=torch.Generator().manual_seed(0))
    cases: list[tuple[str, str, Callable[[], Any]]] = [
        *[("ours", m, lambda m=m: ours(model, batch, m)) for m in
          ("double_backward", "forward_over_reverse", "finite_difference", "ggn")],
        *[("eigenthings", m, lambda m=m: eigenthings(model, batch, m))
          for m in ("autograd", "finite_difference", "ggn")],
        *[("curvlinops", m, lambda m=m: curvlinops_op(model, batch, params, m)) for m in ("hessian", "ggn")],
    ]
    rows = []
    for lib, method, make in cases:
        peak_rss_reset()
        base = peak_rss_mib()
        try:
            op = make()
            t = timed(matvec_fn(lib, op, v), warmup=True, repeat=repeats)
            rows.append((f"{lib} {method}: product / gradient", f"{t / t_grad:.2f} ({t * 1e3:.0f} ms, gradient "
                         f"{t_grad * 1e3:.0f} ms; peak RSS +{peak_rss_mib() - base:.0f} MiB)"))
        except Exception as exc:  # noqa: BLE001 - a failing peer is a row
            rows.append((f"{lib} {method}: product / gradient", f"failed: {type(exc).__name__}: {str(exc)[:100]}"))
    return rows


def spectrum_rows(model: Any, batch: dict, quick: bool) -> list[tuple[str, str]]:
    """Top eigenvalue to 1e-3 true relative error, and a fixed-budget Hutch++ trace, ours and the peers'."""
    from landscape import curvature

    exact = ours(model, batch, "double_backward")
    truth = float(curvature.top_eigenvalues(exact, k=1, tol=1e-6).values[0])
    rows = []
    for lib, method in (("ours", "double_backward"), ("ours", "finite_difference"), ("eigenthings", "autograd"),
                        ("eigenthings", "finite_difference")):
        peak_rss_reset()
        base = peak_rss_mib()
        try:
            t0 = time.perf_counter()
            if lib == "ours":
                op = ours(model, batch, method)
                r = curvature.top_eigenvalues(op, k=1, tol=1e-3)
                val, n = float(r.values[0]), r.n_matvecs
            else:
                import hessian_eigenthings as he

                op = eigenthings(model, batch, method)
                res = he.lanczos(op, k=1, tol=1e-3, seed=0)
                val, n = float(res.eigenvalues[0]), res.iterations
            dt = time.perf_counter() - t0
            rows.append((f"{lib} {method}: top eigenvalue to 1e-3", f"{dt:.1f} s, {n} matvecs, true rel. error "
                         f"{abs(val - truth) / abs(truth):.1e} (peak RSS +{peak_rss_mib() - base:.0f} MiB)"))
        except Exception as exc:  # noqa: BLE001
            rows.append((f"{lib} {method}: top eigenvalue to 1e-3", f"failed: {type(exc).__name__}: {str(exc)[:100]}"))
    rows.extend(trace_rows(model, batch, exact, 9 if quick else 99, 20 if quick else 400))
    return rows


def trace_rows(model: Any, batch: dict, exact: Any, budget: int, long: int) -> list[tuple[str, str]]:
    """Hutch++ with ``budget`` matvecs against a ``long``-matvec Hutchinson reference (target: 1%)."""
    from landscape import curvature

    ref = curvature.trace(exact, num_matvecs=long, method="hutchinson").estimate
    rows = []
    for lib in ("ours", "eigenthings"):
        try:
            t0 = time.perf_counter()
            if lib == "ours":
                op = ours(model, batch, "double_backward")
                est = curvature.trace(op, num_matvecs=budget, method="hutch++").estimate
            else:
                import hessian_eigenthings as he

                peer = eigenthings(model, batch, "autograd")
                est = he.trace(peer, num_matvecs=budget, method="hutch++", seed=0).estimate
            rows.append((f"{lib}: Hutch++ trace, {budget} matvecs", f"{time.perf_counter() - t0:.1f} s, "
                         f"{abs(est - ref) / abs(ref) * 100:.1f}% from a {long}-matvec Hutchinson run"))
        except Exception as exc:  # noqa: BLE001
            rows.append((f"{lib}: Hutch++ trace", f"failed: {type(exc).__name__}: {str(exc)[:100]}"))
    return rows


def main() -> int:
    """Run every section and print the Markdown rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny batch and small budgets (checks that it runs)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    import _report

    model, batch, params = setup(a.quick)
    rows: list[tuple[str, str]] = []
    for section in (lambda: product_rows(model, batch, params, 1 if a.quick else a.repeats),
                    lambda: spectrum_rows(model, batch, a.quick)):
        try:
            rows.extend(section())
        except Exception:  # noqa: BLE001 - report and go on
            rows.append(("section failed", traceback.format_exc().splitlines()[-1][:150]))
    tokens = f"{batch['input_ids'].shape[0]}x{batch['input_ids'].shape[1]}"
    _report.print_table([_report.row(f"{fig}, default model {tokens}", meas, "reported", None) for fig, meas in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
