"""One run per output folder: an advisory ``flock`` on ``<folder>/.simo_merge.lock``.

Two runs writing the same folder would interleave checkpoints and reports; the second one stops at
start with :class:`OutputLockedError` naming the folder and the holder's pid. The operating system drops
the lock when the holder exits, ``kill -9`` included, so there is never a stale lock to delete. The lock
is re-entrant within one process (a job may call another step that locks the same folder). The lock file
is opened without following a symlink and must be a regular file with one link (a link to a file elsewhere
is refused, never written); it is never truncated: the holder's pid overwrites a fixed-width field.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".simo_merge.lock"
_held: dict[Path, int] = {}  # resolved folder -> depth, for this process
_PID_WIDTH = 12  # the pid field, padded so a shorter pid overwrites a longer one without truncating


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
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise OutputLockedError(
            f"{path}: the run lock is a symlink; refusing to follow it (remove it)"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise OutputLockedError(
                f"{path}: the run lock is not a plain file (a hard link, FIFO or device); remove it"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise OutputLockedError(
                f"{folder}: another simo-merge run (pid {holder}) is writing to this folder "
                f"(lock {path}); wait for it or choose another output folder"
            ) from None
        os.pwrite(fd, f"{os.getpid():<{_PID_WIDTH}}\n".encode(), 0)
        _held[key] = 1
        try:
            yield path
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing the descriptor releases the flock
