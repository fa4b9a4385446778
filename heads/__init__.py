"""Task decoders, installed as ``simo_merge.heads``: they read encoder taps and stay frozen in merging."""

from __future__ import annotations

from typing import Any

from simo_merge.registry import Registry

HEADS: Registry = Registry("head", package=__name__)

from simo_merge.heads.base import EncoderLayout, TaskHead  # noqa: E402
from simo_merge.tasks import TaskSpec  # noqa: E402


def build_head(
    kind: str,
    task: TaskSpec,
    encoder: Any,
    image_size: tuple[int, int],
    taps: list[int] | None = None,
    **options: Any,
) -> TaskHead:
    """A ``kind`` head ("linear", "dpt") for ``task`` reading ``taps`` (default: the encoder's default taps
    for dense tasks, the final features ``["final"]`` for classification)."""
    layout = EncoderLayout.of(encoder, image_size)
    if not taps:
        taps = ["final"] if task.kind == "classification" else encoder.default_taps()
    return HEADS.get(kind)(task, layout, list(taps), **options)


def head_from_config(config: dict[str, Any]) -> TaskHead:
    """Rebuild a head from :meth:`TaskHead.config` output (e.g. a checkpoint sidecar)."""
    try:
        layout = dict(config["layout"])
        layout["grid_size"] = tuple(layout["grid_size"])
        layout["image_size"] = tuple(layout["image_size"])
        return HEADS.get(config["kind"])(
            TaskSpec(**config["task"]),
            EncoderLayout(**layout),
            list(config["taps"]),
            **config.get("options", {}),
        )
    except KeyError as err:
        raise KeyError(f"head config lacks key {err.args[0]!r}: {sorted(config)}") from None


__all__ = ["HEADS", "EncoderLayout", "TaskHead", "build_head", "head_from_config"]
