"""Reading the CLIP checkpoints of the 8/14/20-task merging benchmarks into open_clip visual-tower states.

Four published layouts:

(a) open_clip state dicts (``.pt``/``.bin``/``.safetensors``, whole CLIP or visual tower only):
    :func:`load_open_clip_visual_state` returns the visual tower's state (``visual.`` prefix stripped).
(b) the task-arithmetic layout of Ilharco et al. (``mlfoundations/task_vectors``):
    ``<root>/<model>/zeroshot.pt``, ``<root>/<model>/<Dataset>/finetuned.pt`` and
    ``<root>/<model>/head_<Dataset>.pt``. These are *pickled whole modules* (that project's
    ``src.modeling.ImageEncoder`` / ``ClassificationHead``), so they load only with an explicit
    ``allow_pickle=True``, through :mod:`simo_merge.io.unpickler`: only an explicit allow-list of
    ``(module, name)`` globals (tensor rebuild functions, dtypes, ``OrderedDict``) resolves; every class
    (torch.nn's, that project's ``src.*``, open_clip's, ...) becomes a :class:`StandIn` that only records
    its pickled state, so neither that source tree nor a matching open_clip version is needed and no
    foreign constructor or function runs.
(b') the TALL masks layout (``nik-dim/tall_masks``, whose released checkpoints for the 20 tasks TSV-M and
    Iso-C/CTS reuse): ``<root>/<model>/<Dataset>Val/nonlinear_finetuned.pt`` and
    ``<root>/<model>/<Dataset>Val/nonlinear_zeroshot.pt`` (their ``get_finetuned_path`` /
    ``get_zeroshot_path``, ``src/utils/variables_and_paths.py`` at commit d10af8b2): ``ImageEncoder``
    *state dicts* (``model.visual.*`` keys), read with ``weights_only=True``; heads
    ``<root>/<model>/head_<Dataset>Val.pt`` are pickled ``ClassificationHead`` modules as in (b). Their
    ``ImageEncoder`` is open_clip's ``pretrained="openai"`` model, which is always QuickGELU.
(c) Hugging Face ``CLIPVisionModel`` (+ ``visual_projection``) states, the format FusionBench
    publishes: converted by :func:`simo_merge.encoders.convert_clip.hf_clip_vision_to_open_clip`, a pure
    key/shape conversion that lives with the encoders (as do the open_clip key facts of (a)). Note that
    OpenAI's CLIP weights use QuickGELU: build the open_clip tower as ``ViT-B-32-quickgelu`` (etc.) when
    loading them.

Activation. OpenAI's CLIP (and so every task_vectors checkpoint, fine-tuned from it) uses QuickGELU,
``x * sigmoid(1.702 x)``; open_clip's ``ViT-B-32`` config uses ``nn.GELU`` and ``ViT-B-32-quickgelu``
QuickGELU. The weights cannot tell them apart (the activation has none), but a task_vectors pickle can:
:func:`pickled_activation` reads the class of the MLP activation modules in its module tree
(``open_clip.transformer.QuickGELU`` vs ``torch.nn.GELU``); for the open_clip layout
:func:`~simo_merge.encoders.convert_clip.clip_activation` reads OpenAI's own state-dict entries or a Hugging
Face ``config.json`` beside the file. A plain open_clip state says nothing: name the architecture
(``ViT-B-32-quickgelu`` or ``quick_gelu=true`` for OpenAI-derived weights).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from simo_merge.datasets.clip_templates import canonical_dataset
from simo_merge.encoders.convert_clip import VISUAL_MARKER, clip_activation, visual_from_clip_state
from simo_merge.io.checkpoint import CheckpointError, StateDict, load_state
from simo_merge.io.unpickler import (  # noqa: F401  (re-exported: the loaders' public names)
    RestrictedUnpickler,
    StandIn,
    UnsafePickleError,
    module_tree_state,
    restricted_pickle,
    restricted_torch_load,
)

# ----------------------------------------------------------------------------- (a) open_clip states


def load_open_clip_visual_state(path: str | os.PathLike, allow_pickle: bool = False) -> StateDict:
    """The open_clip visual-tower state in ``path`` (keys as ``model.visual.state_dict()`` names them).

    Accepts a whole open_clip CLIP state (``visual.*`` keys), a visual-only state, or a Hugging Face CLIP
    vision state (converted with :func:`~simo_merge.encoders.convert_clip.hf_clip_vision_to_open_clip`).
    """
    return visual_from_clip_state(load_state(path, allow_pickle=allow_pickle), str(path))


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
        if VISUAL_MARKER in sub:
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


# ----------------------------------------------------------------------------- finding the files


def first_existing(paths: list[Path], what: str, required: bool = True) -> Path | None:
    """The first of ``paths`` that is a file; None when none is and not ``required``, else
    FileNotFoundError naming ``what`` and every path tried."""
    hit = next((p for p in paths if p.is_file()), None)
    if hit is None and required:
        raise FileNotFoundError(f"{what} not found; tried {[str(p) for p in paths]}")
    return hit


def task_vectors_candidates(root: str | os.PathLike, model: str, dataset: str) -> dict[str, list[Path]]:
    """``{"zeroshot", "finetuned", "head"}`` -> the paths that may hold them under the task_vectors
    layout, in order: ``<Dataset>`` then ``<Dataset>Val`` (the name task_vectors trains and saves under)."""
    base = Path(root) / model
    return {
        "zeroshot": [base / "zeroshot.pt"],
        "finetuned": [base / dataset / "finetuned.pt", base / f"{dataset}Val" / "finetuned.pt"],
        "head": [base / f"head_{dataset}.pt", base / f"head_{dataset}Val.pt"],
    }


def open_clip_candidates(root: str | os.PathLike, model: str, dataset: str) -> dict[str, list[Path]]:
    """The same roles under the open_clip layout: ``<model>/zeroshot.safetensors``,
    ``<model>/<Dataset>.safetensors`` and ``<model>/head_<Dataset>.safetensors``."""
    base = Path(root) / model
    return {
        "zeroshot": [base / "zeroshot.safetensors"],
        "finetuned": [base / f"{dataset}.safetensors"],
        "head": [base / f"head_{dataset}.safetensors"],
    }


def tall_masks_candidates(root: str | os.PathLike, model: str, dataset: str) -> dict[str, list[Path]]:
    """The same roles under the TALL masks layout: ``<model>/<Dataset>Val/nonlinear_zeroshot.pt``,
    ``<model>/<Dataset>Val/nonlinear_finetuned.pt`` and ``<model>/head_<Dataset>Val.pt``."""
    base = Path(root) / model
    folder = base / f"{dataset}Val"
    return {
        "zeroshot": [folder / "nonlinear_zeroshot.pt"],
        "finetuned": [folder / "nonlinear_finetuned.pt"],
        "head": [base / f"head_{dataset}Val.pt"],
    }


#: layout -> where its files are
CANDIDATES = {
    "task_vectors": task_vectors_candidates,
    "tall_masks": tall_masks_candidates,
    "open_clip": open_clip_candidates,
}


def task_vectors_paths(root: str | os.PathLike, model: str, dataset: str) -> dict[str, Path]:
    """``{"zeroshot", "finetuned", "head"}`` paths of ``dataset`` under the task_vectors layout; raises
    FileNotFoundError naming every path tried when one is missing."""
    return {
        role: first_existing(paths, f"task_vectors {role} checkpoint")
        for role, paths in task_vectors_candidates(root, model, dataset).items()
    }


# ----------------------------------------------------------------------------- the benchmark's pool

HeadWeights = tuple[Tensor, Tensor | None]


@dataclass
class ClipCheckpoints:
    """θ0, the experts, the heads loaded from files (``None`` where absent) and the layout used."""

    layout: str
    base: StateDict
    experts: dict[str, StateDict]
    head_weights: dict[str, HeadWeights | None]
    sources: dict[str, str]
    # "quick_gelu" / "gelu" as the files say (pickled modules; OpenAI state, HF config.json); None: unknown
    activation: str | None = None


def detect_layout(root: str | os.PathLike, model: str, tasks: list[str]) -> str:
    """``task_vectors`` when ``<model>/zeroshot.pt`` and a ``finetuned.pt`` exist, ``tall_masks`` when a
    task's ``<model>/<Dataset>Val/nonlinear_finetuned.pt`` exists, ``open_clip`` when
    ``<model>/zeroshot.safetensors`` exists; FileNotFoundError naming all three otherwise."""
    base = Path(root) / model

    def found(layout: str, role: str) -> bool:
        return any(
            p.is_file() for t in tasks for p in CANDIDATES[layout](root, model, canonical_dataset(t))[role]
        )

    if (base / "zeroshot.pt").is_file() and found("task_vectors", "finetuned"):
        return "task_vectors"
    if found("tall_masks", "finetuned"):
        return "tall_masks"
    if (base / "zeroshot.safetensors").is_file():
        return "open_clip"
    raise FileNotFoundError(
        f"no CLIP checkpoints found: neither {base / 'zeroshot.pt'} + <Dataset>/finetuned.pt (task_vectors), "
        f"{base}/<Dataset>Val/nonlinear_finetuned.pt (tall_masks) nor {base / 'zeroshot.safetensors'} "
        "(open_clip layout)"
    )


def load_open_clip_head(path: str | os.PathLike) -> HeadWeights:
    """``(weight [C, D], bias [C] or None)`` of an open_clip-layout ``head_<Dataset>.safetensors``."""
    state = load_state(path)
    if "weight" not in state or state["weight"].dim() != 2:
        raise ValueError(f"{path}: needs a 2-D 'weight' [num_classes, embed_dim]")
    return state["weight"], state.get("bias")


def load_clip_checkpoints(
    root: str | os.PathLike, model: str, tasks: list[str], layout: str = "auto", allow_pickle: bool = False
) -> ClipCheckpoints:
    """θ0, every expert of ``tasks`` and the head files present under ``root/model``, from any layout
    (``auto``: :func:`detect_layout`); a missing head comes back as None (to be computed from text)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoints folder {root} does not exist")
    layout = detect_layout(root, model, tasks) if layout == "auto" else layout
    if layout not in CANDIDATES:
        raise ValueError(f"layout must be one of {sorted(CANDIDATES)} or auto, got {layout!r}")
    pickles = layout == "task_vectors"
    candidates = CANDIDATES[layout]

    def encoder(path: Path) -> tuple[StateDict, str | None]:
        if pickles:
            return load_task_vectors_encoder_and_activation(path, allow_pickle=allow_pickle)
        state = load_state(path, allow_pickle=allow_pickle)
        if layout == "tall_masks":  # open_clip's "openai" model: QuickGELU whatever the state says
            return visual_from_clip_state(state, str(path)), "quick_gelu"
        return visual_from_clip_state(state, str(path)), clip_activation(state, path)

    # θ0: one file (task_vectors, open_clip) or the same file in every task's folder (tall_masks)
    zs_paths = list(
        dict.fromkeys(p for t in tasks for p in candidates(root, model, canonical_dataset(t))["zeroshot"])
    )
    zs = first_existing(zs_paths, f"{layout} zeroshot checkpoint")
    base, activation = encoder(zs)
    out = ClipCheckpoints(layout, base, {}, {}, {}, activation)
    for t in tasks:
        paths = candidates(root, model, canonical_dataset(t))
        ft = first_existing(paths["finetuned"], f"{layout} finetuned checkpoint of {t}")
        out.experts[t], act = encoder(ft)
        if activation is not None and act is not None and act != activation:
            raise ValueError(f"{ft} uses {act} but {zs} uses {activation}: not one architecture")
        activation = out.activation = activation or act
        head = first_existing(paths["head"], "", required=False)
        pickled_heads = layout != "open_clip"
        read_head = (
            (lambda p: load_task_vectors_head(p, allow_pickle)) if pickled_heads else load_open_clip_head
        )
        out.head_weights[t] = None if head is None else read_head(head)
        out.sources[t] = str(ft)
    out.sources["base"] = str(zs)
    return out
