"""Where and how models run: the ``runtime`` config section shared by every command, on Lightning Fabric.

A job's CLI entry starts one :class:`Runtime` (Fabric: accelerator, devices, nodes, strategy, precision;
it launches the other processes for ``devices > 1``). Library code asks :func:`current` for it instead
of taking device arguments, so a function called outside any job (a test, a notebook) runs on a plain
one-process CPU runtime, as before.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")
STRATEGIES = ("auto", "ddp", "fsdp")  # no ddp_spawn: a job is a command line, ddp re-runs it per rank
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")


@dataclass
class RuntimeConfig:
    """Device, processes and precision of a run (``runtime.*`` keys of every command).

    ``precision`` None: ``bf16-mixed`` on CUDA GPUs that support it, else ``32-true``.
    ``num_workers`` None: ``min(4, cores)`` DataLoader workers (0 on a one-process CPU run).
    """

    accelerator: str = "auto"
    devices: Any = 1  # a count, a list of device indices, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None
    num_workers: int | None = None
    pin_memory: bool = False

    def validate(self) -> None:
        for key, value, allowed in (
            ("accelerator", self.accelerator, ACCELERATORS),
            ("strategy", self.strategy, STRATEGIES),
        ):
            if value not in allowed:
                raise ValueError(f"runtime.{key}={value!r}: must be one of {', '.join(allowed)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"runtime.precision={self.precision!r}: must be one of {', '.join(PRECISIONS)}")
        devices = self.devices
        ok = devices == "auto" or (isinstance(devices, int) and devices >= 1)
        ok = ok or (
            isinstance(devices, list | tuple) and devices and all(isinstance(d, int) for d in devices)
        )
        if not ok:
            raise ValueError(f"runtime.devices={devices!r}: a count >= 1, a list of device indices, or auto")
        if self.num_nodes < 1:
            raise ValueError(f"runtime.num_nodes={self.num_nodes}: must be >= 1")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"runtime.num_workers={self.num_workers}: must be >= 0")
        if self.accelerator == "cuda" and not torch.cuda.is_available():
            raise ValueError("runtime.accelerator=cuda: no CUDA device is visible to torch here")

    def processes(self) -> int:
        """How many processes the run will have (devices per node x nodes; ``auto``: visible GPUs)."""
        devices = self.devices
        if devices == "auto":
            gpu = self.accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()
            devices = torch.cuda.device_count() if gpu else 1
        per_node = len(devices) if isinstance(devices, list | tuple) else int(devices)
        return per_node * self.num_nodes

    def resolved(self) -> RuntimeConfig:
        """Defaults filled in for this machine (what the run's config.yaml records)."""
        accelerator = self.accelerator
        if accelerator == "auto":
            accelerator = "cuda" if torch.cuda.is_available() else "cpu"
        precision = self.precision
        if precision is None:
            gpu_bf16 = accelerator in ("cuda", "gpu") and torch.cuda.is_bf16_supported()
            precision = "bf16-mixed" if gpu_bf16 else "32-true"
        workers = self.num_workers
        if workers is None:
            one_cpu_process = accelerator == "cpu" and self.devices in (1, [0])
            workers = 0 if one_cpu_process else min(4, os.cpu_count() or 1)
        return replace(self, accelerator=accelerator, precision=precision, num_workers=workers)


class Runtime:
    """One Fabric for the whole run, plus what library code asks of it (device, rank, sharding)."""

    def __init__(self, cfg: RuntimeConfig) -> None:
        from lightning_fabric import Fabric
        from lightning_fabric.strategies import DDPStrategy

        cfg.validate()
        self.cfg = cfg.resolved()
        strategy: Any = self.cfg.strategy
        if strategy == "ddp":
            # dense heads read block taps, so the encoder's final norm gets no gradient: DDP must know
            strategy = DDPStrategy(start_method="popen", find_unused_parameters=True)
        self.fabric = Fabric(
            accelerator=self.cfg.accelerator,
            devices=self.cfg.devices,
            num_nodes=self.cfg.num_nodes,
            strategy=strategy,
            precision=self.cfg.precision,
        )

    @property
    def device(self) -> torch.device:
        return self.fabric.device

    @property
    def world_size(self) -> int:
        return self.fabric.world_size

    @property
    def rank(self) -> int:
        return self.fabric.global_rank

    @property
    def is_global_zero(self) -> bool:
        return self.fabric.is_global_zero

    def describe(self) -> str:
        c = self.cfg
        return (
            f"runtime: {self.device.type} x{self.world_size} ({c.num_nodes} node(s), strategy {c.strategy}), "
            f"precision {c.precision}, {c.num_workers} loader worker(s)"
        )

    def barrier(self) -> None:
        if self.world_size > 1:
            self.fabric.barrier()

    def autocast(self) -> AbstractContextManager:
        return self.fabric.autocast()

    def to_device(self, batch: Any) -> Any:
        return self.fabric.to_device(batch)

    def shard_loader(self, loader: DataLoader) -> DataLoader:
        """The same loader over this rank's share of the dataset (every sample exactly once over all
        ranks, uneven shares allowed: evaluation sums metric states, it does not need equal batches)."""
        if self.world_size == 1:
            return loader
        sampler = RankShard(len(loader.dataset), self.rank, self.world_size)
        return DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            pin_memory=self.cfg.pin_memory,
            collate_fn=loader.collate_fn,
        )

    def setup_training(
        self, objective: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """``objective`` and its optimizer set up by Fabric: on the device, under the precision, wrapped in
        DDP when there are several processes (gradients averaged over ranks). BatchNorm layers become
        SyncBatchNorm under DDP where torch supports it (CUDA/XPU/HPU; on CPU torch refuses to sync batch
        statistics, so each rank normalises with its own share of the global batch)."""
        if self.world_size > 1 and self.device.type in SYNC_BATCHNORM_DEVICES:
            objective = nn.SyncBatchNorm.convert_sync_batchnorm(objective)  # same Parameter objects
        return self.fabric.setup(objective, optimizer)

    def train_loader(self, loader: Any) -> Any:
        """A training DataLoader sharded over the ranks so that the global batch (per-device batch x world
        size) is the one-process run's batch: the loader's own sampler (its shuffle and generator, the same
        on every rank) decides the order and sample ``i`` of it goes to rank ``i % world``
        (:class:`GlobalBatchShard`). Fabric's default, a DistributedSampler reshuffling with its own seed,
        would not reproduce a one-process run."""
        if self.world_size == 1 or not isinstance(loader, DataLoader) or loader.batch_size is None:
            return loader
        sharded = DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=GlobalBatchShard(loader.sampler, self.rank, self.world_size),
            drop_last=loader.drop_last,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            worker_init_fn=loader.worker_init_fn,
            generator=loader.generator,  # its draws interleave with the sampler's, as in the original
        )
        return self.fabric.setup_dataloaders(sharded, use_distributed_sampler=False)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """``obj`` as rank ``src`` holds it, on every rank (itself on one process; pickled objects, so CPU
        tensors travel as they are)."""
        return self.fabric.broadcast(obj, src) if self.world_size > 1 else obj

    def share_buffers(self, module: nn.Module) -> None:
        """``module``'s buffers set to rank 0's on every rank (nothing on one process). After DDP training on
        CPU, BatchNorm running statistics hold each rank's own last update; rank 0 writes its own."""
        if self.world_size == 1:
            return
        buffers = dict(module.named_buffers())
        if buffers:
            shared = self.broadcast({name: b.detach().cpu() for name, b in buffers.items()}, 0)
            with torch.no_grad():
                for name, buffer in buffers.items():
                    buffer.copy_(shared[name])

    def everywhere(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (itself on one process): a decision all ranks then share."""
        if self.world_size == 1:
            return flag
        count = self.fabric.all_reduce(torch.tensor(int(flag), device=self.device), reduce_op="sum")
        return int(count) == self.world_size

    @property
    def mixed(self) -> bool:
        """Whether forwards run below fp32 (the ``*-mixed`` autocasts, ``bf16-true``)."""
        return self.cfg.precision not in ("32-true", "32", "64-true")

    def precision_tag(self) -> str:
        """A cache-key suffix for results that depend on the precision: ``""`` under fp32 (so keys written
        before precisions existed stay valid), else ``"-<precision>"``."""
        return f"-{self.cfg.precision}" if self.mixed else ""

    def refuse_fp16_training(self, what: str) -> None:
        """Training steps here take no loss scaling: ``16-mixed`` is refused, naming the key."""
        if self.cfg.precision == "16-mixed":
            raise ValueError(
                f"runtime.precision=16-mixed: {what} needs loss scaling; use bf16-mixed or 32-true"
            )

    def mean_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over the ranks (itself on one process): a loss as the global batch saw it."""
        if self.world_size == 1:
            return value
        return self.fabric.all_reduce(value, reduce_op="mean")


SYNC_BATCHNORM_DEVICES = ("cuda", "xpu", "hpu")


class RankShard(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of ``range(n)``: a partition, no padding, no duplicates."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices: Sequence[int] = range(rank, n, world)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class GlobalBatchShard(Sampler[int]):
    """Rank ``rank``'s share of ``base``'s order: its elements ``rank, rank + world, ...``, read lazily so
    the base sampler draws its randomness at the same moments as in a one-process run (and drained at
    the end, as a one-process epoch would). The last ``len(base) % world`` elements are left out, so every
    rank has as many samples (and steps)."""

    def __init__(self, base: Sampler | Sequence[int], rank: int, world: int) -> None:
        self.base, self.rank, self.world = base, rank, world

    def __len__(self) -> int:
        return len(self.base) // self.world

    def __iter__(self) -> Iterator[int]:
        order = iter(self.base)
        for _ in range(len(self)):
            yield list(itertools.islice(order, self.world))[self.rank]
        for _ in order:  # drain: a sampler may draw again when exhausted (RandomSampler does)
            pass


_CURRENT: Runtime | None = None


def current() -> Runtime:
    """The run's runtime; a one-process CPU fp32 runtime when no job started one."""
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = Runtime(RuntimeConfig(accelerator="cpu", devices=1, precision="32-true", num_workers=0))
    return _CURRENT


@contextmanager
def started(cfg: RuntimeConfig) -> Iterator[Runtime]:
    """Build and launch the run's Fabric (spawning the other processes when ``devices > 1``; under
    torchrun or srun, first checking they started as many as configured), make it :func:`current` for
    the block, and restore the previous one after."""
    global _CURRENT
    from simo_merge.peers import check_launcher

    cfg.validate()
    check_launcher(cfg)
    previous, runtime = _CURRENT, Runtime(cfg)
    runtime.fabric.launch()
    _CURRENT = runtime
    try:
        yield runtime
    finally:
        _CURRENT = previous


def on_rank_zero() -> bool:
    """True where files may be written (the one process, or global rank 0)."""
    return _CURRENT is None or _CURRENT.is_global_zero


def autocast() -> AbstractContextManager:
    """The current runtime's precision context (a no-op on 32-true)."""
    return current().autocast() if _CURRENT is not None else nullcontext()


def current_device() -> torch.device:
    """The started runtime's device; the CPU when no job started one (nothing is built for the answer)."""
    return _CURRENT.device if _CURRENT is not None else torch.device("cpu")


@contextmanager
def placed(*modules: nn.Module) -> Iterator[torch.device]:
    """``modules`` on the current runtime's device for the block (yielded), each back where it was after."""
    device = current().device
    homes = [next(itertools.chain(m.parameters(), m.buffers()), torch.empty(0)).device for m in modules]
    try:
        for module in modules:
            module.to(device)
        yield device
    finally:
        for module, home in zip(modules, homes, strict=True):
            module.to(home)
