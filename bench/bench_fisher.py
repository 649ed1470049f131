"""Benchmark: diagonal empirical Fisher on 64 sequences of a tiny BERT (float32, CPU).

Measured side by side in one run:
  1. vmap per-example gradients vs the per-example loop (target: >= 4x faster);
  2. vmap Fisher vs the floor: batched forward+backward passes over the same examples and
     batches (target: <= 2x the floor);
  3. peak extra memory of the pass for two chunk sizes (fresh process each; VmHWM - VmRSS);
  4. torchrun 2 ranks x 1 thread vs 1 rank x 1 thread (target: speed-up >= 1.8x), timed from a
     barrier after setup to a barrier after the result, with each rank's CPU seconds and the
     machine's ceiling (two independent 1-rank runs together; bench/_dist.py), on a workload of
     at least 20 s single-process: ``--dist-examples auto`` (default) sizes it from the 1-thread
     vmap time per example measured in 1. (aiming at 25 s) and, if the 1-rank run still falls
     short, rescales from that run's own time (at most twice); or give a number of sequences.

Run:  python bench/bench_fisher.py [--config small|fixture] [--examples 64] [--repeats 3] [--threads 1]
                                   [--dist-examples auto|N] [--rows FILE] [--quick]

Times are the best of ``--repeats`` runs after a warm-up. Ends with ready-to-paste Markdown rows
(``--rows FILE`` appends them to FILE). ``--quick`` (fixture config, 16 sequences, 1 repeat, a
~2 s torchrun workload) only checks the script; the table's rows come from ``--config small``
(the default; about 3 min on a quiet 2-core machine, most of it the torchrun runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report

from landscape import fisher, objectives, util

# name: (hidden, layers, vocab, sequence length); "fixture" is the test suite's tiny BERT
CONFIGS = {"small": (64, 2, 1000, 64), "fixture": (16, 2, 40, 12)}
CONFIG = "small"


def build(n_examples: int, batch_size: int = 16):
    from transformers import BertConfig, BertForMaskedLM

    hidden, layers, vocab, seq = CONFIGS[CONFIG]
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=seq, pad_token_id=0)
    model = BertForMaskedLM(cfg)
    g = torch.Generator().manual_seed(0)
    data = []
    for i in range(0, n_examples, batch_size):
        b = min(batch_size, n_examples - i)
        ids = torch.randint(5, vocab, (b, seq), generator=g)
        ids[:, 0], ids[:, -1] = 2, 3
        data.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    obj = objectives.MaskedLM(mask_prob=0.15, seed=0, mask_token_id=4, special_token_ids=[0, 1, 2, 3, 4])
    return model, obj, data


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def floor_pass(model, obj, data) -> None:
    """Batched forward+backward over the same batches (what a training step costs)."""
    params = [p for p in model.parameters() if p.requires_grad]
    with util.deterministic_eval(model):
        for batch in data:
            prepared = obj.prepare(batch, model)
            s, _ = obj.loss_sum(model, prepared)
            torch.autograd.grad(s, params)


def fisher_pass(model, obj, data, per_example: str, chunk: int) -> None:
    fisher.diagonal(model, obj, data, per_example=per_example, chunk_size=chunk, progress=False, convergence=False)


def memory_child(n: int, chunk: int) -> None:
    model, obj, data = build(n)

    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        return 0

    floor_pass(model, obj, data[:1])  # warm up allocator and imports with a small pass
    before = status("VmRSS:")
    fisher_pass(model, obj, data, "vmap", chunk)
    print(json.dumps({"chunk": chunk, "peak_extra_mib": (status("VmHWM:") - before) / 1024}))


def dist_worker(n: int, chunk: int) -> None:
    """Run under torchrun (or alone): the Fisher pass between two barriers (``_dist.timed_interval``)."""
    import _dist

    torch.set_num_threads(1)
    ctx = util.dist_context()
    model, obj, data = build(n)
    fisher_pass(model, obj, data[:1], "vmap", chunk)  # warm-up
    _, rec = _dist.timed_interval(lambda: fisher.diagonal(model, obj, data, chunk_size=chunk, progress=False,
                                                          convergence=False, distributed=ctx.active))
    if rec is not None:
        print(json.dumps(rec), flush=True)


def run_child(args: list[str], torchrun: int | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if torchrun else dict(os.environ)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] if torchrun else [sys.executable]
    proc = subprocess.run([*launcher, __file__, *args], capture_output=True, text=True, env=env, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def dist_row(a: argparse.Namespace, n: int, cmd: str) -> str:
    """Section 4: 1 rank, 2 ranks and the machine's ceiling (``_dist.compare``) on ``n`` sequences (``auto``:
    rescaled from the 1-rank run until it takes at least 0.8 x ``--dist-seconds``)."""
    import _dist

    def args(n: int) -> list[str]:
        return ["--config", a.config, "--examples", str(n), "--chunk", str(a.chunk), "--dist-worker"]

    one = None
    for _ in range(3 if a.dist_examples == "auto" else 0):
        one = _dist.run(__file__, args(n), 1)
        if one["seconds"] >= 0.8 * a.dist_seconds:
            break
        n, one = max(16, int(-(-n * a.dist_seconds / one["seconds"] // 16)) * 16), None
        print(f"  1 rank took below {0.8 * a.dist_seconds:.0f} s: resized to {n} sequences", flush=True)
    one, two, _, summary = _dist.compare(__file__, args(n), f"4: Fisher, {a.config} BERT, {n} sequences", one)
    speed, big = one["seconds"] / two["seconds"], one["seconds"] >= 20
    return _report.row(f"torchrun 2 ranks vs 1 (1 thread each, barrier to barrier), Fisher, {a.config} BERT, "
                       f"{n} sequences", summary + ("" if big else "; workload under 20 s"),
                       "≥ 1.8× on a workload ≥ 20 s", speed >= 1.8 and big, cmd)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", default="small", choices=list(CONFIGS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the single-process timings")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dist-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--skip-dist", action="store_true")
    ap.add_argument("--dist-examples", default="auto",
                    help="sequences in the torchrun comparison: 'auto' (sized for ~25 s single-process) or a number")
    ap.add_argument("--dist-seconds", type=float, default=25.0, help="single-process seconds 'auto' aims at")
    ap.add_argument("--rows", default=None, help="append the Markdown rows to this file")
    ap.add_argument("--quick", action="store_true", help="check the script: fixture config, 16 sequences, 1 repeat")
    a = ap.parse_args()
    if a.quick:
        a.config, a.examples, a.repeats, a.dist_seconds = "fixture", 16, 1, 2.0
    global CONFIG
    CONFIG = a.config
    if a.memory_child is not None:
        return memory_child(a.examples, a.memory_child)
    if a.dist_worker:
        return dist_worker(a.examples, a.chunk)

    torch.set_num_threads(a.threads)
    cmd = _report.command()
    print(f"{_report.machine()}; load average before: {_report.load_average()}", flush=True)
    model, obj, data = build(a.examples)
    n_params = sum(p.numel() for p in model.parameters())
    size = f"BERT MLM {a.config} ({n_params / 1e3:.0f}k params), {a.examples} sequences"
    rows = []
    print(f"tiny BERT ({a.config}: hidden, layers, vocab, seq = {CONFIGS[a.config]}): {sum(p.numel() for p in model.parameters())} params, {a.examples} sequences, "
          f"threads={torch.get_num_threads()}, chunk={a.chunk}")
    fisher_pass(model, obj, data[:1], "vmap", a.chunk)  # warm-up
    t_vmap = timed(lambda: fisher_pass(model, obj, data, "vmap", a.chunk), a.repeats)
    t_floor = timed(lambda: floor_pass(model, obj, data), a.repeats)
    t_loop = timed(lambda: fisher_pass(model, obj, data, "loop", a.chunk), max(1, a.repeats - 1))
    print(f"vmap Fisher       {t_vmap:8.3f} s")
    print(f"per-example loop  {t_loop:8.3f} s   loop / vmap  = {t_loop / t_vmap:5.2f}x  (target >= 4)")
    print(f"batched backward  {t_floor:8.3f} s   vmap / floor = {t_vmap / t_floor:5.2f}x  (target <= 2)")
    threads = f"{torch.get_num_threads()} thread(s), chunk {a.chunk}, best of {a.repeats}"
    rows.append(_report.row(f"Fisher vmap / per-example loop, {size}, {threads}",
                            f"{t_loop / t_vmap:.2f}× (vmap {t_vmap:.2f} s, loop {t_loop:.2f} s)", "≥ 4×",
                            t_loop / t_vmap >= 4, cmd))
    rows.append(_report.row(f"Fisher vmap / batched-backward floor, {size}, {threads}",
                            f"{t_vmap / t_floor:.2f}× (floor {t_floor:.2f} s)", "≤ 2×", t_vmap / t_floor <= 2, cmd))
    mem = []
    for chunk in (4, 32):
        r = run_child(["--config", a.config, "--examples", str(a.examples), "--memory-child", str(chunk)])
        print(f"peak extra memory, chunk_size={chunk:3d}: {r['peak_extra_mib']:8.1f} MiB")
        mem.append(f"chunk {chunk}: {r['peak_extra_mib']:.0f} MiB")
    rows.append(_report.row(f"Fisher peak extra memory, {size}", "; ".join(mem), "bounded by chunk size", None, cmd))
    if not a.skip_dist:
        if a.dist_examples == "auto":  # the 1-thread vmap time per sequence, scaled to the wanted seconds
            per_seq = t_vmap / a.examples * max(1, torch.get_num_threads())
            n = max(16, int(-(-a.dist_seconds / per_seq // 16)) * 16)
            print(f"torchrun workload: {n} sequences (~{n * per_seq:.0f} s single-process, from {per_seq * 1e3:.1f} ms "
                  "per sequence above)", flush=True)
        else:
            n = int(a.dist_examples)
        rows.append(dist_row(a, n, cmd))
    _report.print_table(rows)
    if a.rows:
        _report.append_rows(a.rows, rows)


if __name__ == "__main__":
    main()
