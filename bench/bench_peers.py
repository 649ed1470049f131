r"""Side by side with the peers: hessian-eigenthings 1.0.0a5 and curvlinops, on the default model.

    pip install --no-deps hessian-eigenthings==1.0.0a5 curvlinops-for-pytorch einops einconv opt-einsum \\
        linear_operator backpack-for-pytorch          # never a different torch
    python bench/bench_peers.py            # prints Markdown rows (with the load average)
    python bench/bench_peers.py --quick    # a few sequences and small budgets: checks that it runs

The same batch (our ``MaskedLM`` masks, fixed), the same loss (Hugging Face's own MLM loss,
``model(**batch).loss``: the mean cross-entropy over the labelled tokens) and the default model.
Rows (each with its peak RSS growth: ``/proc/self/status`` VmHWM, reset through ``clear_refs``):

* HVP / gradient for each method of each library (ours: double backward, forward-over-reverse,
  finite differences, GGN; hessian-eigenthings: autograd, finite differences, GGN; curvlinops:
  Hessian, GGN), one product after a warm-up, median of ``--repeats``.
* Top eigenvalue to a true relative error of 1e-3. The truth is our exact Lanczos to tol 1e-6.
  Each library is driven by its own knob, in steps, each step run from scratch and timed with the
  operator's construction, until its estimate is within 1e-3 of the truth; the row is the first
  step that gets there (wall, matvecs counted by the library or by wrapping the operator's
  ``matvec``), or, where none does (a finite-difference noise floor), the best error reached.
  Ours: ``top_eigenvalues(tol=...)`` (it stops when its Ritz bound is met), and also driven by
  their knob, ``max_iter`` (the same oracle choice of the step count that their row gets). hessian-eigenthings:
  ``lanczos(max_iter=...)``: its Lanczos runs exactly ``max_iter`` steps (default 2k = 2) and its
  ``tol`` only sets the ``converged`` flags, so ``tol`` cannot make it run longer; ``which="LA"``
  (largest algebraic, as ours and the truth).
* Trace to 1%: Hutch++ with a matvec budget raised in steps (30, 90, 270 per run) until the
  relative spread of ``--trace-seeds`` independent runs (sample standard deviation / |mean|: the
  RMS error of one run, as both estimators are unbiased; no reference run is precise enough to
  judge 1% on this Hessian: 60 matvecs gave a 7% standard error) is at most 1%; where no budget
  gets there, the row lists the spread at each budget, side by side at equal matvecs.

A peer that fails on the stock model records its error as its row, and the same row is retried
with the math attention backend set by the caller (which ours does for the user). Budgets: the
full run takes about 10 min on 2 quiet cores (2 threads; under load give ``--threads 1``); ``--quick`` (4 sequences, small budgets) only checks
that the script runs.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
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
    """(figure, measured) rows: HVP / gradient for every method of every library (construction not timed;
    the gradient re-timed beside each product, so that both sides see the same machine state)."""
    dim = sum(p.numel() for p in params)
    v = torch.randn(dim, generator=torch.Generator().manual_seed(0))
    cases: list[tuple[str, str, Callable[[], Any]]] = [
        *[("ours", m, lambda m=m: ours(model, batch, m)) for m in
          ("double_backward", "forward_over_reverse", "finite_difference", "ggn")],
        *[("eigenthings", m, lambda m=m: eigenthings(model, batch, m))
          for m in ("autograd", "finite_difference", "ggn")],
        *[("curvlinops", m, lambda m=m: curvlinops_op(model, batch, params, m)) for m in ("hessian", "ggn")],
    ]

    def one(lib: str, make: Callable[[], Any]) -> str:
        peak_rss_reset()
        base = peak_rss_mib()
        op = make()
        t = timed(matvec_fn(lib, op, v), warmup=True, repeat=repeats)
        t_grad = gradient_time(model, batch, params, repeats)
        return (f"{t / t_grad:.2f} ({t * 1e3:.0f} ms, gradient {t_grad * 1e3:.0f} ms; "
                f"peak RSS +{peak_rss_mib() - base:.0f} MiB)")

    rows: list[tuple[str, str]] = []
    for lib, method, make in cases:
        rows += attempts(f"{lib} {method}: product / gradient", lambda lib=lib, make=make: one(lib, make))
    return rows


def counting(op: Any) -> Any:
    """Count a peer operator's matvecs in ``op.n_counted`` (the instance's ``matvec`` wrapped)."""
    inner = op.matvec
    op.n_counted = 0

    def matvec(v: torch.Tensor) -> torch.Tensor:
        op.n_counted += 1
        return inner(v)

    op.matvec = matvec
    return op


def attempts(label: str, fn: Callable[[], str]) -> list[tuple[str, str]]:
    """``fn``'s row; if it fails on the stock model, the error is the row, and a second row retries
    with the math attention backend set by the caller (what ours does for the user)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        return [(label, fn())]
    except Exception as exc:  # noqa: BLE001 - a failing peer is a row
        rows = [(label, f"failed: {type(exc).__name__}: {str(exc)[:100]}")]
    try:
        with sdpa_kernel(SDPBackend.MATH):
            rows.append((label + " (math attention set by the caller)", fn()))
    except Exception as exc:  # noqa: BLE001
        rows.append((label + " (math attention set by the caller)", f"failed: {type(exc).__name__}: {str(exc)[:100]}"))
    return rows


def drive(settings: Sequence[Any], run: Callable[[Any], tuple[float, int]], target: float) -> str:
    """Run ``run(setting)`` (-> error, matvecs) for each setting in turn, each timed from scratch
    (construction included), until the error is at most ``target``: that first setting is the row;
    if none gets there, the row says so with the best error reached."""
    best: tuple[float, Any, int, float] | None = None
    tried = []
    for s in settings:
        peak_rss_reset()
        base = peak_rss_mib()
        t0 = time.perf_counter()
        err, n = run(s)
        dt = time.perf_counter() - t0
        mem = f"peak RSS +{peak_rss_mib() - base:.0f} MiB"
        if err <= target:
            return f"{dt:.2f} s, {n} matvecs (first setting reaching it: {s}; error {err:.1e}; {mem})"
        tried.append(f"{s}: {err:.1e} ({n} matvecs, {dt:.1f} s)")
        if best is None or err < best[0]:
            best = (err, s, n, dt)
    assert best is not None
    return f"never reached {target:.0e}: best error {best[0]:.1e} at {best[1]}; tried " + "; ".join(tried)


def truth_value(model: Any, batch: dict) -> float:
    """The top eigenvalue by our exact (double backward) Lanczos to tol 1e-6: the reference."""
    from landscape import curvature

    return float(curvature.top_eigenvalues(ours(model, batch, "double_backward"), k=1, tol=1e-6,
                                           progress=False).values[0])


def eigen_rows(model: Any, batch: dict, truth: float, quick: bool) -> list[tuple[str, str]]:
    """Top eigenvalue to 1e-3 true relative error: each library driven by its own knob (see the module doc)."""
    from landscape import curvature

    def rel(val: float) -> float:
        return abs(val - truth) / abs(truth)

    def mine(method: str) -> Callable[[Any], tuple[float, int]]:
        def run(tol: float) -> tuple[float, int]:
            op = curvature.HessianOperator(model, _hf(), [batch], check_determinism=False,
                                           **({} if method == "defaults" else {"mode": method}))
            r = curvature.top_eigenvalues(op, k=1, tol=tol, progress=False)
            return rel(float(r.values[0])), r.n_matvecs
        return run

    def mine_capped(method: str) -> Callable[[Any], tuple[float, int]]:
        def run(max_iter: int) -> tuple[float, int]:  # their knob on ours: at most max_iter Krylov steps
            import warnings

            op = curvature.HessianOperator(model, _hf(), [batch], check_determinism=False,
                                           **({} if method == "defaults" else {"mode": method}))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "did not reach tol": the cap, not the tol, is the knob here
                r = curvature.top_eigenvalues(op, k=1, tol=1e-3, max_iter=max_iter, progress=False)
            return rel(float(r.values[0])), r.n_matvecs
        return run

    def theirs(method: str) -> Callable[[Any], tuple[float, int]]:
        def run(max_iter: int) -> tuple[float, int]:
            import hessian_eigenthings as he

            op = counting(eigenthings(model, batch, method))
            res = he.lanczos(op, k=1, max_iter=max_iter, tol=1e-3, which="LA", reorthogonalize=True, seed=0)
            return rel(float(res.eigenvalues[0])), op.n_counted
        return run

    tols = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5)
    steps = (2, 4, 8, 16, 32) if quick else (2, 4, 8, 16, 32, 64)
    rows: list[tuple[str, str]] = []
    for method in ("defaults", "finite_difference"):
        rows += attempts(f"ours {method}: top eigenvalue to 1e-3 (tol)", lambda m=method: drive(tols, mine(m), 1e-3))
        rows += attempts(f"ours {method}: top eigenvalue to 1e-3 (max_iter, their knob)",
                         lambda m=method: drive(steps, mine_capped(m), 1e-3))
    for method in ("autograd", "finite_difference"):
        rows += attempts(f"eigenthings {method}: top eigenvalue to 1e-3 (max_iter)",
                         lambda m=method: drive(steps, theirs(m), 1e-3))
    return rows


def trace_rows(model: Any, batch: dict, quick: bool, seeds: int) -> list[tuple[str, str]]:
    """Hutch++ to 1%: the budget raised in steps until the relative spread (sample standard deviation
    over ``seeds`` independent runs / |mean|: the RMS error of one run, both estimators being unbiased)
    is at most 1% (see the module doc)."""
    import numpy as np

    from landscape import curvature

    def spread(ests: list[float]) -> float:
        return float(np.std(ests, ddof=1) / abs(np.mean(ests)))

    def mine(budget: int) -> tuple[float, int]:
        ests = [curvature.trace(ours(model, batch, "double_backward"), num_matvecs=budget, method="hutch++",
                                seed=s, progress=False).estimate for s in range(seeds)]
        return spread(ests), budget // 3 * 3

    def theirs(budget: int) -> tuple[float, int]:
        import hessian_eigenthings as he

        ests, n = [], 0
        for s in range(seeds):
            op = counting(eigenthings(model, batch, "autograd"))
            ests.append(float(he.trace(op, num_matvecs=budget, method="hutch++", seed=s).estimate))
            n = op.n_counted
        return spread(ests), n

    budgets = (9, 18) if quick else (30, 90, 270)
    name = f"Hutch++ trace to 1% (spread of {seeds} seeded runs; matvecs per run; wall for all {seeds})"
    return [*attempts(f"ours: {name}", lambda: drive(budgets, mine, 0.01)),
            *attempts(f"eigenthings autograd: {name}", lambda: drive(budgets, theirs, 0.01))]


def _hf() -> Any:
    from landscape import objectives

    return objectives.HFLoss()


def main() -> int:
    """Run every section, printing each row as it comes, then the Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny batch and small budgets (checks that it runs)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trace-seeds", type=int, default=3, help="independent runs per trace budget (at least 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; under load use 1: "
                    "a 2-thread product waits on a descheduled thread, 10-60x slower)")
    a = ap.parse_args()
    import _report

    if a.threads:
        torch.set_num_threads(a.threads)

    t_start = time.perf_counter()
    print(f"{_report.machine()}; load average before: {_report.load_average()}", flush=True)
    model, batch, params = setup(a.quick)
    seeds = max(2, a.trace_seeds)
    rows: list[str] = []
    tokens = f"{batch['input_ids'].shape[0]}x{batch['input_ids'].shape[1]}"
    sections: list[tuple[str, Callable[[], list[tuple[str, str]]]]] = [
        ("products", lambda: product_rows(model, batch, params, 1 if a.quick else a.repeats)),
        ("top eigenvalue", lambda: eigen_rows(model, batch, truth_value(model, batch), a.quick)),
        ("trace", lambda: trace_rows(model, batch, a.quick, seeds)),
    ]
    for name, section in sections:
        t0 = time.perf_counter()
        try:
            got = section()
        except Exception:  # noqa: BLE001 - report and go on
            got = [(f"{name}: section failed", traceback.format_exc().splitlines()[-1][:150])]
        for fig, meas in got:
            rows.append(_report.row(f"{fig}, default model {tokens}", meas, "reported", None))
            print(f"  {fig}: {meas}", flush=True)
        print(f"[{name}] {time.perf_counter() - t0:.0f} s; load average {_report.load_average()}", flush=True)
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)
    _report.print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
