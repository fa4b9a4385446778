"""CLIP zero-shot classification head: cosine similarity to per-class text embeddings, times a scale.

The head reads the encoder's final (projected) features (site ``"final"``), normalises them and
multiplies by a frozen ``[num_classes, embed_dim]`` weight, the class text embeddings (averaged over
prompt templates, normalised) times CLIP's logit scale, plus an optional bias: exactly the
``ClassificationHead`` of the task-arithmetic code (Ilharco et al., 2023), so its ``head_<Dataset>.pt``
files load into it (:func:`zeroshot_head_from_weights`, fed by :mod:`simo_merge.pool.clip_layout`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from simo_merge.datasets.clip_templates import templates as dataset_templates
from simo_merge.heads import HEADS
from simo_merge.heads.base import EncoderLayout, TaskHead
from simo_merge.io.checkpoint import load_state
from simo_merge.tasks import TaskSpec, classification

#: default logit scale when the text model has none (CLIP's trained value is exp(4.6052) = 100)
DEFAULT_LOGIT_SCALE = 100.0


def placeholder_layout(embed_dim: int) -> EncoderLayout:
    """A layout for heads built without an encoder at hand (the zero-shot head never reads it)."""
    return EncoderLayout(
        width=embed_dim, num_prefix_tokens=0, grid_size=(1, 1), patch_size=1, image_size=(1, 1)
    )


@HEADS.register("zeroshot")
class ZeroShotHead(TaskHead):
    """``logits = normalize(final) @ weight.T (+ bias)`` with a frozen weight (buffer, not a parameter)."""

    kind = "zeroshot"
    #: weights kept as buffers (never trained in merging); the ``heads`` realigner re-trains a copy of them
    trainable_buffers = ("weight", "bias")
    task_kinds = ("classification",)

    def __init__(
        self,
        task: TaskSpec,
        layout: EncoderLayout,
        taps: list[Any] | None = None,
        embed_dim: int | None = None,
        has_bias: bool = False,
    ) -> None:
        taps = list(taps) if taps is not None else ["final"]
        if taps != ["final"]:
            raise ValueError(f"zeroshot head for task {task.name!r} reads taps=['final'] only, got {taps}")
        if task.kind != "classification":
            raise ValueError(f"zeroshot head needs a classification task, got {task.name!r} ({task.kind})")
        if embed_dim is None or int(embed_dim) < 1:
            raise ValueError(f"zeroshot head for task {task.name!r}: embed_dim must be >= 1, got {embed_dim}")
        super().__init__(task, layout, taps, embed_dim=int(embed_dim), has_bias=bool(has_bias))
        self.embed_dim = int(embed_dim)
        self.register_buffer("weight", torch.zeros(task.channels, self.embed_dim))
        self.register_buffer("bias", torch.zeros(task.channels) if has_bias else None)

    @torch.no_grad()
    def set_weights(self, weight: Tensor, bias: Tensor | None = None) -> ZeroShotHead:
        """Copy in ``weight`` [C, D] (already scaled) and, when the head has one, ``bias`` [C]."""
        c, d = self.task.channels, self.embed_dim
        if tuple(weight.shape) != (c, d):
            raise ValueError(
                f"zeroshot head {self.task.name!r}: weight shape {tuple(weight.shape)} != {(c, d)}"
            )
        self.weight.copy_(weight.detach().to(self.weight.dtype))
        if bias is not None:
            if self.bias is None:
                raise ValueError(f"zeroshot head {self.task.name!r} was built with has_bias=False")
            if tuple(bias.shape) != (c,):
                raise ValueError(
                    f"zeroshot head {self.task.name!r}: bias shape {tuple(bias.shape)} != {(c,)}"
                )
            self.bias.copy_(bias.detach().to(self.bias.dtype))
        return self

    def forward(self, feats: dict[Any, Tensor]) -> Tensor:  # type: ignore[override]
        """Logits ``[B, C]`` from ``feats["final"]`` ([B, D] final image features)."""
        if "final" not in feats:
            raise KeyError(
                f"zeroshot head {self.task.name!r} reads site 'final'; got {sorted(map(str, feats))}"
            )
        x = feats["final"]
        if x.dim() != 2 or x.shape[1] != self.embed_dim:
            raise ValueError(
                f"zeroshot head {self.task.name!r}: final features must be [B, {self.embed_dim}], "
                f"got {tuple(x.shape)}"
            )
        return F.linear(
            F.normalize(x, dim=-1), self.weight.to(x.dtype), None if self.bias is None else self.bias
        )


def _layout_of(model: Any, embed_dim: int) -> EncoderLayout:
    """The layout of an open_clip model's visual tower, or a placeholder when there is none."""
    visual = getattr(model, "visual", None)
    try:
        h, w = (int(v) for v in visual.grid_size)
        size = tuple(int(v) for v in visual.image_size)
        return EncoderLayout(int(visual.transformer.width), 1, (h, w), size[0] // h, (size[0], size[1]))
    except (AttributeError, TypeError, ValueError):
        return placeholder_layout(embed_dim)


@torch.no_grad()
def text_class_embeddings(
    encode_text: Callable[[Tensor], Tensor],
    tokenizer: Callable[[list[str]], Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    device: torch.device | str | None = None,
) -> Tensor:
    """``[C, D]`` unit class embeddings: each template filled with each class name, encoded, normalised,
    averaged over templates and normalised again (CLIP's prompt ensembling)."""
    if not classnames:
        raise ValueError("zeroshot head: classnames is empty")
    if not templates:
        raise ValueError("zeroshot head: templates is empty")
    for t in templates:
        if "{}" not in t:
            raise ValueError(f"zeroshot head: template {t!r} has no '{{}}' placeholder for the class name")
    rows = []
    for name in classnames:
        tokens = tokenizer([t.format(name) for t in templates])
        if device is not None:
            tokens = tokens.to(device)
        emb = F.normalize(encode_text(tokens).float(), dim=-1).mean(dim=0)
        rows.append(F.normalize(emb, dim=-1))
    return torch.stack(rows)


def zeroshot_head(
    model_or_text_encoder: Any,
    tokenizer: Callable[[list[str]], Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    task_name: str = "classification",
    logit_scale: float | None = None,
    layout: EncoderLayout | None = None,
    device: torch.device | str | None = None,
) -> ZeroShotHead:
    """Build a :class:`ZeroShotHead` from a CLIP text tower.

    ``model_or_text_encoder`` is an open_clip model (its ``encode_text`` and ``logit_scale`` are used) or a
    callable ``tokens -> [N, D]`` text embeddings. ``tokenizer`` maps a list of strings to token ids
    (``open_clip.get_tokenizer(arch)``). ``logit_scale`` overrides the model's ``exp(logit_scale)``
    (default 100 when the encoder has none). ``layout`` defaults to the model's visual tower layout.
    """
    encode = getattr(model_or_text_encoder, "encode_text", None) or model_or_text_encoder
    if not callable(encode):
        raise TypeError(
            f"zeroshot_head: {type(model_or_text_encoder).__name__} has no encode_text and is not callable"
        )
    was_training = getattr(model_or_text_encoder, "training", None)
    if was_training:
        model_or_text_encoder.eval()
    try:
        weight = text_class_embeddings(encode, tokenizer, classnames, templates, device)
    finally:
        if was_training:
            model_or_text_encoder.train()
    if logit_scale is None:
        raw = getattr(model_or_text_encoder, "logit_scale", None)
        logit_scale = float(torch.as_tensor(raw).detach().exp()) if raw is not None else DEFAULT_LOGIT_SCALE
    spec = classification(task_name, len(classnames))
    head = ZeroShotHead(
        spec, layout or _layout_of(model_or_text_encoder, weight.shape[1]), ["final"], weight.shape[1]
    )
    return head.set_weights(weight.cpu() * float(logit_scale))


def zeroshot_head_from_weights(
    weight: Tensor,
    bias: Tensor | None = None,
    task_name: str = "classification",
    layout: EncoderLayout | None = None,
) -> ZeroShotHead:
    """A :class:`ZeroShotHead` holding an existing (already scaled) ``weight`` [C, D] and optional ``bias``.

    An all-zero bias (what task_vectors' ``ClassificationHead`` stores when built without biases) is
    dropped, so the head keeps no bias it does not need.
    """
    if weight.dim() != 2:
        raise ValueError(f"zeroshot head weight must be [num_classes, embed_dim], got {tuple(weight.shape)}")
    if bias is not None and not bool(bias.any()):
        bias = None
    c, d = (int(v) for v in weight.shape)
    head = ZeroShotHead(
        classification(task_name, c), layout or placeholder_layout(d), ["final"], d, bias is not None
    )
    return head.set_weights(weight, bias)


def load_clip_text_tower(
    path: str | os.PathLike, arch: str, quick_gelu: bool = False, allow_pickle: bool = False
) -> Any:
    """An open_clip ``arch`` model whose text tower (every non-``visual.`` weight) comes from the whole
    CLIP state in ``path``; ValueError when that state has no text tower."""
    import open_clip

    from simo_merge.encoders.open_clip_vit import register_small_configs

    register_small_configs()
    clip = open_clip.create_model(arch, pretrained=None, **({"force_quick_gelu": True} if quick_gelu else {}))
    state = load_state(path, allow_pickle=allow_pickle)
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    need = [k for k in clip.state_dict() if not k.startswith("visual.")]
    absent = [k for k in need if k not in state]
    if absent:
        raise ValueError(f"text_checkpoint {path}: no CLIP text tower (missing {absent[:3]}...)")
    clip.load_state_dict({k: state[k] for k in need}, strict=False)
    return clip


def clip_text_heads(
    path: str | os.PathLike,
    arch: str,
    classnames: Mapping[str, Sequence[str]],
    quick_gelu: bool = False,
    allow_pickle: bool = False,
) -> dict[str, ZeroShotHead]:
    """One zero-shot head per task of ``classnames`` (in label order) from the text tower in ``path``:
    CLIP's prompt ensemble over the task's templates (:mod:`simo_merge.datasets.clip_templates`)."""
    import open_clip

    if not classnames:
        return {}
    clip = load_clip_text_tower(path, arch, quick_gelu, allow_pickle)
    tokenizer = open_clip.get_tokenizer(arch)
    return {
        t: zeroshot_head(clip, tokenizer, names, dataset_templates(t), task_name=t).eval()
        for t, names in classnames.items()
    }


def zeroshot_heads(
    head_weights: Mapping[str, tuple[Tensor, Tensor | None] | None],
    classnames: Mapping[str, Sequence[str]],
    text_checkpoint: str | os.PathLike | None,
    arch: str,
    quick_gelu: bool = False,
    allow_pickle: bool = False,
) -> dict[str, ZeroShotHead]:
    """A head per task of ``head_weights``: from its ``(weight, bias)`` where given, else computed from
    the text tower in ``text_checkpoint`` (:func:`clip_text_heads`) with ``classnames[task]``."""
    heads = {
        t: zeroshot_head_from_weights(*hw, task_name=t).eval()
        for t, hw in head_weights.items()
        if hw is not None
    }
    missing = [t for t, hw in head_weights.items() if hw is None]
    if missing and text_checkpoint is None:
        raise FileNotFoundError(
            f"no head file for {missing} and no text tower to compute them: set text_checkpoint to a whole "
            "open_clip CLIP state (task_vectors' zeroshot.pt has no text tower)"
        )
    names = {t: classnames[t] for t in missing}
    heads.update(clip_text_heads(text_checkpoint, arch, names, quick_gelu, allow_pickle) if missing else {})
    return heads
