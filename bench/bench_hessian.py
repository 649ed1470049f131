"""Curvature benchmarks, ours against PyHessian 0.1 and against the gradient floor, side by side.

Run by hand:  python bench/bench_hessian.py [--quick] [--only hvp,eig,trace,memory] [--rows FILE]

1. HVP time / gradient time on a tiny BERT MLM (4 layers, hidden 128): one matvec per mode
   (double backward, forward-over-reverse, double backward with the graph reused), and ``matmat``
   with k = 1, 4, 16 per mode (time per product); one warm-up, then the median of ``--repeats``.
2. Top eigenvalue at the same *true* error: a tight Lanczos reference, then our Lanczos and
   PyHessian's power iteration each with its stopping tolerance lowered (1e-2, 3e-3, 1e-3, ...)
   until its value is within 1e-3 (relative) of the reference; matvecs (PyHessian's counted by the
   adapter) and wall time of those runs, side by side, from the same start vector.
3. Trace to 1 % relative error on a trained MLP (decaying spectrum): Hutch++ against PyHessian's
   Hutchinson, RMS error over seeds, against the exact trace from the dense Hessian.
4. Peak memory of 50 matvecs: ru_maxrss growth of a fresh subprocess for each tool.

Ends with ready-to-paste Markdown rows (``| figure | measured | target | met? | command | load average |``);
``--rows FILE`` also appends them to FILE. ``--quick`` (BERT 2x64, 3 repeats, k = 1, 4) only checks
the script; the table's rows come from the default settings (about 6 min on a quiet 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from landscape import curvature, objectives, vectors
from landscape.util import deterministic_eval, math_attention

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.pyhessian_reference
import _report
from analyses.cli.eta import timed

from tests.pyhessian_reference import PyHessianRun, pyhessian_top_eigenvalues  # noqa: E402

VOCAB, SEQ, BATCH = 1000, 64, 8


def make_bert(layers: int = 4, hidden: int = 128):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=4 * hidden, max_position_embeddings=SEQ, pad_token_id=0)
    return BertForMaskedLM(cfg).eval()


def mlm_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (BATCH, SEQ), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    obj = objectives.MaskedLM(mask_prob=0.15, seed=seed, mask_token_id=4, special_token_ids=[0, 1, 2, 3, 4])
    masked, labels = obj.mask_batch(ids, None, _MODEL)
    return {"input_ids": masked, "labels": labels}


class LogitsOnly(nn.Module):
    """``model(inputs) -> logits [B*T, V]`` so PyHessian (which only calls model(inputs)) can run BERT."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids):
        with math_attention():
            logits = self.bert(input_ids=input_ids).logits
        return logits.reshape(-1, logits.shape[-1])


def flat_ce(outputs, targets):
    return nn.functional.cross_entropy(outputs, targets.reshape(-1), ignore_index=-100)


# ----------------------------------------------------------------------------- 1. HVP / gradient


#: (label, HessianOperator keyword arguments) for the per-mode sweep
CONFIGS = [("double_backward", {"mode": "double_backward", "reuse_graph": False}),
           ("forward_over_reverse", {"mode": "forward_over_reverse", "reuse_graph": False}),
           ("reuse_graph", {"mode": "double_backward", "reuse_graph": True})]


def bench_hvp(repeats: int, ks: list[int]) -> dict:
    """Median of ``repeats`` runs after one warm-up: one gradient, one matvec per mode, and ``matmat``
    with k vectors (time per product) per mode; ratios against the gradient."""
    model = _MODEL
    batch = mlm_batch()
    obj = objectives.HFLoss()
    prepared = obj.prepare(batch, model)
    params = [p for p in model.parameters() if p.requires_grad]

    def grad():
        with deterministic_eval(model):
            s, _ = obj.loss_sum(model, prepared)
            torch.autograd.grad(s, params)

    out = {"repeats": repeats, "grad_s": timed(grad, warmup=True, repeat=repeats), "matvec": {},
           "matmat_per_product": {}}
    for label, kw in CONFIGS:
        op = curvature.HessianOperator(model, obj, [batch], check_determinism=False, **kw)
        v = op.randn(0)
        t = timed(lambda op=op, v=v: op.matvec(v), warmup=True, repeat=repeats)
        out["matvec"][label] = {"seconds": t, "ratio": t / out["grad_s"]}
        for k in ks:
            vs = [op.randn(j) for j in range(k)]
            t = timed(lambda op=op, vs=vs: op.matmat(vs), warmup=True, repeat=repeats) / k
            out["matmat_per_product"][f"{label} k={k}"] = {"seconds": t, "ratio": t / out["grad_s"], "k": k}
        op.release_graph()
        print(f"  {label:22s} matvec {out['matvec'][label]['ratio']:.2f} gradients; matmat per product: "
              + ", ".join(f"k={k} {out['matmat_per_product'][f'{label} k={k}']['ratio']:.2f}" for k in ks), flush=True)
    auto = curvature.HessianOperator(model, obj, [batch], check_determinism=False)
    out["auto"] = {"mode": auto.mode, "reuse_graph": auto.reuse_graph, "block_size": auto.block_size(max(ks)),
                   "mode_timings": auto.mode_timings}
    auto.release_graph()
    return out


def hvp_rows(r: dict, cmd: str) -> list[str]:
    rows = []
    candidates = {**{f"{k} matvec": v for k, v in r["matvec"].items()}, **r["matmat_per_product"]}
    best_label, best = min(candidates.items(), key=lambda kv: kv[1]["ratio"])
    grid = "; ".join(f"{k}: {v['ratio']:.2f}" for k, v in r["matmat_per_product"].items())
    rows.append(_report.row(f"HVP / gradient, {_SIZE}, per product amortized (best of modes × matvec / matmat k)",
                            f"{best['ratio']:.2f} ({best_label}; gradient {r['grad_s'] * 1e3:.0f} ms; all: {grid})",
                            "≤ 2.5", best["ratio"] <= 2.5, cmd))
    for label, v in r["matvec"].items():
        rows.append(_report.row(f"HVP / gradient, {_SIZE}, one matvec, {label} (median of {r['repeats']})",
                                f"{v['ratio']:.2f}", "≤ 2.5", v["ratio"] <= 2.5, cmd))
    a = r["auto"]
    rows.append(_report.row(f"HessianOperator defaults on {_SIZE}", f"mode {a['mode']}, reuse_graph {a['reuse_graph']}, "
                            f"block_size {a['block_size']}", "reported", None, cmd))
    return rows


# ----------------------------------------------------------------------------- 2. top eigenvalue

#: stopping tolerances tried, loosest first, by each method until its value is within the target of the reference
TOLS = [1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6]


def bench_eig(target: float, peer_max_iter: int) -> dict:
    """Both methods at the same *true* error: a tight Lanczos reference, then each method's own
    stopping tolerance lowered until its value is within ``target`` (relative) of the reference.

    Each run starts from PyHessian's start vector and is timed end to end, construction included
    (PyHessian builds its first-backward graph in its constructor; ours builds the operator with its
    defaults). The matvec counts are the runs' own counts; the "oracle" counts are the fewest matvecs
    after which each method's estimate is within ``target`` (not knowable without the reference).
    Both target the eigenvalue of largest magnitude (what power iteration finds; ours with
    ``which="magnitude"``), which on an untrained model can be negative.
    """
    import importlib

    ph = importlib.import_module("pyhessian.hessian")  # the module (the package exports the class under that name)

    model = _MODEL
    batch = mlm_batch()
    obj = objectives.HFLoss()
    op = curvature.HessianOperator(model, obj, [batch], mode="double_backward", check_determinism=False)
    torch.manual_seed(0)  # PyHessian's start: randn per parameter from the global RNG after manual_seed(seed)
    v0 = dict(zip(op.names, [torch.randn(p.size()) for p in op.params.values()]))
    t0 = time.perf_counter()
    alpha, beta, _ = curvature.lanczos(op, op.to_flat(v0), 120, progress=False)

    def dominant(m: int) -> float:  # the Ritz value of largest magnitude after m steps (power iteration's target)
        t = np.linalg.eigvalsh(np.diag(alpha[:m]) + np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1))
        return float(t[np.argmax(np.abs(t))])

    theta_m = [dominant(m) for m in range(1, len(alpha) + 1)]
    ref = theta_m[-1]
    out = {"target": target, "reference": ref, "reference_matvecs": len(alpha),
           "reference_change_last_10": abs(theta_m[-1] - theta_m[-11]) / abs(ref) if len(theta_m) > 10 else None,
           "reference_s": time.perf_counter() - t0}
    out["ours_oracle_matvecs"] = next((m for m, t in enumerate(theta_m, 1) if abs(t - ref) <= target * abs(ref)), None)
    op.release_graph()
    del op

    def rel(x: float) -> float:
        return float(abs(x - ref) / abs(ref))

    ours, peer = [], []
    for tol in TOLS:
        t0 = time.perf_counter()
        o = curvature.HessianOperator(model, obj, [batch])  # defaults: graph kept when it fits, cheap check
        res = curvature.top_eigenvalues(o, k=1, tol=tol, v0=v0, max_iter=200, which="magnitude")
        ours.append({"tol": tol, "value": float(res.values[0]), "rel_err": rel(res.values[0]), "matvecs": res.n_matvecs,
                     "seconds": time.perf_counter() - t0, "reuse_graph": o.reuse_graph, "mode": o.mode})
        o.release_graph()
        print(f"  ours      tol {tol:.0e}: {ours[-1]['matvecs']:4d} matvecs, rel. error {ours[-1]['rel_err']:.1e}, "
              f"{ours[-1]['seconds']:.2f} s", flush=True)
        if ours[-1]["rel_err"] <= target:
            break
    rq: list[float] = []
    original = ph.hessian_vector_product

    def recording(gradsH, params, v):  # the Rayleigh quotient of each power-iteration vector (v is normalized)
        hv = original(gradsH, params, v)
        rq.append(float(sum((a * b).sum() for a, b in zip(hv, v))))
        return hv

    ph.hessian_vector_product = recording
    try:
        wrapped = LogitsOnly(model)
        for tol in TOLS:
            rq.clear()
            t0 = time.perf_counter()
            res = pyhessian_top_eigenvalues(wrapped, flat_ce, (batch["input_ids"], batch["labels"]), tol=tol, seed=0,
                                            max_iter=peer_max_iter)
            peer.append({"tol": tol, "value": float(res.values[0]), "rel_err": rel(res.values[0]),
                         "matvecs": res.n_matvecs, "seconds": time.perf_counter() - t0})
            print(f"  PyHessian tol {tol:.0e}: {peer[-1]['matvecs']:4d} matvecs, rel. error {peer[-1]['rel_err']:.1e}, "
                  f"{peer[-1]['seconds']:.2f} s", flush=True)
            if peer[-1]["rel_err"] <= target:
                break
    finally:
        ph.hessian_vector_product = original
    out["pyhessian_oracle_matvecs"] = next((i for i, t in enumerate(rq, 1) if rel(t) <= target), None)
    out["ours_sweep"], out["pyhessian_sweep"] = ours, peer
    o_ok, p_ok = ours[-1]["rel_err"] <= target, peer[-1]["rel_err"] <= target
    out["ours"], out["pyhessian"] = ours[-1], peer[-1]
    out["both_reached"] = o_ok and p_ok
    out["pyhessian_reached"] = p_ok
    out["matvec_ratio"] = peer[-1]["matvecs"] / ours[-1]["matvecs"]
    out["time_ratio"] = peer[-1]["seconds"] / ours[-1]["seconds"]
    # our default reuses the graph when it fits; the same tolerance with no graph kept, for comparison
    t0 = time.perf_counter()
    o = curvature.HessianOperator(model, obj, [batch], reuse_graph=False)
    res = curvature.top_eigenvalues(o, k=1, tol=ours[-1]["tol"], v0=v0, max_iter=200, which="magnitude")
    out["ours_no_graph"] = {"tol": ours[-1]["tol"], "matvecs": res.n_matvecs, "rel_err": rel(res.values[0]),
                            "seconds": time.perf_counter() - t0, "mode": o.mode}
    out["time_ratio_no_graph"] = peer[-1]["seconds"] / out["ours_no_graph"]["seconds"]
    return out


def eig_rows(r: dict, cmd: str) -> list[str]:
    o, p = r["ours"], r["pyhessian"]
    bound = "" if r["pyhessian_reached"] else f" (PyHessian did not reach it in {p['matvecs']} matvecs: a lower bound)"
    detail = (f"ours Lanczos tol {o['tol']:.0e}: {o['matvecs']} matvecs, err {o['rel_err']:.1e}, {o['seconds']:.2f} s; "
              f"PyHessian tol {p['tol']:.0e}: {p['matvecs']} matvecs, err {p['rel_err']:.1e}, {p['seconds']:.2f} s{bound}")
    rows = [
        _report.row(f"top eigenvalue to true rel. error ≤ {r['target']:.0e} vs PyHessian 0.1, matvecs, {_SIZE}",
                    f"{r['matvec_ratio']:.2f}× fewer ({detail})", "≥ 3× fewer matvecs", r["matvec_ratio"] >= 3, cmd),
        _report.row(f"top eigenvalue to true rel. error ≤ {r['target']:.0e} vs PyHessian 0.1, wall (construction "
                    f"included), {_SIZE}", f"{r['time_ratio']:.2f}× less (ours {o['seconds']:.2f} s with "
                    f"reuse_graph={o['reuse_graph']}, PyHessian {p['seconds']:.2f} s)", "≥ 2.5× less wall",
                    r["time_ratio"] >= 2.5, cmd),
        _report.row(f"same, ours with no graph kept (reuse_graph=False, mode {r['ours_no_graph']['mode']})",
                    f"PyHessian / ours wall {r['time_ratio_no_graph']:.2f}× ({r['ours_no_graph']['matvecs']} matvecs, "
                    f"{r['ours_no_graph']['seconds']:.2f} s)", "reported", None, cmd),
        _report.row("fewest matvecs to the same error in hindsight (oracle stop), ours / PyHessian",
                    f"{r['ours_oracle_matvecs']} / {r['pyhessian_oracle_matvecs']} (reference: {r['reference_matvecs']} "
                    f"Lanczos steps, last-10-step change {r['reference_change_last_10'] or float('nan'):.1e})",
                    "reported", None, cmd),
    ]
    return rows


# ----------------------------------------------------------------------------- 3. trace


def trained_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 5)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 20, generator=g, dtype=torch.float64)
    y = (x[:, :5] @ torch.randn(5, 5, generator=g, dtype=torch.float64)).argmax(1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, [(x, y)]


def bench_trace(seeds: int) -> dict:
    model, data = trained_mlp()
    crit = nn.CrossEntropyLoss()
    op = curvature.HessianOperator(model, objectives.Criterion(crit), data, mode="double_backward")
    like = {n: p.detach() for n, p in op.params.items()}

    def loss(flat):
        return crit(torch.func.functional_call(model, vectors.from_flat(flat, like), (data[0][0],)), data[0][1])

    dense = torch.func.hessian(loss)(vectors.to_flat(like))
    exact = float(torch.trace(dense))
    eig = torch.linalg.eigvalsh(dense).numpy()[::-1]
    grid = [6, 12, 24, 48, 96, 192, 384]
    rms = {"hutch++": {}, "pyhessian": {}}
    peer_prefix = []
    for s in range(seeds):  # PyHessian's Hutchinson: prefix means of one long run give every m at once
        with PyHessianRun(model, crit, data[0], seed=s) as run:
            samples = run.hessian.trace(maxIter=max(grid), tol=0.0)
        peer_prefix.append(np.cumsum(samples) / np.arange(1, len(samples) + 1))
    for m in grid:
        rms["pyhessian"][m] = float(np.sqrt(np.mean([(p[m - 1] / exact - 1) ** 2 for p in peer_prefix])))
        rms["hutch++"][m] = float(np.sqrt(np.mean(
            [(curvature.trace(op, num_matvecs=m, method="hutch++", seed=1000 * s, progress=False).estimate / exact - 1) ** 2 for s in range(seeds)])))

    def needed(errs: dict) -> int | None:
        return next((m for m in grid if errs[m] <= 0.01), None)

    need = {k: needed(v) for k, v in rms.items()}
    return {"dim": op.dim, "exact_trace": exact, "top_eigs": eig[:5].tolist(),
            "eig_share_top10": float(eig[:10].sum() / eig[eig > 0].sum()), "rms_rel_err": rms,
            "matvecs_to_1pct": need,
            "matvec_ratio": (need["pyhessian"] / need["hutch++"]) if all(need.values()) else None}


# ----------------------------------------------------------------------------- 4. memory


MEM_CHILD = r"""
import resource, sys, torch
sys.path.insert(0, "bench")
import bench_hessian as b
b._MODEL = b.make_bert(int(sys.argv[3]), int(sys.argv[4]))
b._MODE = sys.argv[2]
model, batch = b._MODEL, b.mlm_batch()
which = sys.argv[1]
if which == "ours":
    from landscape import curvature, objectives
    op = curvature.HessianOperator(model, objectives.HFLoss(), [batch], mode=b._MODE, check_determinism=False)
    v = op.randn(0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(50):
        v = op.matvec(v); v = {k: t / float(torch.linalg.vector_norm(torch.stack([x.norm() for x in v.values()]))) for k, t in v.items()}
else:
    from tests.pyhessian_reference import PyHessianRun
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with PyHessianRun(b.LogitsOnly(model), b.flat_ce, (batch["input_ids"], batch["labels"])) as run:
        run.hessian.eigenvalues(maxIter=50, tol=0.0)
        assert run.n_matvecs == 50
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base, peak)
"""


def bench_memory(layers: int = 4, hidden: int = 128) -> dict:
    out = {"model": f"BertForMaskedLM {layers}x{hidden}"}
    for which in ("ours", "pyhessian"):
        res = subprocess.run([sys.executable, "-c", MEM_CHILD, which, _MODE, str(layers), str(hidden)],
                             capture_output=True, text=True, check=True)
        base, peak = map(int, res.stdout.split()[-2:])
        out[which] = {"base_MiB": base / 1024, "peak_MiB": peak / 1024, "growth_MiB": (peak - base) / 1024}
    out["peak_ratio_pyhessian_over_ours"] = out["pyhessian"]["peak_MiB"] / out["ours"]["peak_MiB"]
    return out


def trace_rows(r: dict, cmd: str) -> list[str]:
    need = r["matvecs_to_1pct"]
    ratio = r["matvec_ratio"]
    return [_report.row(f"trace to 1 % RMS error, Hutch++ vs PyHessian's Hutchinson, trained MLP (dim {r['dim']})",
                        f"{ratio:.2f}× fewer ({need['hutch++']} vs {need['pyhessian']} matvecs)" if ratio else
                        f"not reached within the grid ({need})", "≥ 2× fewer matvecs", bool(ratio and ratio >= 2), cmd)]


def memory_rows(r: dict, cmd: str) -> list[str]:
    o, p = r["ours"], r["pyhessian"]
    return [_report.row(f"peak memory of 50 matvecs, {r['model']}, ours vs PyHessian",
                        f"{o['peak_MiB']:.0f} vs {p['peak_MiB']:.0f} MiB", "≤ PyHessian",
                        o["peak_MiB"] <= p["peak_MiB"], cmd)]


_MODEL = None
_MODE = "double_backward"
_SIZE = ""

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true",
                    help="checks the script: BERT 2x64, 3 repeats, k = 1, 4, fewer trace seeds (not for the table)")
    ap.add_argument("--only", default="hvp,eig,trace,memory")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs after one warm-up (default 5; quick 3)")
    ap.add_argument("--size", default=None, help="LAYERSxHIDDEN of the BERT (default 4x128; quick 2x64)")
    ap.add_argument("--peer-max-iter", type=int, default=300, help="PyHessian's maxIter in the eigenvalue sweep")
    ap.add_argument("--out", default=None, help="write the JSON results here")
    ap.add_argument("--rows", default=None, help="append the Markdown rows to this file")
    ap.add_argument("--mem-size", default=None, help="LAYERSxHIDDEN of the BERT for the memory benchmark (default: --size)")
    a = ap.parse_args()
    size = a.size or ("2x64" if a.quick else "4x128")
    layers, hidden = map(int, size.split("x"))
    repeats = a.repeats or (3 if a.quick else 5)
    ks = [1, 4] if a.quick else [1, 4, 16]
    cmd = _report.command()
    print(f"{_report.machine()}; load average before: {_report.load_average()}", flush=True)
    torch.manual_seed(0)
    _MODEL = make_bert(layers, hidden)
    n_params = sum(p.numel() for p in _MODEL.parameters())
    _SIZE = f"BERT MLM {layers}x{hidden} ({n_params / 1e6:.2f}M params), {BATCH}x{SEQ} tokens"
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__, "model": _SIZE, "params": n_params}
    only = a.only.split(",")
    rows: list[str] = []
    if "hvp" in only:
        results["hvp"] = bench_hvp(repeats, ks)
        print(json.dumps(results["hvp"]), flush=True)
        rows += hvp_rows(results["hvp"], cmd)
    if "eig" in only:
        results["eig"] = bench_eig(1e-3, a.peer_max_iter)
        print(json.dumps(results["eig"]), flush=True)
        rows += eig_rows(results["eig"], cmd)
    if "trace" in only:
        results["trace"] = bench_trace(5 if a.quick else 10)
        print(json.dumps(results["trace"]), flush=True)
        rows += trace_rows(results["trace"], cmd)
    if "memory" in only:
        results["memory"] = bench_memory(*map(int, (a.mem_size or size).split("x")))
        print(json.dumps(results["memory"]), flush=True)
        rows += memory_rows(results["memory"], cmd)
    _report.print_table(rows)
    if a.rows:
        _report.append_rows(a.rows, rows)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
