"""Reading the CLIP checkpoints of the eight-task merging benchmark into open_clip visual-tower states.

Three published layouts:

(a) open_clip state dicts (``.pt``/``.bin``/``.safetensors``, whole CLIP or visual tower only):
    :func:`load_open_clip_visual_state` returns the visual tower's state (``visual.`` prefix stripped).
(b) the task-arithmetic layout of Ilharco et al. (``mlfoundations/task_vectors``):
    ``<root>/<model>/zeroshot.pt``, ``<root>/<model>/<Dataset>/finetuned.pt`` and
    ``<root>/<model>/head_<Dataset>.pt``. These are *pickled whole modules* (that project's
    ``src.modeling.ImageEncoder`` / ``ClassificationHead``), so they load only with an explicit
    ``allow_pickle=True``, through :mod:`simo_merge.unpickler`: only an explicit allow-list of
    ``(module, name)`` globals (tensor rebuild functions, dtypes, ``OrderedDict``) resolves; every class
    (torch.nn's, that project's ``src.*``, open_clip's, ...) becomes a :class:`StandIn` that only records
    its pickled state, so neither that source tree nor a matching open_clip version is needed and no
    foreign constructor or function runs.
(c) Hugging Face ``CLIPVisionModel`` (+ ``visual_projection``) states, the format FusionBench
    publishes: :func:`hf_clip_vision_to_open_clip` is a pure key/shape conversion to the open_clip
    visual layout (:func:`open_clip_visual_to_hf` is its inverse). Note that OpenAI's CLIP weights use
    QuickGELU: build the open_clip tower as ``ViT-B-32-quickgelu`` (etc.) when loading them.

Activation. OpenAI's CLIP (and so every task_vectors checkpoint, fine-tuned from it) uses QuickGELU,
``x * sigmoid(1.702 x)``; open_clip's ``ViT-B-32`` config uses ``nn.GELU`` and ``ViT-B-32-quickgelu``
QuickGELU. A state dict cannot tell them apart (the activation has no weights), but a task_vectors pickle
can: :func:`pickled_activation` reads the class of the MLP activation modules in its module tree
(``open_clip.transformer.QuickGELU`` vs ``torch.nn.GELU``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from simo_merge.checkpoint import CheckpointError, StateDict, load_state
from simo_merge.unpickler import (  # noqa: F401  (re-exported: the loaders' public names)
    RestrictedUnpickler,
    StandIn,
    UnsafePickleError,
    module_tree_state,
    restricted_pickle,
    restricted_torch_load,
)

# ----------------------------------------------------------------------------- (a) open_clip states

_VISUAL_MARKER = "conv1.weight"


def _visual_from_clip_state(state: Mapping[str, Tensor], source: str) -> StateDict:
    """The visual tower's entries of an open_clip state (whole CLIP, visual only, or HF layout)."""
    for prefix in ("visual.", "model.visual.", "module.visual.", ""):
        if prefix + _VISUAL_MARKER in state:
            return (
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                if prefix
                else dict(state)
            )
    if any(k.endswith("embeddings.class_embedding") for k in state):
        return hf_clip_vision_to_open_clip(state)
    sample = ", ".join(sorted(state)[:5])
    raise CheckpointError(
        f"{source}: no open_clip visual tower (no '{_VISUAL_MARKER}' key; keys start {sample})"
    )


def load_open_clip_visual_state(path: str | os.PathLike, allow_pickle: bool = False) -> StateDict:
    """The open_clip visual-tower state in ``path`` (keys as ``model.visual.state_dict()`` names them).

    Accepts a whole open_clip CLIP state (``visual.*`` keys), a visual-only state, or a Hugging Face CLIP
    vision state (converted with :func:`hf_clip_vision_to_open_clip`).
    """
    return _visual_from_clip_state(load_state(path, allow_pickle=allow_pickle), str(path))


# ---------------------------------------------------------------------- (b) task_vectors pickles


def load_pickled_object(path: str | os.PathLike, allow_pickle: bool = False) -> Any:
    """Unpickle a torch file that stores whole objects, with the restricted unpickler.

    Refuses (CheckpointError) unless ``allow_pickle=True``: unpickling is only for files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not allow_pickle:
        raise CheckpointError(
            f"{path}: task_vectors checkpoints are pickled modules; pass allow_pickle=True "
            "(CLI: allow_pickle=true) only for files you trust"
        )
    try:
        return restricted_torch_load(path)
    except UnsafePickleError as err:
        raise CheckpointError(str(err)) from err


def _describe(obj: Any) -> str:
    return getattr(obj, "pickled_class", None) or type(obj).__name__


def _class_name(obj: Any) -> str:
    """``module.Class`` of a real object or of the class a :class:`StandIn` stands in for."""
    standin = getattr(type(obj), "pickled_class", None)
    if isinstance(standin, str) and standin != "?":
        return standin
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def pickled_activation(obj: Any) -> str | None:
    """``"quick_gelu"`` / ``"gelu"`` from the activation modules of a (pickled) module tree, else None.

    Looks at every module in ``_modules`` (real or :class:`StandIn`): a class named ``QuickGELU`` means
    QuickGELU, ``torch.nn...GELU`` plain GELU. Raises ValueError when both occur.
    """
    found: set[str] = set()

    def walk(node: Any, stack: tuple[int, ...]) -> None:
        attrs = getattr(node, "__dict__", None)
        if not isinstance(attrs, dict) or id(node) in stack:
            return
        for child in (attrs.get("_modules") or {}).values():
            if child is None:
                continue
            name = _class_name(child).rsplit(".", 1)[-1]
            if name == "QuickGELU":
                found.add("quick_gelu")
            elif name == "GELU":
                found.add("gelu")
            walk(child, (*stack, id(node)))

    walk(obj, ())
    if len(found) > 1:
        raise ValueError(f"pickled {_describe(obj)} mixes QuickGELU and GELU activations")
    return next(iter(found), None)


def load_task_vectors_encoder(path: str | os.PathLike, allow_pickle: bool = False) -> StateDict:
    """The open_clip visual state of a task_vectors ``zeroshot.pt`` / ``finetuned.pt`` (ImageEncoder).

    Uses the ``model.visual.*`` tensors (else ``model.*``, else ``visual.*``), prefix stripped.
    """
    return load_task_vectors_encoder_and_activation(path, allow_pickle)[0]


def load_task_vectors_encoder_and_activation(
    path: str | os.PathLike, allow_pickle: bool = False
) -> tuple[StateDict, str | None]:
    """:func:`load_task_vectors_encoder` plus the activation its modules use (:func:`pickled_activation`)."""
    obj = load_pickled_object(path, allow_pickle=allow_pickle)
    return _visual_state_of(obj, path), pickled_activation(obj)


def _visual_state_of(obj: Any, path: str | os.PathLike) -> StateDict:
    state = module_tree_state(obj)
    if not state:
        raise CheckpointError(f"{path}: no tensors found in the pickled {_describe(obj)}")
    for prefix in ("model.visual.", "visual.", "model.", ""):
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if _VISUAL_MARKER in sub:
            return sub
    sample = ", ".join(sorted(state)[:5])
    raise CheckpointError(
        f"{path}: pickled {_describe(obj)} holds no open_clip visual tower (keys: {sample}, ...)"
    )


def load_task_vectors_head(
    path: str | os.PathLike, allow_pickle: bool = False
) -> tuple[Tensor, Tensor | None]:
    """``(weight [C, D], bias [C] or None)`` of a task_vectors ``head_<Dataset>.pt`` (ClassificationHead).

    The weight already includes CLIP's logit scale. Raises CheckpointError for a head that does not
    normalise its input (the zero-shot head always does).
    """
    obj = load_pickled_object(path, allow_pickle=allow_pickle)
    state = module_tree_state(obj)
    weight = state.get("weight")
    if weight is None or weight.dim() != 2:
        found = {k: tuple(v.shape) for k, v in state.items()}
        raise CheckpointError(f"{path}: pickled {_describe(obj)} has no 2-D 'weight' (tensors: {found})")
    if getattr(obj, "normalize", True) is False:
        raise CheckpointError(f"{path}: head has normalize=False; only normalising CLIP heads are supported")
    bias = state.get("bias", state.get("biases"))
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise CheckpointError(
            f"{path}: bias shape {tuple(bias.shape)} does not match weight {tuple(weight.shape)}"
        )
    return weight, bias


def load_task_vectors_zeroshot_head(
    path: str | os.PathLike, task_name: str, allow_pickle: bool = False
) -> Any:
    """A :class:`simo_merge.heads.zeroshot.ZeroShotHead` holding a task_vectors ``head_<Dataset>.pt``."""
    from simo_merge.heads.zeroshot import zeroshot_head_from_weights

    weight, bias = load_task_vectors_head(path, allow_pickle=allow_pickle)
    return zeroshot_head_from_weights(weight, bias, task_name=task_name)


def task_vectors_paths(root: str | os.PathLike, model: str, dataset: str) -> dict[str, Path]:
    """``{"zeroshot", "finetuned", "head"}`` paths of ``dataset`` under the task_vectors layout.

    Tries ``<Dataset>`` then ``<Dataset>Val`` (the name task_vectors trains and saves under); raises
    FileNotFoundError naming every path tried when one is missing.
    """
    base = Path(root) / model
    candidates = {
        "zeroshot": [base / "zeroshot.pt"],
        "finetuned": [base / dataset / "finetuned.pt", base / f"{dataset}Val" / "finetuned.pt"],
        "head": [base / f"head_{dataset}.pt", base / f"head_{dataset}Val.pt"],
    }
    out: dict[str, Path] = {}
    for role, paths in candidates.items():
        hit = next((p for p in paths if p.is_file()), None)
        if hit is None:
            raise FileNotFoundError(
                f"task_vectors {role} checkpoint not found; tried {[str(p) for p in paths]}"
            )
        out[role] = hit
    return out


# ---------------------------------------------------------------------- (c) Hugging Face CLIP vision

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
