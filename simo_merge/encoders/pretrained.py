"""θ0 from a pretrained checkpoint: reading a file into a timm or open_clip encoder, and finding
published weights in the local caches only (nothing is ever downloaded here).

- :func:`load_timm_checkpoint` / :func:`load_open_clip_checkpoint`: a safetensors file or a
  ``.pt/.pth/.bin`` read with ``torch.load(weights_only=True)``, converted to the library's keys (DINOv2:
  timm, torch.hub and Hugging Face layouts, see :mod:`simo_merge.encoders.convert_dinov2`; CLIP: open_clip
  and Hugging Face layouts, see :mod:`simo_merge.encoders.convert_clip`), with the position embeddings
  resampled to the encoder's patch grid (:func:`resample_pos_embed`), then loaded strictly.
- :func:`resolve_pretrained`: ``pretrained=true|TAG`` -> a file in the local cache: timm's pretrained
  configs (Hugging Face hub cache for ``hf_hub_id``, else torch hub's ``checkpoints/`` for ``url``),
  open_clip's pretrained tags (hub cache, else ``~/.cache/clip``), or a Hugging Face model repository
  (``TAG`` = ``org/name`` or ``hf-hub:org/name``). A miss raises :class:`PretrainedNotCached` naming what
  to download and where it was looked for.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simo_merge.encoders.convert_clip import visual_from_clip_state
from simo_merge.io.checkpoint import CheckpointError, StateDict, load_state

#: weight files a Hugging Face model repository may hold, in the order they are preferred
HF_WEIGHT_FILES = (
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
)


class PretrainedNotCached(FileNotFoundError):
    """Published weights were asked for but are not in the local cache."""


@dataclass(frozen=True)
class WeightSource:
    """Where θ0's weights came from (recorded in the θ0 sidecar)."""

    file: str
    sha256: str
    kind: str  # "checkpoint" or "pretrained"
    name: str = ""  # the pretrained tag / repository, if any

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "sha256": self.sha256, "kind": self.kind, "name": self.name}


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weight_source(path: str | os.PathLike, kind: str, name: str = "") -> WeightSource:
    path = Path(path)
    return WeightSource(str(path.resolve()), file_sha256(path), kind, name)


def parse_pretrained(value: Any) -> str | bool:
    """``true``/``false`` (bool or string, any case) -> bool; anything else is a tag string."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0", "", "none", "null"):
        return False
    return text


# ------------------------------------------------------------------------------------ resampling


def resample_pos_embed(
    pos: Tensor,
    new_grid: Sequence[int],
    num_prefix: int,
    old_grid: Sequence[int] | None = None,
    antialias: bool = True,
) -> Tensor:
    """Resample ``[1, P + h*w, D]`` (or ``[P + h*w, D]``) position embeddings to ``new_grid``.

    The ``num_prefix`` leading entries (CLS/register positions) are kept; the patch positions are
    interpolated bicubically (``align_corners=False``) in float32, **with antialiasing** (only acts when
    shrinking, e.g. DINOv2's 37x37 grid at 518 px -> 16x16 at 224 px), as timm's checkpoint filter does.
    ``old_grid`` defaults to the square grid that fits; a non-square old grid must be given.
    """
    squeeze = pos.dim() == 2
    if squeeze:
        pos = pos[None]
    if pos.dim() != 3:
        raise ValueError(f"position embeddings must be [1, N, D] or [N, D], got {tuple(pos.shape)}")
    n = pos.shape[1] - num_prefix
    if old_grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"position embeddings hold {n} patch positions, not a square grid; pass old_grid"
            )
        old_grid = (side, side)
    old_grid, new_grid = (int(old_grid[0]), int(old_grid[1])), (int(new_grid[0]), int(new_grid[1]))
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"old_grid {old_grid} does not hold the {n} patch positions")
    if old_grid == new_grid:
        return pos[0] if squeeze else pos
    prefix, grid = pos[:, :num_prefix], pos[:, num_prefix:]
    d = grid.shape[-1]
    grid = grid.float().reshape(1, *old_grid, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d).to(pos.dtype)
    out = torch.cat([prefix, grid], dim=1)
    return out[0] if squeeze else out


# -------------------------------------------------------------------------------- strict loading


def _check_fits(state: Mapping[str, Tensor], model: nn.Module, source: str, what: str) -> None:
    """Raise CheckpointError naming the missing/unexpected/mis-shaped keys (strict load, clear message)."""
    ref = model.state_dict()
    missing = sorted(k for k in ref if k not in state)
    unexpected = sorted(k for k in state if k not in ref)
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(ref[k].shape)}"
        for k in ref
        if k in state and tuple(state[k].shape) != tuple(ref[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:4]}")
        raise CheckpointError(f"{source}: does not fit {what} ({len(ref)} tensors): " + "; ".join(parts))


def timm_state_for(model: nn.Module, raw: Mapping[str, Tensor], antialias: bool = True) -> StateDict:
    """``raw`` (timm / DINOv2 torch.hub / HF Dinov2 layout) converted to ``model``'s keys, with
    ``pos_embed`` resampled to ``model``'s patch grid."""
    from simo_merge.encoders.convert_dinov2 import to_timm_state

    state = to_timm_state(raw)
    pos = state.get("pos_embed")
    ref = getattr(model, "pos_embed", None)
    if pos is not None and ref is not None and tuple(pos.shape) != tuple(ref.shape):
        prefix = 0 if getattr(model, "no_embed_class", False) else int(model.num_prefix_tokens)
        state["pos_embed"] = resample_pos_embed(pos, model.patch_embed.grid_size, prefix, antialias=antialias)
    return state


def load_timm_checkpoint(model: nn.Module, path: str | os.PathLike, arch: str = "") -> None:
    """Load ``path`` into a timm VisionTransformer (see :func:`timm_state_for`), strictly."""
    raw = load_state(path)
    try:
        state = timm_state_for(model, raw)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    _check_fits(state, model, str(path), f"timm {arch or type(model).__name__}")
    model.load_state_dict(state)


def open_clip_state_for(visual: nn.Module, raw: Mapping[str, Tensor], source: str) -> StateDict:
    """An open_clip visual-tower state from ``raw`` (whole CLIP, visual only or HF CLIP vision), with
    ``positional_embedding`` resampled to ``visual``'s grid."""
    state = visual_from_clip_state(raw, source)
    pos = state.get("positional_embedding")
    ref = getattr(visual, "positional_embedding", None)
    if pos is not None and ref is not None and tuple(pos.shape) != tuple(ref.shape):
        state["positional_embedding"] = resample_pos_embed(pos, visual.grid_size, 1)
    return state


def load_open_clip_checkpoint(
    visual: nn.Module, path: str | os.PathLike, arch: str = "", state: StateDict | None = None
) -> None:
    """Load ``path`` (``state``: its entries, already read) into an open_clip visual tower, strictly
    (resampling its position embeddings)."""
    try:
        state = open_clip_state_for(visual, load_state(path) if state is None else state, str(path))
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    _check_fits(state, visual, str(path), f"open_clip {arch or 'visual tower'}")
    visual.load_state_dict(state)


# --------------------------------------------------------------------------------- cache lookup


def _hub_cached(repo_id: str, filenames: Sequence[str]) -> tuple[Path | None, list[str]]:
    """The first of ``filenames`` in the local Hugging Face hub cache (no network), and what was tried."""
    from huggingface_hub import try_to_load_from_cache

    revision = None
    if "@" in repo_id:
        repo_id, revision = repo_id.split("@", 1)
    tried = []
    for name in filenames:
        tried.append(f"hf-hub {repo_id}/{name}")
        hit = try_to_load_from_cache(repo_id, name, revision=revision)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit), tried
    return None, tried


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def resolve_hf_repo(repo_id: str) -> Path:
    """A weight file of Hugging Face repository ``repo_id`` from the local hub cache."""
    repo_id = repo_id.removeprefix("hf-hub:")
    hit, tried = _hub_cached(repo_id, HF_WEIGHT_FILES)
    if hit is None:
        raise PretrainedNotCached(
            f"pretrained={repo_id!r}: not in the local Hugging Face cache ({_hub_cache_dir()}; tried "
            f"{', '.join(tried)}). Nothing is downloaded here: on a machine with network run "
            f"`huggingface-cli download {repo_id} model.safetensors` (same HF_HOME), or pass "
            "encoder.checkpoint=PATH"
        )
    return hit


def resolve_timm_pretrained(arch: str, tag: str | bool = True) -> tuple[Path, str]:
    """``(file, "arch.tag")`` of timm's pretrained weights for ``arch`` from the local caches."""
    from timm.models import get_pretrained_cfg

    name = arch if tag is True else f"{arch.split('.')[0]}.{tag}"
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise PretrainedNotCached(f"timm has no pretrained weights named {name!r}")
    full = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else str(cfg.architecture)
    tried: list[str] = []
    if cfg.file:
        tried.append(str(cfg.file))
        if Path(cfg.file).is_file():
            return Path(cfg.file), full
    if cfg.hf_hub_id:
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        hit, more = _hub_cached(cfg.hf_hub_id, names)
        tried += more
        if hit is not None:
            return hit, full
    if cfg.url:
        from urllib.parse import urlparse

        local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        tried.append(str(local))
        if local.is_file():
            return local, full
    hint = (
        f"`huggingface-cli download {cfg.hf_hub_id.split('@')[0]}` (into {_hub_cache_dir()})"
        if cfg.hf_hub_id
        else f"{cfg.url} into {Path(torch.hub.get_dir()) / 'checkpoints'}"
    )
    raise PretrainedNotCached(
        f"timm weights {full!r} are not in the local cache (tried {', '.join(tried) or 'nothing'}). "
        f"Nothing is downloaded here: on a machine with network fetch {hint}, or pass encoder.checkpoint=PATH"
    )


def resolve_open_clip_pretrained(arch: str, tag: str | bool = True) -> tuple[Path, str]:
    """``(file, tag)`` of open_clip's pretrained weights ``tag`` for ``arch`` from the local caches
    (``true``: the first tag open_clip lists for ``arch``)."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag is True:
        if not tags:
            raise PretrainedNotCached(f"open_clip lists no pretrained weights for {arch!r}")
        tag = tags[0]
    cfg = open_clip.get_pretrained_cfg(arch, str(tag))
    if not cfg:
        path = Path(str(tag)).expanduser()
        if path.is_file():  # open_clip also takes a file as its pretrained argument
            return path, str(tag)
        raise PretrainedNotCached(
            f"open_clip has no pretrained tag {tag!r} for {arch!r} (known: {', '.join(tags) or 'none'})"
        )
    tried: list[str] = []
    if cfg.get("file"):
        tried.append(cfg["file"])
        if Path(cfg["file"]).is_file():
            return Path(cfg["file"]), str(tag)
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        hit, more = _hub_cached(repo, names)
        tried += more
        if hit is not None:
            return hit, str(tag)
    if cfg.get("url"):
        local = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        tried.append(str(local))
        if local.is_file():
            return local, str(tag)
    where = f"`huggingface-cli download {os.path.split(hub)[0]}`" if hub else cfg.get("url", "?")
    raise PretrainedNotCached(
        f"open_clip weights {arch}/{tag} are not in the local cache (tried {', '.join(tried)}). Nothing is "
        f"downloaded here: on a machine with network fetch {where}, or pass encoder.checkpoint=PATH"
    )
