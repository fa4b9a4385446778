"""CLIP visual-tower state layouts -> open_clip ``VisionTransformer`` keys (and back).

- open_clip: a whole CLIP state (``visual.*``, also under ``model.``/``module.``) or the visual tower alone;
  :func:`visual_from_clip_state` picks the tower's entries out.
- Hugging Face ``CLIPVisionModel`` (+ ``visual_projection``), the format FusionBench publishes:
  :func:`hf_clip_vision_to_open_clip` is a pure key/shape conversion to the open_clip visual layout
  (:func:`open_clip_visual_to_hf` is its inverse).
- The activation: OpenAI's CLIP weights (and every fine-tune of them) use QuickGELU, open_clip's
  ``ViT-B-32`` (etc.) config GELU; the weights cannot tell them apart, so :func:`clip_activation` reads
  what a checkpoint says about itself: OpenAI's own state dict carries the entries
  :data:`OPENAI_STATE_MARKERS` (open_clip drops them when it converts one, ``factory.load_state_dict`` and
  ``model.build_model_from_openai_state_dict``, which builds with ``quick_gelu=True``), and a Hugging
  Face CLIP checkpoint's ``config.json`` names its ``hidden_act`` (``quick_gelu`` for OpenAI's).

These are facts about the encoder's own keys, so they live with the encoders; the benchmark's file layouts
(task_vectors pickles, checkpoint discovery) stay in :mod:`simo_merge.pool.clip_layout`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from simo_merge.io.checkpoint import CheckpointError, StateDict

#: a key only an open_clip visual tower has (its patch embedding)
VISUAL_MARKER = "conv1.weight"
#: top-level entries only OpenAI's own CLIP state dict has (openai/CLIP ``model.state_dict()``)
OPENAI_STATE_MARKERS = ("input_resolution", "context_length", "vocab_size")
ACTIVATIONS = ("quick_gelu", "gelu")
#: ``model_type`` of Hugging Face CLIP configs (whole model, vision tower)
HF_CLIP_MODEL_TYPES = ("clip", "clip_vision_model")


def clip_activation(state: Mapping[str, Tensor], path: str | os.PathLike | None = None) -> str | None:
    """``"quick_gelu"`` / ``"gelu"``: what the checkpoint at ``path`` (its loaded ``state``) says its
    weights were trained with, else None (a plain open_clip state says nothing). OpenAI's own state
    (:data:`OPENAI_STATE_MARKERS`, also under ``model.`` / ``module.``) is QuickGELU; else the
    ``hidden_act`` (or ``vision_config.hidden_act``; absent from a CLIP config: transformers' default,
    QuickGELU) of a Hugging Face ``config.json`` beside ``path``."""
    prefixes = ("", "model.", "module.")
    if any(p + key in state for p in prefixes for key in OPENAI_STATE_MARKERS):
        return "quick_gelu"
    config = None if path is None else Path(path).expanduser().parent / "config.json"
    if config is None or not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config}: not JSON ({err})") from None
    act = data.get("hidden_act", (data.get("vision_config") or {}).get("hidden_act"))
    if act is None and data.get("model_type") in HF_CLIP_MODEL_TYPES:
        act = "quick_gelu"  # transformers' CLIPVisionConfig default, which save_pretrained leaves out
    if act is None:
        return None
    if act not in ACTIVATIONS:
        raise CheckpointError(f"{config}: hidden_act={act!r}, expected one of {ACTIVATIONS}")
    return act


def visual_from_clip_state(state: Mapping[str, Tensor], source: str) -> StateDict:
    """The visual tower's entries of an open_clip state (whole CLIP, visual only, or HF layout)."""
    for prefix in ("visual.", "model.visual.", "module.visual.", ""):
        if prefix + VISUAL_MARKER in state:
            return (
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                if prefix
                else dict(state)
            )
    if any(k.endswith("embeddings.class_embedding") for k in state):
        return hf_clip_vision_to_open_clip(state)
    sample = ", ".join(sorted(state)[:5])
    raise CheckpointError(
        f"{source}: no open_clip visual tower (no '{VISUAL_MARKER}' key; keys start {sample})"
    )


#: per-layer HF name -> open_clip name (q/k/v projections are handled separately)
_HF_LAYER_MAP = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_HF_TOP_MAP = {
    "embeddings.class_embedding": "class_embedding",
    "embeddings.patch_embedding.weight": "conv1.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "pre_layrnorm.weight": "ln_pre.weight",
    "pre_layrnorm.bias": "ln_pre.bias",
    "post_layernorm.weight": "ln_post.weight",
    "post_layernorm.bias": "ln_post.bias",
}
_HF_IGNORED = ("embeddings.position_ids",)
_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def hf_clip_vision_to_open_clip(state: Mapping[str, Tensor], projection: Tensor | None = None) -> StateDict:
    """Convert a Hugging Face CLIP vision state (``CLIPVisionModel``/``CLIPModel``/
    ``CLIPVisionModelWithProjection``, any outer prefix) to open_clip's ``VisionTransformer`` keys.

    q/k/v projections are concatenated into ``attn.in_proj_weight``/``in_proj_bias``; the projection
    (``visual_projection.weight`` [P, D] in ``state``, or ``projection`` given separately, e.g. from the
    pre-trained ``CLIPModel`` for FusionBench's vision-only checkpoints) becomes ``proj`` [D, P]. Without
    either, the result has no ``proj`` entry. Keys outside the vision tower (text model) are ignored;
    an unknown key inside it raises ValueError naming it.
    """
    anchors = [k for k in state if k.endswith("embeddings.class_embedding")]
    if len(anchors) != 1:
        raise ValueError(
            f"HF CLIP vision state: expected one '*embeddings.class_embedding' key, found {anchors}"
        )
    prefix = anchors[0][: -len("embeddings.class_embedding")]
    out: StateDict = {}
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name in _HF_TOP_MAP:
            out[_HF_TOP_MAP[name]] = value
            continue
        if name in _HF_IGNORED:
            continue
        match = _LAYER_KEY.match(name)
        if match is None:
            raise ValueError(f"HF CLIP vision state: unknown key {key!r}")
        index, module, kind = int(match.group(1)), match.group(2), match.group(3)
        if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            qkv.setdefault((index, kind), {})[module[10]] = value
        elif module in _HF_LAYER_MAP:
            out[f"transformer.resblocks.{index}.{_HF_LAYER_MAP[module]}.{kind}"] = value
        else:
            raise ValueError(f"HF CLIP vision state: unknown key {key!r}")
    for (index, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(
                f"HF CLIP vision state: layer {index} {kind} lacks q/k/v parts (has {sorted(parts)})"
            )
        out[f"transformer.resblocks.{index}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]]
        )
    if projection is None:
        projection = next((v for k, v in state.items() if k.endswith("visual_projection.weight")), None)
    if projection is not None:
        if projection.dim() != 2 or projection.shape[1] != out["class_embedding"].shape[0]:
            raise ValueError(
                f"HF CLIP visual projection must be [proj_dim, {out['class_embedding'].shape[0]}], "
                f"got {tuple(projection.shape)}"
            )
        out["proj"] = projection.t().contiguous()
    missing = [k for k in _HF_TOP_MAP.values() if k not in out]
    if missing:
        raise ValueError(f"HF CLIP vision state (prefix {prefix!r}) lacks entries for {missing}")
    return out


def open_clip_visual_to_hf(state: Mapping[str, Tensor], prefix: str = "vision_model.") -> StateDict:
    """Inverse of :func:`hf_clip_vision_to_open_clip`: open_clip visual keys -> HF CLIP vision keys
    (``proj`` becomes ``visual_projection.weight``, transposed; ``in_proj_*`` is split into q/k/v)."""
    top = {v: k for k, v in _HF_TOP_MAP.items()}
    layer = {v: k for k, v in _HF_LAYER_MAP.items()}
    out: StateDict = {}
    block = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$")
    for key, value in state.items():
        if key in top:
            out[prefix + top[key]] = value
        elif key == "proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif (match := block.match(key)) is not None:
            index, module, kind = match.groups()
            base = f"{prefix}encoder.layers.{index}."
            if module in layer:
                out[f"{base}{layer[module]}.{kind}"] = value
            else:
                raise ValueError(f"open_clip visual state: key {key!r} has no HF counterpart")
        elif (
            match := re.match(r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$", key)
        ) is not None:
            index, kind = match.groups()
            q, k, v = value.chunk(3, dim=0)
            for letter, part in zip("qkv", (q, k, v), strict=True):
                out[f"{prefix}encoder.layers.{index}.self_attn.{letter}_proj.{kind}"] = part.contiguous()
        else:
            raise ValueError(f"open_clip visual state: key {key!r} has no HF counterpart")
    return out
