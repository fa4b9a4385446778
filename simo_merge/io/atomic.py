"""Atomic file writes: write to a temporary name beside the target, then rename over it.

An interrupted run therefore never leaves a truncated file at the destination. Temporary files are
named ``.<target>.<pid>.<random>.tmp``; the next write of the same target removes those whose process
is gone (a ``kill -9`` leaves them behind). Written files get the normal mode ``0o666 & ~umask``
(``mkstemp`` alone would leave them ``0600``). A full disk, reported by the OS (``ENOSPC``) or by a writer
library in its own words (safetensors' ``No space left on device``), becomes one :class:`DiskFullError`
naming the target; the temporary file is removed as on any failure.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class DiskFullError(OSError):
    """No space was left while writing a file; the message names the file (nothing was left behind)."""


def _disk_full(err: BaseException) -> bool:
    return (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in str(err)


def default_file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete temporary files of ``path`` left by writers that no longer run; return what was removed."""
    path = Path(path)
    removed = []
    for name in glob.glob(glob.escape(str(path.parent / f".{path.name}.")) + "*.tmp"):
        middle = Path(name).name[len(path.name) + 2 : -len(".tmp")]
        pid = middle.split(".", 1)[0]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue
        try:
            Path(name).unlink()
            removed.append(Path(name))
        except FileNotFoundError:
            pass
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike, publish: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` only if the block succeeds.

    ``publish=False`` (the caller's decision: under several processes every rank but global rank 0)
    writes to a scratch folder that is then removed, so every rank runs the same code and only one
    publishes."""
    path = Path(path)
    try:
        with _temporary(path, publish) as tmp:
            yield tmp
    except Exception as err:
        if _disk_full(err):
            raise DiskFullError(
                f"{path}: no space left on the device while writing it (nothing written)"
            ) from None
        raise


@contextmanager
def _temporary(path: Path, publish: bool) -> Iterator[Path]:
    if not publish:
        with tempfile.TemporaryDirectory(prefix="simo_merge_rank_") as scratch:
            yield Path(scratch) / path.name
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, default_file_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str, publish: bool = True) -> Path:
    """Write ``text`` atomically (``publish=False``: to a scratch file that is removed)."""
    with atomic_path(path, publish) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, publish: bool = True) -> Path:
    """Write ``data`` as indented JSON atomically (``publish`` as in :func:`write_text`)."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", publish)
