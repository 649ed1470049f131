"""Two-rank efficiency, shared by bench_scan.py (section 4) and bench_fisher.py (section 4).

The timed interval is the workload alone: from a barrier after setup (imports, model build, data,
warm-up) to a barrier after the result is on every rank. Three runs of the same worker, 1 thread
each (``OMP_NUM_THREADS=1``):

* 1 rank: one process (``torchrun --nproc_per_node=1``);
* 2 ranks: ``torchrun --nproc_per_node=2`` (gloo), the work sharded by the library;
* the machine's ceiling: two independent plain processes, their work started together (a file
  barrier after setup), each doing the whole 1-rank workload. Their throughput,
  2 x (1-rank seconds) / (slower of the pair), is the best any 2-rank run can reach on these two
  cores (shared caches, memory bandwidth, other load), so speed-up / ceiling is the part the
  library controls.

Each worker prints one JSON line (rank 0): ``seconds`` (barrier to barrier), ``cpu`` (each rank's
CPU seconds inside the interval) and ``own`` (each rank's seconds to its own result, before the
closing barrier: the difference to ``seconds`` is waiting on the other rank).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

#: Environment variable naming the start-barrier folder of the ceiling pair.
SYNC = "LANDSCAPE_BENCH_PAIR_SYNC"


def _file_barrier(folder: str, parties: int = 2) -> None:
    """Independent processes (the ceiling pair) start their work together: each leaves a file in
    ``folder`` and waits for ``parties`` of them."""
    from pathlib import Path

    Path(folder, str(os.getpid())).touch()
    while len(list(Path(folder).iterdir())) < parties:
        time.sleep(0.005)


def timed_interval(work: Callable[[], Any]) -> tuple[Any, dict[str, Any] | None]:
    """Run ``work`` between two barriers; (its result, the timing record on rank 0, else None)."""
    from landscape import util

    ctx = util.dist_context()
    if ctx.active:
        torch.distributed.barrier()
    elif os.environ.get(SYNC):
        _file_barrier(os.environ[SYNC])
    t0, c0 = time.perf_counter(), time.process_time()
    out = work()
    own, cpu = time.perf_counter() - t0, time.process_time() - c0
    if ctx.active:
        torch.distributed.barrier()
    seconds = time.perf_counter() - t0
    mine = torch.tensor([own, cpu], dtype=torch.float64)
    parts = [torch.zeros_like(mine) for _ in range(ctx.world_size)]
    if ctx.active:
        torch.distributed.all_gather(parts, mine)
        torch.distributed.destroy_process_group()
    else:
        parts = [mine]
    if not ctx.is_main:
        return out, None
    return out, {"world": ctx.world_size, "seconds": seconds, "own": [float(p[0]) for p in parts],
                 "cpu": [float(p[1]) for p in parts], "threads": torch.get_num_threads()}


def _launch(script: str, args: list[str], nproc: int | None, sync: str | None = None) -> subprocess.Popen:
    """``torchrun`` with ``nproc`` ranks, or (None) a plain process, 1 thread each; ``sync``: the
    folder of the ceiling pair's start barrier."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({SYNC: sync} if sync else {})}
    launcher = [sys.executable]
    if nproc is not None:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.Popen([*launcher, script, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _result(proc: subprocess.Popen) -> dict[str, Any]:
    out, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(err[-2000:])
    return json.loads(out.strip().splitlines()[-1])


def run(script: str, args: list[str], nproc: int) -> dict[str, Any]:
    """One torchrun of ``script args`` with ``nproc`` ranks of 1 thread: the worker's JSON record."""
    return _result(_launch(script, args, nproc))


def ceiling(script: str, args: list[str]) -> dict[str, Any]:
    """Two independent 1-rank runs started together: the slower one's record and both wall times."""
    import tempfile

    with tempfile.TemporaryDirectory() as sync:
        procs = [_launch(script, args, None, sync) for _ in range(2)]
        recs = [_result(p) for p in procs]
    return {"seconds": max(r["seconds"] for r in recs), "pair": [r["seconds"] for r in recs]}


def compare(script: str, args: list[str], label: str, one: dict[str, Any] | None = None,
            ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
    """1 rank (unless ``one`` is that run's record already), 2 ranks and the ceiling pair; prints them and
    returns (one, two, pair, summary)."""
    one = one or run(script, args, 1)
    two = run(script, args, 2)
    pair = ceiling(script, args)
    speed = one["seconds"] / two["seconds"]
    top = 2 * one["seconds"] / pair["seconds"]
    cpu = ", ".join(f"{c:.1f}" for c in two["cpu"])
    own = ", ".join(f"{c:.1f}" for c in two["own"])
    summary = (f"{speed:.2f}× (1 rank {one['seconds']:.1f} s, CPU {one['cpu'][0]:.1f} s; "
               f"2 ranks {two['seconds']:.1f} s, CPU per rank {cpu} s, each rank done at {own} s; "
               f"machine ceiling {top:.2f}× from two independent 1-rank runs together "
               f"({pair['pair'][0]:.1f}, {pair['pair'][1]:.1f} s), so {speed / top:.0%} of it)")
    print(f"[{label}] {summary}", flush=True)
    return one, two, pair, summary
