"""Scale benchmark: a BERT-base-sized masked LM (``BertConfig()``, random init, 110M parameters) on
this CPU, 8-16 sequences of 128 tokens. Run by hand, on a quiet machine:

    python bench/bench_scale.py                  # full size, about 10-15 min on 2 cores
    python bench/bench_scale.py --quick          # small config, about 1 min: checks the script

Each measurement runs in its own subprocess, so its peak memory (``ru_maxrss``, which never goes
down) is its own: "base" is the peak after building the model, the data and the objective, "peak"
after one cold run of the measurement, "growth" the difference. Times: median of ``--repeats``
runs after that cold run (with 1 repeat, the one warm run). Ratios are against the gradient
measured the same way in its own subprocess, in the same invocation.

Measurements: gradient (labelled-position head, and the full head for comparison), HVP in each
mode without graph reuse, HVP with ``reuse_graph=True`` (amortized over products after the first),
``matmat`` with k = 4 (per product), building a ``HessianOperator`` (defaults, and with a fixed
mode), empirical Fisher per sequence, one scan point. Then an estimate of what ``landscape audit``
costs at this size with its defaults (from the counts of its products), and the command to run it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402
from _workloads import gradient_fn, random_mlm_batch  # noqa: E402

import torch  # noqa: E402

MEASUREMENTS = ["grad", "grad_full_head", "hvp_double_backward", "hvp_forward_over_reverse", "hvp_reuse_graph",
                "matmat4", "build_default", "build_fixed_mode", "build_no_reuse", "fisher", "scan_point"]


def config(quick: bool):
    from transformers import BertConfig

    if quick:
        return BertConfig(vocab_size=2000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=512, max_position_embeddings=128)
    return BertConfig()  # BERT-base: vocab 30522, hidden 768, 12 layers, 12 heads


def setup(quick: bool, sequences: int, seq_len: int):
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    cfg = config(quick)
    model = BertForMaskedLM(cfg).eval()
    data, obj = random_mlm_batch(cfg.vocab_size, sequences, seq_len, quick)
    return model, obj, data


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(name: str, quick: bool, sequences: int, seq_len: int, repeats: int) -> dict:
    from landscape import fisher, curvature, scans
    from landscape.scans import directions

    model, obj, data = setup(quick, sequences, seq_len)
    extra: dict = {}
    if name in ("grad", "grad_full_head"):
        if name == "grad_full_head":
            obj.labelled_head = False
        run = gradient_fn(model, obj, data[0])
    elif name.startswith("hvp_") or name == "matmat4":
        mode = {"hvp_forward_over_reverse": "forward_over_reverse"}.get(name, "double_backward")
        op = curvature.HessianOperator(model, obj, data, mode=mode, check_determinism=False,
                                     reuse_graph=name == "hvp_reuse_graph")
        if name == "matmat4":
            vs = [op.randn(s) for s in range(4)]

            def run():
                op.matmat(vs)
            extra["per_product_divisor"] = 4
        else:
            v = op.randn(0)

            def run():
                op.matvec(v)
        extra["describe"] = {k: op.describe()[k] for k in ("mode", "reuse_graph", "graph_bytes", "kept_graph_bytes")}
    elif name.startswith("build_"):
        mode = "auto" if name == "build_default" else "double_backward"
        reuse = False if name == "build_no_reuse" else "auto"  # no prepaid first-backward graph

        def run():
            op = curvature.HessianOperator(model, obj, data, mode=mode, reuse_graph=reuse)
            extra["describe"] = {k: op.describe()[k] for k in ("mode", "mode_choice", "reuse_graph", "graph_bytes")}
    elif name == "fisher":
        def run():
            fisher.diagonal(model, obj, data, progress=False, convergence=False, chunk_size=4)
        extra["per_sequence_divisor"] = sequences
    elif name == "scan_point":
        d = directions.random(model, seed=0)

        def run():
            c = scans.scan_1d(model, obj, data, d, [0.5], progress=False, batch_points=1)
            extra["seconds_eval"] = c.meta["timing"]["seconds_eval"]
    else:
        raise SystemExit(f"unknown measurement {name}")
    base = maxrss_mib()
    t0 = time.perf_counter()
    run()
    cold = time.perf_counter() - t0
    peak = maxrss_mib()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    if name.startswith("build_"):  # construction is paid once per operator: the cold run is the figure
        times = [cold]
    return {"name": name, "cold_s": cold, "seconds": statistics.median(times) if times else cold, "runs_s": times,
            "base_MiB": base, "peak_MiB": peak, "growth_MiB": peak - base, **extra}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small config (hidden 128, 2 layers, 4x64 tokens)")
    ap.add_argument("--sequences", type=int, default=None, help="sequences (default 8; quick 4)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 128; quick 64)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs after the cold one (default 2; quick 3)")
    ap.add_argument("--only", nargs="*", default=MEASUREMENTS, choices=MEASUREMENTS)
    ap.add_argument("--out", default=None, help="write the JSON results here")
    ap.add_argument("--rows", default=None, help="append the Markdown rows to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    seqs = a.sequences or (4 if a.quick else 8)
    seq_len = a.seq_len or (64 if a.quick else 128)
    repeats = a.repeats if a.repeats is not None else (3 if a.quick else 2)
    if a.child:
        print("RESULT " + json.dumps(child(a.child, a.quick, seqs, seq_len, repeats)), flush=True)
        return
    load_before = _report.load_average()
    print(f"{_report.machine()}; load average before: {load_before}", flush=True)
    n_params = sum(p.numel() for p in __import__("transformers").BertForMaskedLM(config(a.quick)).parameters())
    print(f"BertForMaskedLM {'quick config' if a.quick else 'BertConfig()'}: {n_params:,} parameters, "
          f"{seqs} x {seq_len} tokens", flush=True)
    res: dict[str, dict] = {}
    names = list(dict.fromkeys(["grad", *a.only]))
    for name in names:
        cmd = [sys.executable, __file__, "--child", name, "--sequences", str(seqs), "--seq-len", str(seq_len),
               "--repeats", str(repeats)] + (["--quick"] if a.quick else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"  {name}: FAILED\n{proc.stderr[-1500:]}", flush=True)
            continue
        res[name] = json.loads(line[-1][7:])
        r = res[name]
        print(f"  {name:26s} {r['seconds']:8.3f} s (cold {r['cold_s']:.3f} s)  peak {r['peak_MiB']:8.0f} MiB  "
              f"growth {r['growth_MiB']:7.0f} MiB   [{time.perf_counter() - t0:.0f} s with setup]", flush=True)
    load = _report.load_average()
    g = res.get("grad", {}).get("seconds")
    rows = []
    size = f"BERT-base-sized MLM, {seqs}x{seq_len}" if not a.quick else f"quick BERT, {seqs}x{seq_len}"

    def ratio(name: str, div: float = 1.0) -> float | None:
        return res[name]["seconds"] / div / g if name in res and g else None

    for name, label in [("hvp_double_backward", "double backward"), ("hvp_forward_over_reverse", "forward-over-reverse"),
                        ("hvp_reuse_graph", "double backward, graph reused"), ("matmat4", "matmat k=4, per product")]:
        r = ratio(name, 4.0 if name == "matmat4" else 1.0)
        if r is not None:
            rows.append(_report.row(f"HVP / gradient, {size}, {label}", f"{r:.2f} (HVP {res[name]['seconds']:.2f} s, "
                                    f"gradient {g:.2f} s)", "≤ 3", r <= 3, load=load))
    if "grad_full_head" in res and g:
        rows.append(_report.row(f"gradient, full head / labelled-position head, {size}",
                                f"{res['grad_full_head']['seconds'] / g:.2f}x", "reported", None, load=load))
    for name, label in [("build_default", "defaults (auto)"), ("build_fixed_mode", "mode='double_backward'"),
                        ("build_no_reuse", "mode='double_backward', reuse_graph=False (no graph built up front)")]:
        r = ratio(name)
        if r is not None:
            rows.append(_report.row(f"building a HessianOperator, {size}, {label}", f"{r:.2f} gradients "
                                    f"({res[name]['seconds']:.2f} s)", "≤ 1 gradient", r <= 1.0, load=load))
    for name in ("hvp_double_backward", "hvp_reuse_graph", "fisher", "grad"):
        if name in res:
            rows.append(_report.row(f"peak memory, {name}, {size}", f"{res[name]['peak_MiB']:.0f} MiB RSS (growth "
                                    f"{res[name]['growth_MiB']:.0f} MiB)", "stated, bounded by chunking", None, load=load))
    if "fisher" in res:
        per = res["fisher"]["seconds"] / seqs
        rows.append(_report.row(f"Fisher per sequence, {size}, chunk 4", f"{per:.2f} s/sequence "
                                f"({per / g:.2f} gradients of the whole batch)" if g else f"{per:.2f} s", "reported", None, load=load))
    if "scan_point" in res:
        s = res["scan_point"].get("seconds_eval", res["scan_point"]["seconds"])
        rows.append(_report.row(f"one scan point, {size}", f"{s:.2f} s ({s / g:.2f} gradients)" if g else f"{s:.2f} s",
                                "reported", None, load=load))
    if g and "hvp_double_backward" in res and "fisher" in res and "scan_point" in res:
        hvp = min(res[n]["seconds"] for n in ("hvp_double_backward", "hvp_forward_over_reverse", "hvp_reuse_graph") if n in res)
        # landscape audit defaults: 98 HVPs, Fisher on 24 sequences, 9-point curves x (1 full + 5 blocks) x 1 seed,
        # 6 average-sharpness samples + 3 ascent steps (gradients) per block; counts from BENCHMARKS.md "Audit timings"
        est = 98 * hvp + 24 * res["fisher"]["seconds"] / seqs + 6 * 9 * res["scan_point"]["seconds"] + 6 * 9 * g
        rows.append(_report.row("`landscape audit` at this size, default settings (estimate from the per-product "
                                "costs: 98 HVPs, 24 Fisher sequences, ~54 scan points, ~54 gradients)",
                                f"~{est / 60:.0f} min", "stated", None, load=load))
    _report.print_table(rows)
    if a.rows:
        _report.append_rows(a.rows, rows)
    print(f"load average after: {load}")
    if a.out:
        Path(a.out).write_text(json.dumps({"results": res, "rows": rows, "load_before": load_before, "load_after": load,
                                           "machine": _report.machine()}, indent=1))


if __name__ == "__main__":
    main()
