"""DINOv2 states in their three published layouts -> timm ``VisionTransformer`` keys.

- timm (``vit_*_patch14_dinov2``, ``..._reg4_dinov2``): already the target; a ``head.*`` of a
  classification checkpoint is dropped.
- the original DINOv2 code (``torch.hub.load("facebookresearch/dinov2", ...)``,
  ``dinov2_vits14_pretrain.pth``): timm's names except ``mask_token`` (dropped), ``register_tokens``
  (-> ``reg_token``, see below), SwiGLU ``mlp.w12``/``mlp.w3`` (-> ``mlp.fc1``/``mlp.fc2``) and chunked
  blocks ``blocks.<chunk>.<i>.`` (-> ``blocks.<i>.``; the inner index is already the global one).
  Training checkpoints' outer prefixes (``teacher.backbone.``, ``module.``, ...) are stripped.
- Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (any outer prefix, e.g. ``dinov2.`` of
  ``Dinov2ForImageClassification``): ``embeddings.*``, ``encoder.layer.N.*``, ``layernorm.*``. Both the
  on-disk names (``attention.attention.{query,key,value}``, ``attention.output.dense``, SwiGLU
  ``mlp.weights_in``/``weights_out``) and transformers>=5's in-memory names (``attention.{q,k,v,o}_proj``,
  ``mlp.{gate,up,down}_proj``) are read; q/k/v are concatenated into timm's fused ``attn.qkv``,
  ``layer_scale{1,2}.lambda1`` become ``ls{1,2}.gamma``.

Registers: DINOv2 adds the position embedding to the CLS token and the patches only and inserts the
registers after that; timm's ``reg4`` models have ``no_embed_class=True``. So, as timm's own loader does,
``cls_token`` absorbs ``pos_embed[:, 0]`` and ``pos_embed`` keeps only the patch positions.

Facts from timm's ``vision_transformer._convert_dinov2`` and transformers' Dinov2 modelling code; the
code is ours. :func:`timm_to_hf_dinov2` and :func:`timm_to_dinov2_hub` write the other layouts (tests).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

StateDict = dict[str, Tensor]

_HF_ANCHOR = "embeddings.patch_embeddings.projection.weight"
_HUB_ANCHOR = "patch_embed.proj.weight"
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_DROPPED = ("embeddings.mask_token",)
#: per-layer HF module -> timm module (q/k/v and SwiGLU halves handled separately)
_HF_LAYER = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.weights_in": "mlp.fc1",
    "mlp.weights_out": "mlp.fc2",
    "mlp.down_proj": "mlp.fc2",
}
_HF_QKV = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.q_proj": "q",
    "attention.k_proj": "k",
    "attention.v_proj": "v",
}
_HF_GLU = {"mlp.gate_proj": "gate", "mlp.up_proj": "up"}
_HF_LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)$")


def is_hf_dinov2(state: Mapping[str, Tensor]) -> bool:
    return any(k.endswith(_HF_ANCHOR) for k in state)


def _registers_to_timm(out: StateDict) -> None:
    """DINOv2 register layout (pos embed on CLS + patches) -> timm's ``no_embed_class`` layout."""
    if "reg_token" in out:
        pos = out["pos_embed"]
        out["cls_token"] = out["cls_token"] + pos[:, :1]
        out["pos_embed"] = pos[:, 1:].contiguous()


def hf_dinov2_to_timm(state: Mapping[str, Tensor]) -> StateDict:
    """Convert a Hugging Face ``Dinov2Model`` state (any outer prefix) to timm keys.

    Keys outside the model (e.g. a ``classifier.*``) are ignored; an unknown key inside it raises
    ValueError naming it.
    """
    anchors = [k for k in state if k.endswith(_HF_ANCHOR)]
    if len(anchors) != 1:
        raise ValueError(f"HF Dinov2 state: expected one '*{_HF_ANCHOR}' key, found {anchors}")
    prefix = anchors[0][: -len(_HF_ANCHOR)]
    out: StateDict = {}
    parts: dict[tuple[int, str, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name in _HF_TOP:
            out[_HF_TOP[name]] = value
            continue
        if name == "embeddings.register_tokens":
            out["reg_token"] = value
            continue
        if name in _HF_DROPPED:
            continue
        if name.startswith("embeddings."):
            raise ValueError(f"HF Dinov2 state: unknown key {key!r}")
        if not name.startswith("encoder."):
            continue  # outside the backbone (e.g. a head or pooler under the same prefix)
        match = _HF_LAYER_KEY.match(name)
        if match is None:
            raise ValueError(f"HF Dinov2 state: unknown key {key!r}")
        index, module, kind = int(match.group(1)), match.group(2), match.group(3)
        base = f"blocks.{index}."
        if module in ("layer_scale1", "layer_scale2") and kind == "lambda1":
            out[f"{base}ls{module[-1]}.gamma"] = value
        elif module in _HF_QKV:
            parts.setdefault((index, "attn.qkv", kind), {})[_HF_QKV[module]] = value
        elif module in _HF_GLU:
            parts.setdefault((index, "mlp.fc1", kind), {})[_HF_GLU[module]] = value
        elif module in _HF_LAYER and kind != "lambda1":
            out[f"{base}{_HF_LAYER[module]}.{kind}"] = value
        else:
            raise ValueError(f"HF Dinov2 state: unknown key {key!r}")
    for (index, target, kind), found in sorted(parts.items()):
        order = ("q", "k", "v") if target == "attn.qkv" else ("gate", "up")
        if set(found) != set(order):
            raise ValueError(
                f"HF Dinov2 state: layer {index} {kind} of {target} needs {order}, has {sorted(found)}"
            )
        out[f"blocks.{index}.{target}.{kind}"] = torch.cat([found[p] for p in order])
    missing = [
        k for k in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight") if k not in out
    ]
    if missing:
        raise ValueError(f"HF Dinov2 state (prefix {prefix!r}) lacks entries for timm {missing}")
    _registers_to_timm(out)
    return out


_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")


def dinov2_hub_to_timm(state: Mapping[str, Tensor]) -> StateDict:
    """Convert an original DINOv2 (torch.hub) state, or a timm one, to timm keys (see the module doc)."""
    prefix = ""
    if _HUB_ANCHOR not in state:
        found = [k[: -len(_HUB_ANCHOR)] for k in state if k.endswith(_HUB_ANCHOR)]
        if len(found) != 1:
            raise ValueError(f"DINOv2/timm state: expected one '*{_HUB_ANCHOR}' key, found prefixes {found}")
        prefix = found[0]
    chunked = any(_CHUNKED.match(k[len(prefix) :]) for k in state if k.startswith(prefix))
    registers = False
    out: StateDict = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name in ("mask_token",) or name.startswith("head."):
            continue
        if chunked:
            name = _CHUNKED.sub(r"blocks.\1.", name)
        name = re.sub(r"^(blocks\.\d+\.mlp)\.w12\.", r"\1.fc1.", name)
        name = re.sub(r"^(blocks\.\d+\.mlp)\.w3\.", r"\1.fc2.", name)
        if name == "register_tokens":
            name, registers = "reg_token", True
        out[name] = value
    if registers:
        _registers_to_timm(out)
    return out


def to_timm_state(state: Mapping[str, Tensor]) -> StateDict:
    """Any of the three layouts -> timm keys (the layout is recognised from the keys)."""
    return hf_dinov2_to_timm(state) if is_hf_dinov2(state) else dinov2_hub_to_timm(state)


# ------------------------------------------------------------------------------ the other direction


def _registers_from_timm(state: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """timm (cls_token, pos_embed) -> DINOv2's (cls_token, pos_embed with a CLS slot)."""
    cls, pos = state["cls_token"], state["pos_embed"]
    if "reg_token" not in state:
        return cls, pos
    # DINOv2 keeps cls + pos[:, 0]; any split gives the same model, choose a zero CLS position
    return cls, torch.cat([torch.zeros_like(cls), pos], dim=1)


def timm_to_dinov2_hub(state: Mapping[str, Tensor], mask_token: bool = True) -> StateDict:
    """timm keys -> the original DINOv2 layout (what ``torch.hub`` models' ``state_dict()`` holds)."""
    out: StateDict = {}
    cls, pos = _registers_from_timm(state)
    for key, value in state.items():
        if key == "reg_token":
            out["register_tokens"] = value
        elif key == "cls_token":
            out[key] = cls
        elif key == "pos_embed":
            out[key] = pos
        else:
            out[key] = value
    if mask_token:
        out["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    return out


def timm_to_hf_dinov2(state: Mapping[str, Tensor], prefix: str = "", names: str = "hub") -> StateDict:
    """timm keys -> Hugging Face Dinov2 keys; ``names="hub"`` writes the on-disk (transformers 4 / Hub)
    names, ``names="v5"`` transformers>=5's in-memory names (``attention.q_proj`` ...)."""
    if names not in ("hub", "v5"):
        raise ValueError(f"names must be 'hub' or 'v5', got {names!r}")
    top = {v: k for k, v in _HF_TOP.items()}
    cls, pos = _registers_from_timm(state)
    out: StateDict = {f"{prefix}embeddings.mask_token": torch.zeros(1, state["cls_token"].shape[-1])}
    qkv_names = (
        ("attention.attention.query", "attention.attention.key", "attention.attention.value")
        if names == "hub"
        else ("attention.q_proj", "attention.k_proj", "attention.v_proj")
    )
    layer = {
        "norm1": "norm1",
        "norm2": "norm2",
        "attn.proj": "attention.output.dense" if names == "hub" else "attention.o_proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    block = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias|gamma)$")
    for key, value in state.items():
        if key == "cls_token":
            out[f"{prefix}embeddings.cls_token"] = cls
        elif key == "pos_embed":
            out[f"{prefix}embeddings.position_embeddings"] = pos
        elif key == "reg_token":
            out[f"{prefix}embeddings.register_tokens"] = value
        elif key in top:
            out[prefix + top[key]] = value
        elif (match := block.match(key)) is not None:
            index, module, kind = match.groups()
            base = f"{prefix}encoder.layer.{index}."
            if kind == "gamma":
                out[f"{base}layer_scale{module[-1]}.lambda1"] = value
            elif module == "attn.qkv":
                for name, part in zip(qkv_names, value.chunk(3, dim=0), strict=True):
                    out[f"{base}{name}.{kind}"] = part.contiguous()
            elif module in layer:
                out[f"{base}{layer[module]}.{kind}"] = value
            else:
                raise ValueError(f"timm state: key {key!r} has no HF Dinov2 counterpart")
        else:
            raise ValueError(f"timm state: key {key!r} has no HF Dinov2 counterpart")
    return out
