"""Stage 2 in parallel: the grid's units (:class:`.grid.Unit`, all pending arms of one (task, seed,
size)) trained in worker processes, each with its own torch threads.

* **Same numbers.** A unit seeds everything it draws from its (seed, size) (:func:`.grid.train_unit`),
  so a row does not depend on the process, the worker count or the order of units; only
  ``seconds`` differs.
* **Start.** ``fork`` on Linux where the parent runs torch on one thread (no OpenMP
  pool to inherit): the workers get the unit context (:class:`.grid.UnitContext`: tasks, rates,
  Fisher scores, checkpoint path) without pickling, and monkeypatched functions with it.
  Otherwise ``spawn``, with the context pickled once per worker.
* **Rows.** A worker returns a unit's rows when the unit ends; only the parent writes
  ``runs.jsonl`` (one line per run) and advances the progress bar by the unit's runs.
* **Failures.** Ctrl-C (SIGINT/SIGTERM in the parent; workers ignore SIGINT and end silently on
  SIGTERM) terminates the pool: no worker outlives the parent, finished units are on disk, the
  running units' runs are lost (at most ``workers`` units). An exception in one unit stops new
  units from starting, keeps the rows of every unit still running as they finish, then is raised.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from analyses.cli.eta import format_duration
from analyses.guided_dropout.grid import Runs, Setup, Unit, UnitContext, train_unit, unit_context, unit_cost, units

__all__ = ["default_workers", "run_units", "start_method", "train_seeds"]

if TYPE_CHECKING:
    from analyses.guided_dropout.study import GuidedDropoutConfig

_CTX: UnitContext | None = None  # a worker's unit context, set by _init_worker


def default_workers() -> int:
    """The cores this process may use (``os.sched_getaffinity``, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def start_method() -> str:
    """``fork`` on Linux while torch runs on one thread here (no OpenMP pool to inherit), else ``spawn``."""
    return "fork" if sys.platform.startswith("linux") and torch.get_num_threads() == 1 else "spawn"


def _init_worker(ctx: UnitContext, threads: int) -> None:
    global _CTX
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker inherits the CLI's raising handler
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # blocked by _start
    torch.set_num_threads(threads)
    _CTX = ctx


def _work(unit: Unit) -> tuple[Unit, list[dict[str, Any]], float, BaseException | None]:
    """One unit in a worker: its rows, its seconds, and the exception that cut it short (if one did)."""
    assert _CTX is not None
    t0, rows = time.perf_counter(), list[dict[str, Any]]()
    try:
        train_unit(_CTX, unit, rows.append)
    except Exception as exc:  # handed to the parent, which raises it after the running units end
        return unit, rows, time.perf_counter() - t0, exc
    return unit, rows, time.perf_counter() - t0, None


class _Eta:
    """The time estimate, printed once when the first unit ends: the rest's cost (runs × steps, see
    :func:`.grid.unit_cost`) at the first unit's seconds per cost, shared by ``n`` workers, less what
    the other first-wave units already did; and the whole run's time with what was spent so far."""

    def __init__(self, ctx: UnitContext, todo: Sequence[Unit], n: int, started: float) -> None:
        self.cost = {u: unit_cost(ctx.cfg, u) for u in todo}
        self.n, self.started, self.printed = n, started, False

    def finished(self, unit: Unit, seconds: float) -> None:
        cost = self.cost.pop(unit)
        if self.printed or not self.cost:
            return
        self.printed = True
        rate = seconds / max(cost, 1)
        in_flight = min(self.n - 1, len(self.cost)) * seconds
        rest = max(rate * sum(self.cost.values()) - in_flight, 0.0) / self.n
        spent = time.perf_counter() - self.started
        k = len(self.cost)
        print(f"estimated time: {format_duration(rest)} to go ({k} (task, seed, size) units left × "
              f"{seconds * sum(self.cost.values()) / max(cost, 1) / k:.3g} s on {self.n} worker(s)); "
              f"{format_duration(spent + rest)} in all with the {format_duration(spent)} spent so far",
              file=sys.stdout, flush=True)


def run_units(ctx: UnitContext, todo: Sequence[Unit], runs: Runs, workers: int) -> None:
    """Train ``todo`` in ``min(workers, len(todo))`` processes (1: here, writing each run as it ends),
    appending every row to ``runs``."""
    n = max(1, min(workers, len(todo)))
    eta = _Eta(ctx, todo, n, runs.started)
    if n == 1:
        for unit in todo:
            t0 = time.perf_counter()
            train_unit(ctx, unit, runs.add)
            eta.finished(unit, time.perf_counter() - t0)
        return
    threads = ctx.cfg.threads or max(1, default_workers() // n)
    pool = None
    try:
        pool = _start(n, ctx, threads)
        _drain(pool, list(todo), runs, eta, n)
        pool.close()
    except BaseException:
        if pool is not None:
            pool.terminate()  # Ctrl-C or an error: the running units stop, no worker outlives us
        raise
    finally:
        if pool is not None:
            pool.join()


def _start(n: int, ctx: UnitContext, threads: int) -> Any:
    """A pool of ``n`` workers, started with SIGINT and SIGTERM blocked, so that a worker sees them only
    once :func:`_init_worker` has set its own handlers (no traceback from a worker still starting)."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, sigs) if hasattr(signal, "pthread_sigmask") else None
    try:
        return mp.get_context(start_method()).Pool(n, initializer=_init_worker, initargs=(ctx, threads))
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _drain(pool: Any, todo: list[Unit], runs: Runs, eta: _Eta, n: int) -> None:
    """Keep ``n`` units running; write each unit's rows as it ends; after a unit's exception start no
    more, let the running ones end, then raise it."""
    done: queue.Queue[Any] = queue.Queue()
    running, error = 0, None
    while todo or running:
        while todo and running < n and error is None:
            pool.apply_async(_work, (todo.pop(0),), callback=done.put, error_callback=done.put)
            running += 1
        if not running:
            break
        item = done.get()
        running -= 1
        if isinstance(item, BaseException):  # the result could not come back (e.g. unpicklable)
            error = error or item
            continue
        unit, rows, seconds, exc = item
        for row in rows:
            runs.add(row)
        if exc is not None:
            error = error or exc
        else:
            eta.finished(unit, seconds)
    if error is not None:
        raise error


def train_seeds(cfg: GuidedDropoutConfig, st: Setup, runs: Runs, seeds: Sequence[int],
                data: dict[str, tuple[Any, Any]], workers: int = 1) -> None:
    """Stage 2 for ``seeds``: every (task, size, seed, arm) run not in ``runs`` yet, its units in ``workers``
    processes (1: here, one after another).

    The first unit to finish prints the time estimate for the rest."""
    todo = units(cfg, st, runs, seeds)
    runs.bar.update(len(seeds) * len(st.tasks) * len(cfg.sizes) * len(cfg.arms) - sum(len(u.arms) for u in todo))
    if todo:
        run_units(unit_context(cfg, st, runs.key, data), todo, runs, workers)
