"""Curvature benchmarks, ours against PyHessian 0.1 and against the gradient floor, side by side.

Run by hand:  python bench/bench_hessian.py [--quick] [--only hvp,eig,trace,memory]

1. HVP time / gradient time on a tiny BERT MLM (4 layers, hidden 128), both HVP modes.
2. Top eigenvalue to 1e-3: our Lanczos against PyHessian's power iteration, same model, batch, start.
3. Trace to 1 % relative error on a trained MLP (decaying spectrum): Hutch++ against PyHessian's
   Hutchinson, RMS error over seeds, against the exact trace from the dense Hessian.
4. Peak memory of 50 matvecs: ru_maxrss growth of a fresh subprocess for each tool.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

from landscape import hessian, objectives, vectors
from landscape.curvature.pyhessian import PyHessianRun, pyhessian_top_eigenvalues
from landscape.util import deterministic_eval, math_attention

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


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------- 1. HVP / gradient


def bench_hvp(repeats: int) -> dict:
    model = _MODEL
    batch = mlm_batch()
    obj = objectives.HFLoss()
    prepared = obj.prepare(batch, model)
    params = [p for p in model.parameters() if p.requires_grad]

    def grad():
        with deterministic_eval(model):
            s, _ = obj.loss_sum(model, prepared)
            torch.autograd.grad(s, params)

    out = {"grad_s": timeit(grad, repeats)}
    for mode in hessian.MODES:
        op = hessian.HessianOperator(model, obj, [batch], mode=mode, check_determinism=False)
        v = op.randn(0)
        out[f"{mode}_s"] = timeit(lambda: op.matvec(v), repeats)
        out[f"{mode}_ratio"] = out[f"{mode}_s"] / out["grad_s"]
    auto = hessian.HessianOperator(model, obj, [batch], check_determinism=False)
    out["auto_picks"] = auto.mode
    return out


# ----------------------------------------------------------------------------- 2. top eigenvalue


def bench_eig(tol: float) -> dict:
    model = _MODEL
    batch = mlm_batch()
    obj = objectives.HFLoss()
    op = hessian.HessianOperator(model, obj, [batch], mode=_MODE, check_determinism=False)
    torch.manual_seed(0)  # PyHessian's start: randn per parameter from the global RNG after manual_seed(seed)
    v0 = dict(zip(op.names, [torch.randn(p.size()) for p in op.params.values()]))
    ref = hessian.top_eigenvalues(op, k=1, tol=1e-8, v0=v0, max_iter=200).values[0]
    op.n_matvecs = 0
    t0, c0 = time.perf_counter(), time.process_time()
    ours = hessian.top_eigenvalues(op, k=1, tol=tol, v0=v0)
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    fast = hessian.HessianOperator(model, obj, [batch], check_determinism=False, reuse_graph=True)
    t0, c0 = time.perf_counter(), time.process_time()
    reuse = hessian.top_eigenvalues(fast, k=1, tol=tol, v0=v0)
    t_reuse, c_reuse = time.perf_counter() - t0, time.process_time() - c0
    fast.release_graph()
    wrapped = LogitsOnly(model)
    t0, c0 = time.perf_counter(), time.process_time()
    peer = pyhessian_top_eigenvalues(wrapped, flat_ce, (batch["input_ids"], batch["labels"]), tol=tol, seed=0)
    t_peer, c_peer = time.perf_counter() - t0, time.process_time() - c0
    return {
        "reference": float(ref), "ours_value": float(ours.values[0]), "ours_matvecs": ours.n_matvecs,
        "ours_rel_err": abs(ours.values[0] - ref) / abs(ref), "ours_s": t_ours,
        "pyhessian_value": float(peer.values[0]), "pyhessian_matvecs": peer.n_matvecs,
        "pyhessian_rel_err": abs(peer.values[0] - ref) / abs(ref), "pyhessian_s": t_peer,
        "matvec_ratio": peer.n_matvecs / ours.n_matvecs, "time_ratio": t_peer / t_ours,
        "reuse_graph_value": float(reuse.values[0]), "reuse_graph_matvecs": reuse.n_matvecs, "reuse_graph_s": t_reuse,
        "time_ratio_reuse_graph": t_peer / t_reuse,
        "cpu_s": {"ours": c_ours, "reuse_graph": c_reuse, "pyhessian": c_peer},
        "cpu_ratio": c_peer / c_ours, "cpu_ratio_reuse_graph": c_peer / c_reuse,
    }


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
    op = hessian.HessianOperator(model, objectives.Criterion(crit), data, mode="double_backward")
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
            [(hessian.trace(op, num_matvecs=m, method="hutch++", seed=1000 * s, progress=False).estimate / exact - 1) ** 2 for s in range(seeds)])))

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
    from landscape import hessian, objectives
    op = hessian.HessianOperator(model, objectives.HFLoss(), [batch], mode=b._MODE, check_determinism=False)
    v = op.randn(0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(50):
        v = op.matvec(v); v = {k: t / float(torch.linalg.vector_norm(torch.stack([x.norm() for x in v.values()]))) for k, t in v.items()}
else:
    from landscape.curvature.pyhessian import PyHessianRun
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


_MODEL = None
_MODE = "double_backward"

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="hvp,eig,trace,memory")
    ap.add_argument("--out", default=None, help="write the JSON results here")
    ap.add_argument("--mem-size", default="4x128", help="LAYERSxHIDDEN of the BERT for the memory benchmark")
    a = ap.parse_args()
    torch.manual_seed(0)
    _MODEL = make_bert()
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__,
               "model": f"BertForMaskedLM 4x128, vocab {VOCAB}, batch {BATCH}x{SEQ}",
               "params": sum(p.numel() for p in _MODEL.parameters())}
    only = a.only.split(",")
    if "hvp" in only:
        results["hvp"] = bench_hvp(3 if a.quick else 7)
        _MODE = results["hvp"]["auto_picks"]
        print(json.dumps(results["hvp"], indent=1), flush=True)
    results["mode_used"] = _MODE
    if "eig" in only:
        results["eig"] = bench_eig(1e-3)
        print(json.dumps(results["eig"], indent=1), flush=True)
    if "trace" in only:
        results["trace"] = bench_trace(5 if a.quick else 10)
        print(json.dumps(results["trace"], indent=1), flush=True)
    if "memory" in only:
        results["memory"] = bench_memory(*map(int, a.mem_size.split("x")))
        print(json.dumps(results["memory"], indent=1), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
