"""The Encoder's ordered hook lists: registration, removal handles and dispatch.

A block hook ``fn(block_index, tokens) -> tokens | None`` sees a block's output ``[B, N, D]``; a feature
hook ``fn(features) -> features | None`` the final features ``[B, F]``. Returning a tensor replaces what the
hook saw, returning None only observes it. Within one site, ``"adapt"`` hooks run before ``"record"``
hooks (so recorders see adapted features), each kind in registration order. :class:`HookLists` keeps that
order; :class:`simo_merge.encoders.base.Encoder` decides where the sites are and in which layout tokens
travel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

BlockHook = Callable[[int, Tensor], "Tensor | None"]
FeatureHook = Callable[[Tensor], "Tensor | None"]

HOOK_KINDS = ("adapt", "record")


def check_hook_kind(kind: str) -> None:
    """Raise ValueError unless ``kind`` is one of :data:`HOOK_KINDS`."""
    if kind not in HOOK_KINDS:
        raise ValueError(f"hook kind must be one of {HOOK_KINDS}, got {kind!r}")


class HookHandle:
    """Removes one registered hook; usable as a context manager."""

    def __init__(self, hooks: list, entry: tuple) -> None:
        self._hooks = hooks
        self._entry = entry

    def remove(self) -> None:
        if self._entry in self._hooks:
            self._hooks.remove(self._entry)

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class _MultiHandle(HookHandle):
    """Handle over several hook entries registered together."""

    def __init__(self, handles: list[HookHandle]) -> None:
        self._handles = handles

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class HookLists:
    """Block and feature hooks, each list kept sorted by (block,) kind and registration order."""

    def __init__(self) -> None:
        self.block: list[tuple[int, str, int, BlockHook]] = []
        self.feature: list[tuple[str, int, FeatureHook]] = []
        self._counter = 0

    def __len__(self) -> int:
        return len(self.block) + len(self.feature)

    def add_block(self, indices: Sequence[int], fn: BlockHook, kind: str) -> HookHandle:
        """Register ``fn`` on every block of ``indices`` (already range-checked); one handle for all."""
        check_hook_kind(kind)
        entries = []
        for i in indices:
            self._counter += 1
            entries.append((i, kind, self._counter, fn))
        self.block.extend(entries)
        self.block.sort(key=lambda e: (e[0], HOOK_KINDS.index(e[1]), e[2]))
        return _MultiHandle([HookHandle(self.block, e) for e in entries])

    def add_feature(self, fn: FeatureHook, kind: str) -> HookHandle:
        check_hook_kind(kind)
        self._counter += 1
        entry = (kind, self._counter, fn)
        self.feature.append(entry)
        self.feature.sort(key=lambda e: (HOOK_KINDS.index(e[0]), e[1]))
        return HookHandle(self.feature, entry)

    def run_block(self, index: int, tokens: Tensor) -> Tensor | None:
        """Run block ``index``'s hooks on ``tokens`` ``[B, N, D]``: the new tokens, or None if unchanged."""
        changed = False
        for _, _, _, fn in [e for e in self.block if e[0] == index]:
            result = fn(index, tokens)
            if result is not None:
                tokens = result
                changed = True
        return tokens if changed else None

    def run_features(self, features: Tensor) -> Tensor:
        """Run the feature hooks (adapt before record) on ``features``; the possibly replaced features."""
        for _, _, fn in list(self.feature):
            result = fn(features)
            if result is not None:
                features = result
        return features
