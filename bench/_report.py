"""Shared by the benchmark scripts: machine state and ready-to-paste Markdown rows for BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import shlex
import sys

import torch


def load_average() -> str:
    """The 1/5/15-minute load averages as 'a / b / c' (the row says whether the machine was quiet)."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def command() -> str:
    """The command line that produced the numbers."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def machine() -> str:
    return (f"{platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
            + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))


HEADER = "| figure | measured | target | met? | command | load average |\n|---|---|---|---|---|---|"


def row(figure: str, measured: str, target: str, met: bool | None, cmd: str | None = None, load: str | None = None) -> str:
    """One Markdown row; ``met=None`` prints 'reported' (no target to meet)."""
    verdict = "reported" if met is None else ("**met**" if met else "**missed**")
    return f"| {figure} | {measured} | {target} | {verdict} | `{cmd or command()}` | {load or load_average()} |"


def print_table(rows: list[str]) -> None:
    print("\nMarkdown for BENCHMARKS.md (" + machine() + "):\n")
    print(HEADER)
    for r in rows:
        print(r)
    print(flush=True)


def append_rows(path: str, rows: list[str]) -> None:
    """Append rows to a Markdown file (the header first if the file is new), for bench/run_all_cpu.sh."""
    from pathlib import Path

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    new = not p.exists() or p.stat().st_size == 0
    with p.open("a") as f:
        if new:
            f.write(HEADER + "\n")
        f.write("".join(r + "\n" for r in rows))
