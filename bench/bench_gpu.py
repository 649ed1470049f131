"""GPU benchmark: BERT-base (``BertConfig()``, random init) on CUDA, one script, under 5 minutes on one H100.

    python bench/bench_gpu.py                 # prints Markdown; writes $OUT/bench_gpu.json if OUT is set
    python bench/bench_gpu.py --quick         # small config, to check the script (also on CPU-less CUDA boxes)

Sections (each fails soft: an error is recorded and the next section runs; a section that would
start after ``--deadline`` seconds is skipped):

1. gradient, HVP per mode (double backward, forward-over-reverse, double backward with the graph
   reused, matmat k=4 per product, finite differences plain and Richardson) and the GGN product,
   each / gradient, eager and with ``torch.compile`` (finite differences and the GGN through the
   operators' own ``compile=True``);
2. Lanczos top-1 eigenvalue to 1e-3: wall time and matvecs;
3. empirical Fisher: sequences per second;
4. a 51x51 scan: points per second (``batch_points="auto"``);
each with peak memory (``torch.cuda.max_memory_allocated``, reset before the section).
Needs nothing outside the repository (no downloads). Without CUDA it prints "no CUDA" and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _workloads import gradient_fn, random_mlm_batch  # noqa: E402


def sync() -> None:
    torch.cuda.synchronize()


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up (and compilation)
    sync()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), runs


def build(quick: bool, sequences: int, seq_len: int):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = (BertConfig(vocab_size=2000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=512) if quick else BertConfig())
    model = BertForMaskedLM(cfg).cuda().eval()
    data, obj = random_mlm_batch(cfg.vocab_size, sequences, seq_len, quick)
    return model, obj, data


def section_products(model, obj, data, repeats: int, compiled: bool) -> dict:
    from landscape import curvature

    if compiled:
        # AOT autograd donates saved buffers to the backward by default, which refuses
        # create_graph=True (double backward); keep them so the HVP can differentiate twice.
        import torch._functorch.config as functorch_config

        functorch_config.donated_buffer = False
    target = torch.compile(model) if compiled else model
    out: dict = {"compiled": compiled}
    grad = gradient_fn(model, obj, data[0], run=target)
    out["grad_s"], out["grad_runs"] = timed(grad, repeats)
    for label, kw in [("double_backward", dict(mode="double_backward", reuse_graph=False)),
                      ("forward_over_reverse", dict(mode="forward_over_reverse", reuse_graph=False)),
                      ("reuse_graph", dict(mode="double_backward", reuse_graph=True)),
                      ("matmat4", dict(mode="double_backward", reuse_graph=False)),
                      ("finite_difference", dict(mode="finite_difference", compile=compiled)),
                      ("finite_difference_richardson",
                       dict(mode="finite_difference", richardson=True, compile=compiled)),
                      ("ggn", dict(compile=compiled))]:
        try:
            if label == "ggn":
                op = curvature.GGNOperator(model, obj, data, check_determinism=False, **kw)
            elif label.startswith("finite_difference"):  # compiles its own gradient function
                op = curvature.HessianOperator(model, obj, data, check_determinism=False, **kw)
            else:
                op = curvature.HessianOperator(target, obj, data, check_determinism=False, **kw)
            if label == "matmat4":
                vs = [op.randn(s) for s in range(4)]
                t, runs = timed(lambda op=op: op.matmat(vs), repeats)
                t /= 4
            else:
                v = op.randn(0)
                t, runs = timed(lambda op=op: op.matvec(v), repeats)
            out[label] = {"hvp_s": t, "runs": runs, "ratio": t / out["grad_s"],
                          "graph_bytes": op.graph_bytes, "kept_graph_bytes": getattr(op, "kept_graph_bytes", 0)}
            op = None  # free the kept graph before the next mode
        except Exception as exc:  # noqa: BLE001 - fail soft per mode
            out[label] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
    try:
        auto = curvature.HessianOperator(target, obj, data, check_determinism=False, reuse_graph=False)
        out["auto_pick"] = auto.mode_choice
    except Exception as exc:  # noqa: BLE001
        out["auto_pick"] = {"error": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}
    return out


def section_lanczos(model, obj, data) -> dict:
    from landscape import curvature

    op = curvature.HessianOperator(model, obj, data, check_determinism=False)
    sync()
    t0 = time.perf_counter()
    r = curvature.top_eigenvalues(op, k=1, tol=1e-3, seed=0)
    sync()
    return {"seconds": time.perf_counter() - t0, "n_matvecs": r.n_matvecs, "value": float(r.values[0]),
            "mode": op.mode, "reuse_graph": op.reuse_graph, "converged": r.converged}


def section_fisher(model, obj, quick: bool, seq_len: int) -> dict:
    from landscape import fisher

    n = 16 if quick else 64
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000 if not quick else 5, model.config.vocab_size, (n, seq_len), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    data = [{"input_ids": ids[i : i + 16], "attention_mask": torch.ones_like(ids[i : i + 16])} for i in range(0, n, 16)]
    fisher.diagonal(model, obj, data[:1], progress=False, convergence=False, max_examples=4, chunk_size=4)  # warm-up
    sync()
    t0 = time.perf_counter()
    F = fisher.diagonal(model, obj, data, progress=False, convergence=False, chunk_size=8)
    sync()
    dt = time.perf_counter() - t0
    return {"sequences": n, "seconds": dt, "sequences_per_s": n / dt, "per_example": F.meta["per_example"]}


def section_scan(model, obj, data, grid: int) -> dict:
    import numpy as np

    from landscape import scans
    from landscape.scans import directions

    d1, d2 = directions.random(model, seed=0), directions.random(model, seed=1)
    xs = np.linspace(-1, 1, grid)
    sync()
    t0 = time.perf_counter()
    s = scans.scan_2d(model, obj, data, d1, d2, xs, xs, progress=False)
    sync()
    dt = time.perf_counter() - t0
    return {"points": grid * grid, "seconds": dt, "points_per_s": grid * grid / dt,
            "batch_points": s.meta.get("batch_points"), "calibration": s.meta.get("batch_calibration")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--grid", type=int, default=51)
    ap.add_argument("--deadline", type=float, default=270.0, help="skip sections that would start after this (s)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA")
        return 0
    import _report

    start = time.perf_counter()
    name = torch.cuda.get_device_name(0)
    model, obj, data = build(a.quick, a.sequences, a.seq_len)
    n_params = sum(p.numel() for p in model.parameters())
    results: dict = {"gpu": name, "torch": torch.__version__, "params": n_params, "batch": f"{a.sequences}x{a.seq_len}",
                     "quick": a.quick, "sections": {}}
    print(f"{name}, torch {torch.__version__}: BertForMaskedLM {n_params:,} parameters, {a.sequences}x{a.seq_len} tokens",
          flush=True)
    sections = [("products_eager", lambda: section_products(model, obj, data, a.repeats, False)),
                ("lanczos_top1", lambda: section_lanczos(model, obj, data)),
                ("fisher", lambda: section_fisher(model, obj, a.quick, a.seq_len)),
                ("scan_51x51", lambda: section_scan(model, obj, data, a.grid)),
                ("products_compiled", lambda: section_products(model, obj, data, a.repeats, True))]
    for label, fn in sections:
        if time.perf_counter() - start > a.deadline:
            results["sections"][label] = {"skipped": f"deadline {a.deadline} s reached"}
            print(f"[{label}] skipped (deadline)", flush=True)
            continue
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            res = fn()
        except Exception as exc:  # noqa: BLE001 - fail soft per section
            res = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                   "traceback": traceback.format_exc()[-2000:]}
        res["peak_memory_GiB"] = torch.cuda.max_memory_allocated() / 2**30
        res["section_s"] = time.perf_counter() - t0
        results["sections"][label] = res
        print(f"[{label}] {json.dumps({k: v for k, v in res.items() if k != 'traceback'}, default=str)[:1500]}", flush=True)
    results["total_s"] = time.perf_counter() - start
    rows = []
    cmd = _report.command()
    for label in ("products_eager", "products_compiled"):
        sec = results["sections"].get(label, {})
        for mode in ("double_backward", "forward_over_reverse", "reuse_graph", "matmat4", "finite_difference",
                     "finite_difference_richardson", "ggn"):
            m = sec.get(mode, {})
            if "ratio" in m:
                rows.append(_report.row(f"HVP / gradient, BERT-base {a.sequences}x{a.seq_len}, {name}, {mode}, "
                                        f"{'torch.compile' if sec.get('compiled') else 'eager'}",
                                        f"{m['ratio']:.2f} (HVP {m['hvp_s'] * 1e3:.1f} ms, gradient {sec['grad_s'] * 1e3:.1f} ms; "
                                        f"peak {sec['peak_memory_GiB']:.1f} GiB)", "published: 4.5-8 eager, 1.1-2.9 compiled",
                                        None, cmd))
            elif "error" in m:
                rows.append(_report.row(f"HVP, {mode}, {label}", f"failed: {m['error'][:120]}", "", None, cmd))
    sec = results["sections"].get("lanczos_top1", {})
    if "seconds" in sec:
        rows.append(_report.row(f"Lanczos top-1 to 1e-3, BERT-base, {name}", f"{sec['seconds']:.1f} s, {sec['n_matvecs']} matvecs "
                                f"(peak {sec['peak_memory_GiB']:.1f} GiB)", "reported", None, cmd))
    sec = results["sections"].get("fisher", {})
    if "sequences_per_s" in sec:
        rows.append(_report.row(f"empirical Fisher, BERT-base x{a.seq_len} tokens, {name}", f"{sec['sequences_per_s']:.1f} "
                                f"sequences/s (peak {sec['peak_memory_GiB']:.1f} GiB)", "reported", None, cmd))
    sec = results["sections"].get("scan_51x51", {})
    if "points_per_s" in sec:
        rows.append(_report.row(f"{a.grid}x{a.grid} scan, BERT-base {a.sequences}x{a.seq_len}, {name}",
                                f"{sec['points_per_s']:.1f} points/s, batch_points={sec['batch_points']} "
                                f"(peak {sec['peak_memory_GiB']:.1f} GiB)", "reported", None, cmd))
    for label, sec in results["sections"].items():
        if "error" in sec or "skipped" in sec:
            rows.append(_report.row(f"section {label}", sec.get("error", sec.get("skipped", ""))[:150], "", None, cmd))
    results["rows"] = rows
    _report.print_table(rows)
    print(f"total {results['total_s']:.0f} s")
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "bench_gpu.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
