"""The expert pool: pretrained state θ0, per-task fine-tuned states θt and their frozen heads.

Task vectors τt = θt − θ0 are computed lazily, one tensor at a time, so holding a pool costs only
its inputs. Only floating-point entries have task vectors; integer/bool buffers (position ids,
counters) are copied from θ0 by the merge layer, never merged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor

from simo_merge.finite import check_finite
from simo_merge.io.checkpoint import load_state

if TYPE_CHECKING:
    from simo_merge.encoders import Encoder
    from simo_merge.heads import TaskHead

StateDict = dict[str, Tensor]


class ExpertMismatchError(ValueError):
    """An expert does not share θ0's keys, shapes or dtypes."""

    def __init__(self, task: str, source: str, key: str, reason: str) -> None:
        self.task, self.source, self.key, self.reason = task, source, key, reason
        super().__init__(f"expert {task!r} ({source}): key {key!r}: {reason}")


def is_mergeable(t: Tensor) -> bool:
    """Floating-point tensors are merged; everything else (ints, bools) is copied from θ0."""
    return t.is_floating_point()


class TaskVector(Mapping[str, Tensor]):
    """Read-only lazy mapping key -> (θt[key] − θ0[key]) in float32, over the mergeable keys."""

    def __init__(self, base: Mapping[str, Tensor], expert: Mapping[str, Tensor]) -> None:
        self._base = base
        self._expert = expert
        self._keys = [k for k, v in base.items() if is_mergeable(v)]

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._expert or not is_mergeable(self._base[key]):
            raise KeyError(key)
        return self._expert[key].float() - self._base[key].float()

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def validate_expert(base: Mapping[str, Tensor], expert: Mapping[str, Tensor], task: str, source: str) -> None:
    """Raise :class:`ExpertMismatchError` naming the first key whose presence, shape or dtype differs."""
    for key, ref in base.items():
        if key not in expert:
            raise ExpertMismatchError(task, source, key, "missing from the expert")
        got = expert[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise ExpertMismatchError(
                task, source, key, f"shape {tuple(got.shape)} != θ0's {tuple(ref.shape)}"
            )
        if got.dtype != ref.dtype:
            raise ExpertMismatchError(task, source, key, f"dtype {got.dtype} != θ0's {ref.dtype}")
    for key in expert:
        if key not in base:
            raise ExpertMismatchError(task, source, key, "not in θ0 (unexpected key)")


@dataclass
class ExpertPool:
    """θ0, the experts θt and their heads. Heads are stored as state dicts + config and never merged."""

    base: StateDict
    experts: dict[str, StateDict]
    heads: dict[str, StateDict] = field(default_factory=dict)
    head_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    encoder_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.experts:
            raise ValueError("an expert pool needs at least one expert")
        for task, state in self.experts.items():  # keys and shapes first: they cost no tensor pass
            validate_expert(self.base, state, task, self.sources.get(task, "<in memory>"))
        check_finite(self.base, f"θ0 ({self.sources.get('base', '<in memory>')})")
        for task, state in self.experts.items():
            check_finite(state, f"expert {task!r} ({self.sources.get(task, '<in memory>')})")
        for task, state in self.heads.items():
            check_finite(state, f"head {task!r}")

    @property
    def tasks(self) -> list[str]:
        return list(self.experts)

    def task_vector(self, task: str) -> TaskVector:
        if task not in self.experts:
            raise KeyError(f"no expert for task {task!r}; tasks: {', '.join(self.tasks)}")
        return TaskVector(self.base, self.experts[task])

    def task_vectors(self, tasks: list[str] | None = None) -> dict[str, TaskVector]:
        return {t: self.task_vector(t) for t in (tasks or self.tasks)}

    def subset(self, tasks: list[str]) -> ExpertPool:
        """A pool over ``tasks`` only (shares tensors, no copies)."""
        missing = [t for t in tasks if t not in self.experts]
        if missing:
            raise KeyError(f"tasks not in the pool: {missing}; pool has {self.tasks}")
        return ExpertPool(
            self.base,
            {t: self.experts[t] for t in tasks},
            {t: self.heads[t] for t in tasks if t in self.heads},
            {t: self.head_configs[t] for t in tasks if t in self.head_configs},
            {k: v for k, v in self.sources.items() if k in tasks or k == "base"},
            self.encoder_config,
        )

    def encoder(self, state: Mapping[str, Tensor] | None = None) -> Encoder:
        """A fresh encoder of the pool's architecture (θ0's sidecar config) holding ``state`` (default θ0),
        normalising its input as that config's ``normalisation`` says (default: the encoder's mean/std)."""
        from simo_merge.encoders import build_encoder

        cfg = self.encoder_config
        if not cfg:
            raise KeyError("the pool's theta0 sidecar has no 'encoder' config; cannot rebuild the encoder")
        normalisation = cfg.get("normalisation", "encoder")
        encoder = build_encoder(cfg["library"], cfg["arch"], normalisation, **cfg.get("kwargs", {}))
        encoder.load_model_state(self.base if state is None else state)
        return encoder

    def expert_encoders(self) -> dict[str, Encoder]:
        """Each task's expert θt in a fresh encoder, in eval mode."""
        return {task: self.encoder(self.experts[task]).eval() for task in self.tasks}

    def frozen_heads(self) -> dict[str, TaskHead]:
        """The pool's heads as modules rebuilt from their configs, in eval mode, no grad."""
        from simo_merge.heads import head_from_config

        heads = {}
        for task in self.tasks:
            head = head_from_config(self.head_configs[task])
            head.load_state_dict(self.heads[task])
            heads[task] = head.eval().requires_grad_(False)
        return heads

    @classmethod
    def from_files(
        cls,
        base: str | os.PathLike,
        experts: Mapping[str, str | os.PathLike],
        heads: Mapping[str, str | os.PathLike] | None = None,
        allow_pickle: bool = False,
        encoder_config: dict[str, Any] | None = None,
    ) -> ExpertPool:
        """Load θ0 and each expert (and head) checkpoint; validation names the task and file at fault."""
        base_state = load_state(base, allow_pickle=allow_pickle)
        expert_states = {t: load_state(p, allow_pickle=allow_pickle) for t, p in experts.items()}
        head_states = {t: load_state(p, allow_pickle=allow_pickle) for t, p in (heads or {}).items()}
        sources = {"base": str(base), **{t: str(p) for t, p in experts.items()}}
        return cls(base_state, expert_states, head_states, {}, sources, dict(encoder_config or {}))
