"""Commands run in a child Python process, as a user runs them: offline, one OpenMP thread each (two
processes share the CPU), failing with the child's stderr; a timeout turns a deadlock into a failure."""

from __future__ import annotations

import os
import subprocess
import sys


def run_python(*args: str, timeout: int = 300) -> str:
    """``python <args>`` in a child process; its stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_cli(*args: str, timeout: int = 300) -> str:
    """``simo-merge <args>`` in a child process; its stdout."""
    return run_python("-m", "simo_merge.cli", *args, timeout=timeout)
