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


def free_port() -> int:
    """A TCP port free on this machine now (for a process group's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(
    args: list[str], cwds: list[str | os.PathLike], timeout: int = 120, nodes: int | None = None
) -> list[subprocess.CompletedProcess]:
    """``python <args>`` once per rank, as torchrun starts them (its environment variables), rank ``r`` in
    ``cwds[r]``; ``nodes`` machines (default: one per rank) of equal size. Returns every rank's finished
    process (stdout, stderr, return code); a rank still running after ``timeout`` fails the test."""
    world = len(cwds)
    nodes = nodes or world
    per_node = world // nodes
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    base.update(MASTER_PORT=str(free_port()), WORLD_SIZE=str(world), TORCHELASTIC_RUN_ID="test")
    base.update(LOCAL_WORLD_SIZE=str(per_node))
    procs = []
    for rank, cwd in enumerate(cwds):
        env = {
            **base,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank % per_node),
            "GROUP_RANK": str(rank // per_node),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, *args],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done
