"""Claim a run's output before any work: the folder must be a writable folder, and no other run's.

Jobs call :func:`check_output_dir` / :func:`check_output_file` at start, so a path that is a file, a
read-only folder or a folder another run is writing fails in the first second with the key and path
named, not after an hour of training.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simo_merge.io.lock import output_lock


class OutputPathError(ValueError):
    """An output path cannot be written (it is a file, read-only, or its parent is a file)."""


def check_output_dir(folder: str | os.PathLike, key: str = "output_dir") -> Path:
    """Create ``folder`` if needed and prove it is writable (a probe file is created and removed)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{key}={folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputPathError(f"{key}={folder}: cannot write there ({err.strerror or err})") from err
    return folder


def check_output_file(path: str | os.PathLike, key: str = "output") -> Path:
    """Prove that ``path`` can be (re)written: not a folder, and its folder writable."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{key}={path}: is a folder, expected a file path")
    check_output_dir(path.parent, f"the folder of {key}")
    if path.exists() and not os.access(path, os.W_OK) and not os.access(path.parent, os.W_OK):
        raise OutputPathError(f"{key}={path}: exists and is read-only")
    return path


@contextmanager
def claim_output_dir(folder: str | os.PathLike, key: str = "output_dir") -> Iterator[Path]:
    """:func:`check_output_dir` then hold the folder's run lock (:mod:`simo_merge.io.lock`)."""
    folder = check_output_dir(folder, key)
    with output_lock(folder):
        yield folder
