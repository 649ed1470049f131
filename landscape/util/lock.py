"""One writer per output: a lock file ``<out>/.landscape.lock`` holding the pid, host and start time.

The file is created with ``O_CREAT | O_EXCL`` (atomic on local file systems), so of two runs
started together exactly one gets it. A lock whose process is gone (same host, pid not alive) is
stale: it is taken over with a note. A lock from another host is never taken over: the message
says which file to delete when that run is known to be dead.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "OutputLocked", "acquire", "hold", "lock_path", "pid_alive", "read_lock", "release"]

LOCK_NAME = ".landscape.lock"
#: An ``--out`` ending like this names a file (``landscape guided-dropout --out rates.json``), not a folder.
FILE_SUFFIXES = (".json", ".npz", ".h5", ".safetensors", ".pt", ".csv", ".txt", ".png", ".pdf", ".svg")
log = logging.getLogger("landscape")


class OutputLocked(RuntimeError):
    """Another live run holds the output folder."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0 probes without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def read_lock(path: str | Path) -> dict[str, Any] | None:
    """The holder recorded in lock file ``path`` (pid, host, started, command), or None if unreadable."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "an unknown run"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    return f"process {holder.get('pid')} on {holder.get('host')} (started {started}: {holder.get('command', '?')})"


def _create(path: Path, record: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
    return True


def _is_stale(holder: dict[str, Any] | None, host: str) -> bool:
    return holder is not None and holder.get("host") == host and not pid_alive(int(holder.get("pid", -1)))


def lock_path(out: str | Path) -> Path:
    """The lock file of output ``out``: ``<out>/.landscape.lock`` for a folder, ``<dir>/.<name>.lock``
    beside an output that is a file (a result file name, e.g. ``rates.json``, that is no folder)."""
    out = Path(out).expanduser()
    if out.suffix.lower() in FILE_SUFFIXES and not out.is_dir():
        return out.parent / f".{out.name}.lock"
    return out / LOCK_NAME


def acquire(out: str | Path, command: str = "") -> Path:
    """Take the lock of output ``out`` (its folder is created if missing) for this process; returns
    the lock file.

    Raises:
        OutputLocked: a live run (or one on another host) holds it; the message names that process.
    """
    path = lock_path(out)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    record = {"pid": os.getpid(), "host": host, "started": time.time(), "command": command}
    for _ in range(3):
        if _create(path, record):
            return path
        holder = read_lock(path)
        if holder is None and time.time() - path.stat().st_mtime < 2.0:
            time.sleep(0.1)  # being written right now by the run that created it
            continue
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == host:
            raise OutputLocked(f"{folder} is already locked by this process; nest no runs on one --out.")
        if holder is None or _is_stale(holder, host):
            log.warning("landscape: note: taking over the lock of %s from %s, which is no longer running.",
                        folder, _describe(holder))
            path.unlink(missing_ok=True)
            continue
        raise OutputLocked(f"--out {out} is in use by {_describe(holder)}; wait for it to finish, choose another "
                           f"--out, or delete {path} if that run is dead.")
    raise OutputLocked(f"could not lock --out {out}: {path} keeps changing; is another run starting there?")


def release(path: Path) -> None:
    """Remove lock file ``path`` if this process still holds it."""
    holder = read_lock(path)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextmanager
def hold(out: str | Path | None, command: str = "") -> Iterator[Path | None]:
    """Hold the lock of output ``out`` for a ``with`` block (no-op for None); a folder
    it had to create is removed again when the block wrote nothing there."""
    if out is None:
        yield None
        return
    created = not lock_path(out).parent.exists()
    path = acquire(out, command)
    try:
        yield path
    finally:
        release(path)
        if created and path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()  # the run failed before writing: leave no empty folder behind
