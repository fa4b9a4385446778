"""The eight-task CLIP merging benchmark (Task Arithmetic / TIES / AdaMerging papers' table), end to end.

``run(cfg)`` loads θ0 (the zero-shot visual tower) and the eight fine-tuned visual towers, the
zero-shot heads, the eight test sets, and evaluates rows × [SUN397, Cars, RESISC45, EuroSAT, SVHN, GTSRB,
MNIST, DTD, Avg.] top-1 accuracy (%):

- ``Pretrained``: θ0 with each task's zero-shot head;
- ``Individual``: each expert θt on its own task (the normalisation reference);
- one row per merge method in ``methods`` (defaults: task_arithmetic λ=0.3, ties k=20 λ=0.3 as in the
  papers' CLIP tables; data-dependent methods (adamerging, fisher, regmean) get a
  :class:`simo_merge.merging.data.MergeData` over each task's unlabelled test images, at most
  ``max_unlabelled`` per task, a seeded subset);
- one row ``<method>+<realigner>`` per method and realigner in ``realign`` (realigned on the same
  unlabelled test inputs for ``realign_steps`` steps).
- a per-task method (``tall_masks``: one model rebuilt per task) is one row in which each task is
  evaluated on its own model; no realigner is stacked on it.

Normalised accuracy = row accuracy / Individual accuracy × 100 per task (NaN where Individual is 0); its
average is the mean over tasks. Results go to ``output_dir`` as ``results.{md,csv,json}`` and
``results.png`` (average accuracy per row), all written atomically.

Checkpoint layouts under ``checkpoints`` (``layout=auto`` picks the first that matches):

- ``task_vectors`` (mlfoundations/task_vectors): ``<model>/zeroshot.pt``,
  ``<model>/<Dataset>[Val]/finetuned.pt``, ``<model>/head_<Dataset>[Val].pt``; pickled modules, read
  only with ``allow_pickle=true`` (see :mod:`simo_merge.pool.clip_layout`).
- ``open_clip``: ``<model>/zeroshot.safetensors`` and ``<model>/<Dataset>.safetensors`` (whole open_clip
  CLIP states, visual-only states or HF CLIP vision states), heads ``<model>/head_<Dataset>.safetensors``
  (``weight`` [C, D] already times the logit scale, optional ``bias`` [C]).

A missing head file is computed from text: CLIP's prompt ensemble over the templates of
:mod:`simo_merge.clip_templates` and the loader's own ``classnames`` (same class-id order as the labels),
with the text tower of ``text_checkpoint`` (a whole open_clip CLIP state; default: the open_clip
layout's ``zeroshot.safetensors``). task_vectors' ``zeroshot.pt`` has no text tower.

Test splits follow task_vectors: ``test`` except SUN397 and DTD, whose test sets are the ``val`` folders
(see :mod:`simo_merge.datasets.clip8`); ``test_splits`` overrides per dataset. Those ``val`` folders hold
the official test partitions (SUN397 ``Testing_01.txt``, DTD ``labels/test1.txt``; task_vectors issue #1),
and the DTD loader reads the original archive the same way, so ``val`` is the official test set there too.

Resumable: every finished row is stored as ``output_dir/rows/<row>.json`` with a hash of the config
that determines it; a rerun reuses rows whose hash matches and recomputes the rest.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from simo_merge.atomic import write_json, write_text
from simo_merge.checkpoint import load_state
from simo_merge.clip_templates import canonical_dataset, templates
from simo_merge.config import ConfigError
from simo_merge.datasets import build_dataset
from simo_merge.datasets.clip8 import CLIP8_TASKS
from simo_merge.encoders import Encoder, build_encoder
from simo_merge.features.inputs import RealignInputs
from simo_merge.heads.zeroshot import ZeroShotHead, zeroshot_head, zeroshot_head_from_weights
from simo_merge.merging import MERGE_METHODS, merge
from simo_merge.plotting import pyplot, save_png
from simo_merge.pool.clip_layout import (
    load_open_clip_visual_state,
    load_task_vectors_encoder_and_activation,
    load_task_vectors_head,
)
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.pool.model import MultiTaskModel
from simo_merge.realign import REALIGNERS
from simo_merge.realign.train import RealignConfig, realign
from simo_merge.runtime import RuntimeConfig
from simo_merge.training.evaluate import evaluate

StateDict = dict[str, Tensor]

LAYOUTS = ("auto", "task_vectors", "open_clip")
#: hyper-parameter defaults of the CLIP tables (Task Arithmetic: λ=0.3; TIES: top-20%, disjoint sum,
#: λ=0.3, as the AdaMerging / Surgery code runs it: ``ties_merging(..., merge_func="dis-sum")``)
DEFAULT_METHOD_PARAMS: dict[str, dict[str, Any]] = {
    "task_arithmetic": {"lam": 0.3},
    "ties": {"k": 20, "lam": 0.3, "merge_func": "sum"},
}
#: task_vectors tests SUN397 and DTD on their ``val`` folders
DEFAULT_TEST_SPLITS: dict[str, str] = {"sun397": "val", "dtd": "val"}
PRETRAINED, INDIVIDUAL = "Pretrained", "Individual"


@dataclass
class Clip8Config:
    """``simo-merge bench clip8``: where the checkpoints and data are, which rows to compute."""

    model: str = "ViT-B-32"  # the checkpoint folder name <checkpoints>/<model>/
    arch: str | None = None  # open_clip architecture; None: ``model`` (e.g. ViT-B-32-quickgelu for ViT-B-32)
    quick_gelu: bool | None = None  # None: detected from task_vectors pickles, else from the arch name
    checkpoints: str | None = None
    data: str | None = None
    datasets: list[str] = field(default_factory=lambda: list(CLIP8_TASKS))
    layout: str = "auto"  # auto | task_vectors | open_clip
    allow_pickle: bool = False  # task_vectors pickles need it (trusted files only)
    text_checkpoint: str | None = None  # whole open_clip CLIP state for heads computed from text
    image_size: int | None = None  # None: the model's input size
    test_splits: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TEST_SPLITS))
    methods: list[str] = field(default_factory=lambda: ["task_arithmetic", "ties"])
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per method, over defaults
    realign: list[str] = field(default_factory=list)
    realign_steps: int = 500
    realign_params: dict[str, Any] = field(default_factory=dict)  # other RealignConfig fields
    max_unlabelled: int = 256  # per task, for merge data and realignment (held in memory)
    batch_size: int = 128
    num_workers: int = 0
    seed: int = 0
    output_dir: str = "runs/clip8"
    progress: bool = True
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # device, processes, precision

    def validate(self) -> None:
        """Check values (run :meth:`require_paths` too before running: folders may be set later)."""
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if not self.datasets:
            raise ConfigError("datasets: empty list")
        unknown = [d for d in self.datasets if d not in CLIP8_TASKS]
        if unknown:
            raise ConfigError(f"datasets: unknown {unknown}; known: {list(CLIP8_TASKS)}")
        if len(set(self.datasets)) != len(self.datasets):
            raise ConfigError(f"datasets: duplicates in {self.datasets}")
        for m in self.methods:
            if m not in MERGE_METHODS.names():
                raise ConfigError(f"methods: unknown merge method {m!r}; known: {MERGE_METHODS.names()}")
        for m in self.method_params:
            if m not in self.methods:
                raise ConfigError(f"method_params: {m!r} is not in methods {self.methods}")
        from simo_merge.jobs._checks import check_method_params

        check_method_params("method_params", self.method_params)  # types, finite values, known names
        for r in self.realign:
            if r not in REALIGNERS.names():
                raise ConfigError(f"realign: unknown realigner {r!r}; known: {REALIGNERS.names()}")
        bad = [k for k in self.realign_params if k in ("realigner", "steps", "seed", "progress")]
        if bad or any(k not in RealignConfig.__dataclass_fields__ for k in self.realign_params):
            raise ConfigError(
                f"realign_params: keys {sorted(self.realign_params)} must be RealignConfig fields other "
                "than realigner/steps/seed/progress"
            )
        if self.max_unlabelled < 1 or self.batch_size < 1 or self.realign_steps < 0:
            raise ConfigError(
                f"max_unlabelled, batch_size must be >= 1 and realign_steps >= 0 (got {self.max_unlabelled}, "
                f"{self.batch_size}, {self.realign_steps})"
            )

    def require_paths(self) -> None:
        """Both folders must be set before a run (the CLI may fill them in after loading the YAML)."""
        if not self.checkpoints:
            raise ConfigError("checkpoints: set the checkpoint folder (--checkpoints DIR)")
        if not self.data:
            raise ConfigError("data: set the data folder (--data DIR)")


# ----------------------------------------------------------------------------------------- checkpoints
@dataclass
class Clip8Checkpoints:
    """θ0, the experts, the heads loaded from files (``None`` where absent) and the layout used."""

    layout: str
    base: StateDict
    experts: dict[str, StateDict]
    head_weights: dict[str, tuple[Tensor, Tensor | None] | None]
    sources: dict[str, str]
    activation: str | None = None  # "quick_gelu" / "gelu" as read from the pickles; None: unknown


def resolve_architecture(cfg: Clip8Config, ckpt: Clip8Checkpoints | None = None) -> tuple[str, bool]:
    """The open_clip architecture to build and whether it uses QuickGELU.

    ``cfg.arch`` (default ``cfg.model``, the checkpoint folder name) is the architecture; QuickGELU is
    ``cfg.quick_gelu`` when set, else what the task_vectors pickles use (``ckpt.activation``), else
    whether the architecture name ends in ``-quickgelu``. A setting that contradicts the pickles is an
    error naming the file.
    """
    arch = cfg.arch or cfg.model
    named = arch.endswith("-quickgelu")
    detected = None if ckpt is None or ckpt.activation is None else ckpt.activation == "quick_gelu"
    quick = cfg.quick_gelu
    if quick is None:
        quick = detected if detected is not None else named
    if named and not quick:
        raise ConfigError(f"arch {arch!r} is a QuickGELU architecture but quick_gelu is false")
    if detected is not None and quick != detected:
        where = ckpt.sources.get("base", "the checkpoints") if ckpt else "the checkpoints"
        raise ConfigError(
            f"quick_gelu={quick} (arch {arch!r}) contradicts {where}, whose modules use "
            f"{'QuickGELU' if detected else 'GELU'}; leave quick_gelu unset to follow the checkpoint"
        )
    return arch, quick


def _open_clip_kwargs(quick_gelu: bool) -> dict[str, Any]:
    return {"force_quick_gelu": True} if quick_gelu else {}


def _tv_candidates(base: Path, name: str) -> dict[str, list[Path]]:
    return {
        "finetuned": [base / name / "finetuned.pt", base / f"{name}Val" / "finetuned.pt"],
        "head": [base / f"head_{name}.pt", base / f"head_{name}Val.pt"],
    }


def detect_layout(root: Path, model: str, tasks: list[str]) -> str:
    """``task_vectors`` when ``<model>/zeroshot.pt`` and a ``finetuned.pt`` exist, ``open_clip`` when
    ``<model>/zeroshot.safetensors`` exists; FileNotFoundError naming both otherwise."""
    base = root / model
    if (base / "zeroshot.pt").is_file() and any(
        p.is_file() for t in tasks for p in _tv_candidates(base, canonical_dataset(t))["finetuned"]
    ):
        return "task_vectors"
    if (base / "zeroshot.safetensors").is_file():
        return "open_clip"
    raise FileNotFoundError(
        f"no CLIP checkpoints found: neither {base / 'zeroshot.pt'} + <Dataset>/finetuned.pt (task_vectors) "
        f"nor {base / 'zeroshot.safetensors'} (open_clip layout)"
    )


def _first(paths: list[Path], what: str, required: bool) -> Path | None:
    hit = next((p for p in paths if p.is_file()), None)
    if hit is None and required:
        raise FileNotFoundError(f"{what} not found; tried {[str(p) for p in paths]}")
    return hit


def load_checkpoints(cfg: Clip8Config) -> Clip8Checkpoints:
    """Read θ0, every expert of ``cfg.datasets`` and the head files present, from either layout."""
    root = Path(cfg.checkpoints).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoints folder {root} does not exist")
    layout = detect_layout(root, cfg.model, cfg.datasets) if cfg.layout == "auto" else cfg.layout
    base_dir = root / cfg.model
    experts: dict[str, StateDict] = {}
    heads: dict[str, tuple[Tensor, Tensor | None] | None] = {}
    sources: dict[str, str] = {}
    activation: str | None = None
    if layout == "task_vectors":
        zs = _first([base_dir / "zeroshot.pt"], "task_vectors zeroshot checkpoint", True)
        base, activation = load_task_vectors_encoder_and_activation(zs, allow_pickle=cfg.allow_pickle)
        for t in cfg.datasets:
            cands = _tv_candidates(base_dir, canonical_dataset(t))
            ft = _first(cands["finetuned"], f"task_vectors finetuned checkpoint of {t}", True)
            experts[t], act = load_task_vectors_encoder_and_activation(ft, allow_pickle=cfg.allow_pickle)
            if activation is not None and act is not None and act != activation:
                raise ValueError(f"{ft} uses {act} but {zs} uses {activation}: not one architecture")
            head = _first(cands["head"], "", False)
            heads[t] = None if head is None else load_task_vectors_head(head, allow_pickle=cfg.allow_pickle)
            sources[t] = str(ft)
    else:
        zs = _first([base_dir / "zeroshot.safetensors"], "open_clip zeroshot checkpoint", True)
        base = load_open_clip_visual_state(zs, allow_pickle=cfg.allow_pickle)
        for t in cfg.datasets:
            name = canonical_dataset(t)
            ft = _first([base_dir / f"{name}.safetensors"], f"open_clip checkpoint of {t}", True)
            experts[t] = load_open_clip_visual_state(ft, allow_pickle=cfg.allow_pickle)
            head = _first([base_dir / f"head_{name}.safetensors"], "", False)
            if head is None:
                heads[t] = None
            else:
                state = load_state(head)
                if "weight" not in state or state["weight"].dim() != 2:
                    raise ValueError(f"{head}: needs a 2-D 'weight' [num_classes, embed_dim]")
                heads[t] = (state["weight"], state.get("bias"))
            sources[t] = str(ft)
    sources["base"] = str(zs)
    return Clip8Checkpoints(layout, base, experts, heads, sources, activation)


def _text_heads(cfg: Clip8Config, ckpt: Clip8Checkpoints, classnames: dict[str, list[str]]) -> dict:
    """Zero-shot heads from CLIP's text tower for the tasks without a head file."""
    import open_clip

    from simo_merge.encoders.open_clip_vit import register_small_configs

    missing = [t for t, h in ckpt.head_weights.items() if h is None]
    if not missing:
        return {}
    path = cfg.text_checkpoint
    if path is None and ckpt.layout == "open_clip":
        path = ckpt.sources["base"]
    if path is None:
        raise FileNotFoundError(
            f"no head file for {missing} and no text tower to compute them: set text_checkpoint to a whole "
            "open_clip CLIP state (task_vectors' zeroshot.pt has no text tower)"
        )
    register_small_configs()
    arch, quick = resolve_architecture(cfg, ckpt)
    clip = open_clip.create_model(arch, pretrained=None, **_open_clip_kwargs(quick))
    state = load_state(path, allow_pickle=cfg.allow_pickle)
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    need = [k for k in clip.state_dict() if not k.startswith("visual.")]
    absent = [k for k in need if k not in state]
    if absent:
        raise ValueError(f"text_checkpoint {path}: no CLIP text tower (missing {absent[:3]}...)")
    clip.load_state_dict({k: state[k] for k in need}, strict=False)
    tokenizer = open_clip.get_tokenizer(arch)
    return {
        t: zeroshot_head(clip, tokenizer, classnames[t], templates(t), task_name=t).eval() for t in missing
    }


# ----------------------------------------------------------------------------------------- the bench
def _config_hash(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def row_keys(cfg: Clip8Config, ckpt: Clip8Checkpoints | None = None) -> dict[str, str]:
    """Row name -> hash of the config that determines that row (for resuming)."""
    arch, quick = resolve_architecture(cfg, ckpt)
    common = {
        "model": cfg.model,
        "arch": arch,
        "quick_gelu": quick,
        "checkpoints": str(Path(cfg.checkpoints).expanduser().resolve()),
        "data": str(Path(cfg.data).expanduser().resolve()),
        "layout": cfg.layout,
        "text_checkpoint": cfg.text_checkpoint,
        "image_size": cfg.image_size,
        "test_splits": {t: split_of(cfg, t) for t in cfg.datasets},
        "datasets": list(cfg.datasets),
    }
    unlabelled = {"max_unlabelled": cfg.max_unlabelled, "seed": cfg.seed}
    keys = {PRETRAINED: _config_hash({**common, "row": PRETRAINED})}
    keys[INDIVIDUAL] = _config_hash({**common, "row": INDIVIDUAL})
    for m in cfg.methods:
        method = {"method": m, "params": method_params(cfg, m), **(unlabelled if _needs_probe(m) else {})}
        keys[m] = _config_hash({**common, **method})
        for r in [] if _per_task(m) else cfg.realign:
            extra = {"realigner": r, "steps": cfg.realign_steps, "params": cfg.realign_params, **unlabelled}
            keys[f"{m}+{r}"] = _config_hash({**common, **method, "realign": extra})
    return keys


def method_params(cfg: Clip8Config, method: str) -> dict[str, Any]:
    """The papers' defaults for ``method`` updated with ``cfg.method_params[method]``."""
    return {**DEFAULT_METHOD_PARAMS.get(method, {}), **cfg.method_params.get(method, {})}


def split_of(cfg: Clip8Config, task: str) -> str:
    """The split evaluated as ``task``'s test set (task_vectors: ``val`` for SUN397 and DTD)."""
    return cfg.test_splits.get(task, "test")


def _needs_probe(method: str) -> bool:
    return bool(MERGE_METHODS.facts(method)["needs_data"])


def _per_task(method: str) -> bool:
    """A method that rebuilds one model per task (TALL masks): each task is evaluated on its own model,
    and no realigner is stacked on it."""
    return bool(MERGE_METHODS.facts(method).get("per_task"))


class _Bench:
    """State shared by the rows of one run: data, heads, encoder factory, unlabelled inputs."""

    def __init__(self, cfg: Clip8Config, ckpt: Clip8Checkpoints) -> None:
        self.cfg = cfg
        self.ckpt = ckpt
        self.tasks = list(cfg.datasets)
        self.arch, self.quick_gelu = resolve_architecture(cfg, ckpt)
        kwargs = _open_clip_kwargs(self.quick_gelu)
        self.make_encoder: Callable[[], Encoder] = lambda: build_encoder("open_clip", self.arch, **kwargs)
        probe_enc = self.make_encoder()
        size = cfg.image_size or int(tuple(probe_enc.model.image_size)[0])
        self.datasets = {
            t: build_dataset(t, root=cfg.data, split=split_of(cfg, t), image_size=size) for t in self.tasks
        }
        self.specs = {t: ds.task_specs[t] for t, ds in self.datasets.items()}
        heads: dict[str, ZeroShotHead] = {}
        for t, hw in ckpt.head_weights.items():
            if hw is not None:
                heads[t] = zeroshot_head_from_weights(hw[0], hw[1], task_name=t).eval()
        heads.update(_text_heads(cfg, ckpt, {t: ds.classnames for t, ds in self.datasets.items()}))
        for t in self.tasks:
            c, n = heads[t].task.channels, self.specs[t].channels
            if c != n:
                raise ValueError(f"{t}: head has {c} classes but the {split_of(cfg, t)} set has {n}")
            if heads[t].embed_dim != probe_enc.feature_dim:
                raise ValueError(
                    f"{t}: head embed_dim {heads[t].embed_dim} != {cfg.model} feature dim "
                    f"{probe_enc.feature_dim}"
                )
        self.heads = heads
        self.pool = ExpertPool(ckpt.base, ckpt.experts, sources=ckpt.sources)
        self._unlabelled: dict[str, Tensor] = {}
        self.evaluations = 0

    def loader(self, task: str) -> DataLoader:
        return DataLoader(
            self.datasets[task], batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers
        )

    def unlabelled(self) -> dict[str, Tensor]:
        """Each task's unlabelled test images (a seeded subset of at most ``max_unlabelled``)."""
        for t in self.tasks:
            if t not in self._unlabelled:
                ds = self.datasets[t]
                gen = torch.Generator().manual_seed(self.cfg.seed)
                idx = torch.randperm(len(ds), generator=gen)[: self.cfg.max_unlabelled].sort().values
                self._unlabelled[t] = torch.stack([ds[int(i)]["image"] for i in idx])
        return self._unlabelled

    def heads_copy(self) -> dict[str, nn.Module]:
        return {t: copy.deepcopy(h) for t, h in self.heads.items()}

    def accuracy(self, model: nn.Module, tasks: list[str], desc: str) -> dict[str, float]:
        out = {}
        for t in tasks:
            metrics = evaluate(model, self.loader(t), {t: self.specs[t]}, f"{desc}/{t}", self.cfg.progress)
            out[t] = float(metrics[t]["accuracy"])  # already in %
            self.evaluations += 1
        return out

    def state_model(self, state: StateDict) -> MultiTaskModel:
        encoder = self.make_encoder()
        encoder.load_model_state(state)
        return MultiTaskModel(encoder, self.heads_copy()).eval()

    def merged_state(self, method: str) -> StateDict:
        params = method_params(self.cfg, method)
        if _needs_probe(method):
            from simo_merge.merging.data import MergeData

            params["merge_data"] = MergeData(
                self.make_encoder,
                self.heads_copy(),
                self.pool.experts,
                self.unlabelled(),
                name=f"clip8-{self.cfg.model}",
                seed=self.cfg.seed,
                progress=self.cfg.progress,
            )
        if MERGE_METHODS.facts(method)["progress"]:
            params.setdefault("progress", self.cfg.progress)
        return merge(self.pool, method, **params)

    def realigned(self, merged: StateDict, realigner: str) -> nn.Module:
        rcfg = RealignConfig(
            realigner=realigner,
            steps=self.cfg.realign_steps,
            seed=self.cfg.seed,
            progress=self.cfg.progress,
            **self.cfg.realign_params,
        )
        inputs = RealignInputs(images=self.unlabelled(), name=f"clip8-{self.cfg.model}")
        model, _ = realign(self.make_encoder, merged, self.pool.experts, self.heads_copy(), inputs, rcfg)
        return model.eval()


def _summarise(acc: dict[str, float], individual: dict[str, float] | None, tasks: list[str]) -> dict:
    row: dict[str, Any] = {"accuracy": {t: acc[t] for t in tasks}, "avg": sum(acc.values()) / len(acc)}
    if individual is not None:
        norm = {t: (100.0 * acc[t] / individual[t]) if individual[t] > 0 else math.nan for t in tasks}
        row["normalized"] = norm
        row["normalized_avg"] = sum(norm.values()) / len(norm)
    return row


def _json_safe(obj: Any) -> Any:
    """NaN -> None (JSON has no NaN)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def format_tables(rows: dict[str, dict], tasks: list[str]) -> tuple[str, str]:
    """(markdown with accuracy and normalised-accuracy tables, CSV with both)."""
    cols = [canonical_dataset(t) for t in tasks] + ["Avg."]
    md = []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["row", "metric", "unit", *cols])
    for title, key, avg in (
        ("Accuracy (%)", "accuracy", "avg"),
        ("Normalised accuracy (%)", "normalized", "normalized_avg"),
    ):
        md += [f"### {title}", "", "| Method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for name, row in rows.items():
            vals = [row[key][t] for t in tasks] + [row[avg]]
            md.append(f"| {name} | " + " | ".join(_fmt(v) for v in vals) + " |")
            writer.writerow([name, key, "%", *(f"{v:.4f}" for v in vals)])
        md.append("")
    return "\n".join(md), buf.getvalue()


def _plot(rows: dict[str, dict], path: Path) -> None:
    plt = pyplot()
    names = list(rows)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.5))
    values = [rows[n]["avg"] for n in names]
    ax.bar(range(len(names)), values, color="tab:blue")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("average accuracy (%)")
    ax.set_title("CLIP eight-task benchmark")
    fig.tight_layout()
    save_png(fig, path)


Config = Clip8Config
DEFAULT_CONFIG = None
FLAGS = {  # command-line flags of ``bench clip8`` -> config keys
    "--model": ("model", "open_clip architecture, e.g. ViT-B-32, ViT-B-16, ViT-L-14"),
    "--checkpoints": (
        "checkpoints",
        "folder with <model>/zeroshot.pt and <model>/<Dataset>/finetuned.pt (or .safetensors)",
    ),
    "--data": ("data", "folder with the eight datasets in their on-disk layouts"),
}


def output_folder(cfg: Clip8Config) -> tuple[str, str]:
    return cfg.output_dir, "output_dir"


def run(cfg: Clip8Config) -> dict:
    """Compute (or reuse) every row, write ``results.{md,csv,json,png}`` to ``output_dir``, return the
    results dict (``rows``: name -> accuracy/avg/normalized/normalized_avg; ``computed``/``reused`` rows)."""
    cfg.validate()
    cfg.require_paths()
    out = Path(cfg.output_dir)
    rows_dir = out / "rows"
    ckpt = load_checkpoints(cfg)
    keys = row_keys(cfg, ckpt)
    bench = _Bench(cfg, ckpt)
    tasks = bench.tasks
    raw: dict[str, dict[str, float]] = {}
    computed: list[str] = []

    def cached(name: str) -> dict[str, float] | None:
        path = rows_dir / f"{name}.json"
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data["accuracy"] if data.get("key") == keys[name] else None

    def store(name: str, acc: dict[str, float]) -> None:
        write_json(rows_dir / f"{name}.json", {"row": name, "key": keys[name], "accuracy": acc})
        raw[name] = acc
        computed.append(name)

    bar = tqdm(list(keys), desc="clip8 rows", disable=not cfg.progress, dynamic_ncols=True)
    for name in keys:
        if (acc := cached(name)) is not None:
            raw[name] = acc
    if PRETRAINED not in raw:
        store(PRETRAINED, bench.accuracy(bench.state_model(ckpt.base), tasks, PRETRAINED))
    bar.update(1)
    if INDIVIDUAL not in raw:
        acc = {}
        for t in tasks:
            acc.update(bench.accuracy(bench.state_model(ckpt.experts[t]), [t], f"{INDIVIDUAL}/{t}"))
        store(INDIVIDUAL, acc)
    bar.update(1)
    for m in cfg.methods:
        if _per_task(m):
            if m not in raw:
                acc = {}
                for t in tasks:
                    state = merge(bench.pool, m, task=t, **method_params(cfg, m))
                    acc.update(bench.accuracy(bench.state_model(state), [t], f"{m}/{t}"))
                store(m, acc)
            bar.update(1)
            continue
        todo = [n for n in [m] + [f"{m}+{r}" for r in cfg.realign] if n not in raw]
        if todo:
            merged = bench.merged_state(m)
            if m in todo:
                store(m, bench.accuracy(bench.state_model(merged), tasks, m))
            for r in cfg.realign:
                if f"{m}+{r}" in todo:
                    name = f"{m}+{r}"
                    store(name, bench.accuracy(bench.realigned(merged, r), tasks, name))
            del merged
        bar.update(1 + len(cfg.realign))
    bar.close()

    rows = {n: _summarise(raw[n], raw[INDIVIDUAL], tasks) for n in keys}
    md, table_csv = format_tables(rows, tasks)
    header = (
        f"# CLIP eight-task merging benchmark ({cfg.model}; open_clip {bench.arch}"
        f"{', QuickGELU' if bench.quick_gelu else ''})\n\n"
        f"checkpoints: `{cfg.checkpoints}` ({ckpt.layout} layout); data: `{cfg.data}`; "
        f"test splits: {', '.join(f'{canonical_dataset(t)}={split_of(cfg, t)}' for t in tasks)}\n\n"
    )
    result = {
        "model": cfg.model,
        "arch": bench.arch,
        "quick_gelu": bench.quick_gelu,
        "layout": ckpt.layout,
        "datasets": [canonical_dataset(t) for t in tasks],
        "rows": rows,
        "units": {"accuracy": "%", "avg": "%", "normalized": "%", "normalized_avg": "%"},
        "computed": computed,
        "reused": [n for n in keys if n not in computed],
        "config": asdict(cfg),
    }
    write_text(out / "results.md", header + md)
    write_text(out / "results.csv", table_csv)
    write_json(out / "results.json", _json_safe(result))
    _plot(rows, out / "results.png")
    print(md)
    return result


__all__ = [
    "DEFAULT_METHOD_PARAMS",
    "Clip8Checkpoints",
    "Clip8Config",
    "detect_layout",
    "format_tables",
    "load_checkpoints",
    "row_keys",
    "run",
]
