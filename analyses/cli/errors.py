"""How a command ends: the exit status and the one line a user sees for each kind of failure.

* bad input (:data:`USER_ERRORS`): ``landscape: error: ...``, exit 2;
* out of memory (``torch.OutOfMemoryError``, or a CPU allocation failure raised as ``RuntimeError``):
  ``landscape: error: out of memory ...`` naming the flags to lower, exit 2;
* SIGINT or SIGTERM: ``landscape: interrupted ...``, exit 130, after the command's ``finally``
  blocks restored the weights and saved the finished work;
* anything else is a bug: ``landscape: internal error: ...``, exit 1 (``-v`` shows the traceback).

:func:`run_guarded` runs the command under :func:`interrupts_raise`: SIGINT and SIGTERM raise
``KeyboardInterrupt`` in every run, also when the process was started with SIGINT ignored (a background job of a
non-interactive shell: ``landscape scan ... &`` then ``kill -INT``), where Python keeps the
inherited "ignore" and a scan would otherwise run to its end.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from landscape.util.lock import OutputLocked

# Errors that are the user's: a bad path, value or data file. They end as one line and exit 2.
# A second run on a locked --out is the user's too.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, OutputLocked)

EXIT_USER = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130

#: What to lower when memory runs out (every computing command has these flags or their analogue).
OOM_HINT = ("lower --batch-size (sequences per batch), --examples, --max-length (the block size) or "
            "--batch-points (scans), or use a device with more memory")

_CPU_OOM_WORDS = ("defaultcpuallocator: can't allocate memory", "can't allocate memory", "could not allocate",
                  "cannot allocate memory", "out of memory")


def _raise_interrupt(signum: int, frame: Any) -> None:
    """Signal handler: SIGINT and SIGTERM both become ``KeyboardInterrupt`` in the main thread."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``KeyboardInterrupt``; the previous handlers come
    back afterwards (no-op outside the main thread, where Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure: ``torch.OutOfMemoryError`` (CUDA/MPS), ``MemoryError``,
    or a ``RuntimeError`` whose message says an allocation failed (CPU: "DefaultCPUAllocator: can't
    allocate memory")."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(w in text for w in _CPU_OOM_WORDS)


def out_of_memory_line(exc: BaseException) -> str:
    """``landscape: error: out of memory (<first line of the message>); <what to lower>.``"""
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    if len(first) > 160:
        first = first[:157] + "..."
    return f"landscape: error: out of memory ({first}); {OOM_HINT}."


def run_guarded(command: Callable[[], int], verbose: bool = False) -> int:
    """Run ``command`` and turn its failure into one line on stderr and an exit status (see module doc)."""
    try:
        with interrupts_raise():
            return int(command() or 0)
    except KeyboardInterrupt:
        print("landscape: interrupted; the weights were restored and finished work was saved where the command "
              "supports it (rerun with --resume).", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as exc:
        if verbose:
            traceback.print_exc()
        print(f"landscape: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except Exception as exc:  # a bug, not the user's input, unless memory ran out
        if verbose:
            traceback.print_exc()
        if is_out_of_memory(exc):
            print(out_of_memory_line(exc), file=sys.stderr)
            return EXIT_USER
        print(f"landscape: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not verbose:
            print("landscape: run again with -v for the traceback, and please report it.", file=sys.stderr)
        return EXIT_INTERNAL
