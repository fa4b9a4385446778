"""One run per output folder: an advisory ``flock`` on ``<folder>/.simo_merge.lock``.

Two runs writing the same folder would interleave checkpoints and reports; the second one stops at
start with :class:`OutputLockedError` naming the folder and the holder's pid. The operating system drops
the lock when the holder exits, ``kill -9`` included, so there is never a stale lock to delete. The lock
is re-entrant within one process (a job may call another step that locks the same folder).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".simo_merge.lock"
_held: dict[Path, int] = {}  # resolved folder -> depth, for this process


class OutputLockedError(RuntimeError):
    """Another run holds the output folder's lock."""


@contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the advisory lock of ``folder`` (created if missing) for the duration of the block."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield folder / LOCK_NAME
        finally:
            _held[key] -= 1
        return
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise OutputLockedError(
                f"{folder}: another simo-merge run (pid {holder}) is writing to this folder "
                f"(lock {path}); wait for it or choose another output folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = 1
        try:
            yield path
        finally:
            del _held[key]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
