"""What the processes of one run owe each other: the launcher's process count, one decision for every
rank, an output folder they all see, and noticing at once that a peer is gone.

Each check is a no-op on one process. A lost peer (its process ended or its connection broke) becomes one
:class:`PeerLostError` line on the survivors instead of the backend's traceback.
"""

from __future__ import annotations

import os
import pickle
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

if TYPE_CHECKING:
    from simo_merge.runtime import Runtime, RuntimeConfig

T = TypeVar("T")


class PeerLostError(RuntimeError):
    """Another rank's process ended (or its connection broke) mid-run; this rank stops too."""


# how gloo words a collective that failed because a peer process is gone (NCCL: a DistError)
PEER_LOSS_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
UNWRITTEN = "the outputs this run had not written yet (files it wrote before are complete; rerun to finish)"


def is_peer_loss(err: BaseException) -> bool:
    """Whether ``err`` (raised by a collective) says that a peer process is gone."""
    dist_error = getattr(torch.distributed, "DistError", ())
    return isinstance(err, dist_error) or any(sign in str(err) for sign in PEER_LOSS_SIGNS)


def launched_processes() -> tuple[str, int] | None:
    """(launcher, processes) when an outside launcher started this process (torchrun: ``WORLD_SIZE``;
    SLURM's srun: ``SLURM_NTASKS``); None when it runs on its own or under Fabric's own launcher."""
    from lightning_fabric.plugins.environments import TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return "torchrun", int(os.environ["WORLD_SIZE"])
    # Fabric's rule for srun: SLURM_NTASKS set, job name not "bash"/"interactive" (a shell in an allocation)
    interactive = os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive")
    if os.environ.get("SLURM_NTASKS", "").isdigit() and not interactive:
        return "srun", int(os.environ["SLURM_NTASKS"])
    return None


def check_launcher(cfg: RuntimeConfig) -> None:
    """Stop (every rank, before any collective) when an outside launcher started another number of
    processes than ``runtime.devices x runtime.num_nodes``: each would otherwise run the whole job alone."""
    launched = launched_processes()
    if launched is not None and launched[1] != cfg.processes():
        launcher, count = launched
        raise ValueError(
            f"runtime.devices={cfg.devices} x runtime.num_nodes={cfg.num_nodes} = {cfg.processes()} "
            f"process(es), but {launcher} started {count}: set runtime.devices (per machine) and "
            "runtime.num_nodes to what the launcher starts"
        )


@contextmanager
def watching_peers(runtime: Runtime, what: str, unwritten: str = UNWRITTEN) -> Iterator[None]:
    """A collective in the block that fails because a peer process is gone raises one
    :class:`PeerLostError` line: this rank, the lost one (knowable with two processes), ``what`` was
    running and what was left ``unwritten``; instead of the backend's traceback."""
    try:
        yield
    except PeerLostError:
        raise
    except RuntimeError as err:
        if runtime.world_size == 1 or not is_peer_loss(err):
            raise
        lost = f"rank {1 - runtime.rank}" if runtime.world_size == 2 else "another rank"
        raise PeerLostError(
            f"rank {runtime.rank} lost {lost} (its process ended or its connection broke) during {what}; "
            f"stopped there, not written: {unwritten}"
        ) from err


def check_peers(runtime: Runtime, what: str, unwritten: str = UNWRITTEN) -> None:
    """Stop (:class:`PeerLostError`) unless every rank is still here: a one-number all_reduce, cheap
    enough for every training step of a loop whose ranks otherwise never meet. Nothing on one process."""
    if runtime.world_size == 1:
        return
    with watching_peers(runtime, what, unwritten):
        runtime.fabric.all_reduce(torch.ones((), device=runtime.device), reduce_op="sum")


def decided_on_rank_zero(runtime: Runtime, decide: Callable[[], T]) -> T:
    """``decide()`` run on rank 0 alone, its result (or the exception it raised) broadcast: every rank
    returns the result or raises the error before any rank starts work (one process: ``decide()``)."""
    if runtime.world_size == 1:
        return decide()
    outcome: Any = None
    error: Exception | None = None
    if runtime.is_global_zero:
        try:
            outcome = ("ok", decide())
        except Exception as err:
            error, outcome = err, ("error", err)
            try:
                pickle.dumps(err)
            except Exception:  # an error the other ranks cannot receive: its text, then
                outcome = ("error", RuntimeError(f"rank 0: {type(err).__name__}: {err}"))
    kind, value = runtime.broadcast(outcome, 0)
    if kind == "error":
        raise error or value  # rank 0: its own error, traceback included
    return value


def check_shared_folder(runtime: Runtime, folder: str | os.PathLike, key: str) -> None:
    """Stop on every rank when some rank does not see ``folder`` as rank 0 does (machines that do not
    share the output folder's file system): rank 0 writes a token file there, every rank reads it back
    and all learn which ranks could not. Nothing on one process."""
    if runtime.world_size == 1:
        return
    token = secrets.token_hex(8) if runtime.is_global_zero else None
    if runtime.is_global_zero:
        probe = Path(folder) / f".simo_merge.shared.{token}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(token)
    token = runtime.broadcast(token, 0)  # after rank 0 closed the file
    probe = Path(folder) / f".simo_merge.shared.{token}"
    try:
        seen = probe.read_text() == token
    except OSError:
        seen = False
    views = runtime.fabric.all_gather(
        torch.tensor([int(seen), runtime.fabric.node_rank], device=runtime.device)
    )
    if runtime.is_global_zero:
        probe.unlink()
    blind = [(rank, int(node)) for rank, (ok, node) in enumerate(views.tolist()) if not ok]
    if blind:
        ranks = ", ".join(f"{rank} (node {node})" for rank, node in blind)
        raise ValueError(
            f"{key}={folder}: rank(s) {ranks} do not see the file rank 0 wrote there: runs on several "
            "machines need the output folder on a file system every machine mounts (NFS, Lustre, ...)"
        )
