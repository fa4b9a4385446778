"""The 8-, 14- and 20-task CLIP merging benchmarks (Task Arithmetic / TIES / AdaMerging papers' eight
tasks; TALL masks / Consensus, TSV-M, Iso-C/CTS, LiNeS' 14 and 20), end to end.

``tasks`` picks the tasks: ``8`` (:data:`CLIP8_TASKS`: SUN397, Cars, RESISC45, EuroSAT, SVHN, GTSRB, MNIST,
DTD, task_vectors' order), ``14`` or ``20`` (:data:`CLIP14_TASKS` / :data:`CLIP20_TASKS`, the TALL masks
authors' order: the eight + STL10, OxfordIIITPet, Flowers102, CIFAR100, PCAM, FER2013, then CIFAR10,
Food101, FashionMNIST, RenderedSST2, EMNIST, KMNIST), or an explicit list of those names.
``run(cfg)`` loads θ0 (the zero-shot visual tower) and the fine-tuned visual towers, the zero-shot heads,
the test sets, and evaluates rows × [tasks..., Avg.] top-1 accuracy (%):

- ``Pretrained``: θ0 with each task's zero-shot head;
- ``Individual``: each expert θt on its own task (the normalisation reference);
- one row per merge method in ``methods`` (defaults: task_arithmetic λ=0.3, ties k=20 λ=0.3 as in the
  papers' CLIP tables; data-dependent methods (adamerging, fisher, regmean) get a
  :class:`simo_merge.merging.data.MergeData` over each task's unlabelled test images, at most
  ``max_unlabelled`` per task, a seeded subset (``null``: the whole test split), read from the test sets
  only when a batch draws them);
- one row ``<method>+<realigner>`` per method and each of ``realign.realigners`` (realigned on the same
  unlabelled test inputs for ``realign.params.steps`` steps, default 500).
- a per-task method (``tall_masks``: one model rebuilt per task) is one row in which each task is
  evaluated on its own model; no realigner is stacked on it.

Normalised accuracy = row accuracy / Individual accuracy × 100 per task (NaN where Individual is 0); its
average is the mean over tasks. Results go to ``output_dir`` as ``results.{md,csv,json}`` and
``results.png`` (average accuracy per row), all written atomically (tables from :mod:`simo_merge.report`;
the rows run on a :class:`simo_merge.taskpool.TaskPool` of the eight test sets).

Checkpoint layouts under ``checkpoints`` (``layout=auto`` picks the first that matches; read by
:mod:`simo_merge.pool.clip_layout`):

- ``task_vectors`` (mlfoundations/task_vectors): ``<model>/zeroshot.pt``,
  ``<model>/<Dataset>[Val]/finetuned.pt``, ``<model>/head_<Dataset>[Val].pt``; pickled modules, read
  only with ``allow_pickle=true``.
- ``tall_masks`` (nik-dim/tall_masks, the released 20-task checkpoints, also used by TSV-M and Iso-C/CTS):
  ``<model>/<Dataset>Val/nonlinear_finetuned.pt`` (ImageEncoder state dicts, read with
  ``weights_only=True``), θ0 ``<model>/<Dataset>Val/nonlinear_zeroshot.pt`` (the same file in every
  folder; the first task's is read), heads ``<model>/head_<Dataset>Val.pt`` (pickled modules, as
  task_vectors'; ``allow_pickle=true``; a missing one is computed from text).
- ``open_clip``: ``<model>/zeroshot.safetensors`` and ``<model>/<Dataset>.safetensors`` (whole open_clip
  CLIP states, visual-only states or HF CLIP vision states), heads ``<model>/head_<Dataset>.safetensors``
  (``weight`` [C, D] already times the logit scale, optional ``bias`` [C]).

A missing head file is computed from text (:func:`simo_merge.heads.zeroshot.zeroshot_heads`): CLIP's
prompt ensemble over the templates of :mod:`simo_merge.datasets.clip_templates` and the loader's own
``classnames`` (same class-id order as the labels), with the text tower of ``text_checkpoint`` (a whole
open_clip CLIP state; default: the open_clip layout's ``zeroshot.safetensors``). task_vectors'
``zeroshot.pt`` has no text tower.

Test splits follow task_vectors: ``test`` except SUN397, whose test set is its ``val`` folder (the
official ``Testing_01.txt``; task_vectors issue #1); ``test_splits`` overrides per dataset. DTD's ``test``
is task_vectors' ``dtd/val`` folder (the official ``labels/test1.txt``) and its ``val`` task_vectors'
DTDVal, 10 % of ``dtd/train`` (see :mod:`simo_merge.datasets.clip8`).

Resumable: every finished row is stored as ``output_dir/rows/<row>.json`` with a hash of the config
that determines it; a rerun reuses rows whose hash matches and recomputes the rest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from simo_merge.config import ConfigError
from simo_merge.datasets import build_dataset
from simo_merge.datasets.clip8 import CLIP8_TASKS, CLIP14_TASKS, CLIP20_TASKS
from simo_merge.datasets.clip_templates import canonical_dataset
from simo_merge.encoders import build_encoder
from simo_merge.heads.zeroshot import zeroshot_heads
from simo_merge.io.atomic import write_json, write_text
from simo_merge.merging import MERGE_METHODS
from simo_merge.merging.spec import MethodSpec, method_specs
from simo_merge.pool.clip_layout import ClipCheckpoints, detect_layout, load_clip_checkpoints
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.progress import progress_bar
from simo_merge.realign.config import RealignSettings
from simo_merge.realign.train import RealignConfig
from simo_merge.report import accuracy_tables, average_chart, json_safe
from simo_merge.runtime import RuntimeConfig, current, on_rank_zero
from simo_merge.taskpool import INDIVIDUAL, TaskPool, accuracy_rows, merge, realigned

LAYOUTS = ("auto", "task_vectors", "tall_masks", "open_clip")
#: ``tasks: 8|14|20`` -> the task list
TASK_SETS: dict[int, tuple[str, ...]] = {8: CLIP8_TASKS, 14: CLIP14_TASKS, 20: CLIP20_TASKS}
#: hyper-parameter defaults of the CLIP tables (Task Arithmetic: λ=0.3; TIES: top-20%, disjoint sum,
#: λ=0.3, as the AdaMerging / Surgery code runs it: ``ties_merging(..., merge_func="dis-sum")``)
DEFAULT_METHOD_PARAMS: dict[str, dict[str, Any]] = {
    "task_arithmetic": {"lam": 0.3},
    "ties": {"k": 20, "lam": 0.3, "merge_func": "sum"},
}
#: task_vectors tests SUN397 on its ``val`` folder (DTD's loader names its ``val`` folder ``test``)
DEFAULT_TEST_SPLITS: dict[str, str] = {"sun397": "val"}
PRETRAINED = "Pretrained"
#: realignment steps of a ``<method>+<realigner>`` row unless ``realign.params.steps`` says otherwise
DEFAULT_REALIGN_STEPS = 500


@dataclass
class ClipConfig:
    """``simo-merge bench clip``: where the checkpoints and data are, which tasks and rows to compute."""

    model: str = "ViT-B-32"  # the checkpoint folder name <checkpoints>/<model>/
    arch: str | None = None  # open_clip architecture; None: ``model`` (e.g. ViT-B-32-quickgelu for ViT-B-32)
    quick_gelu: bool | None = None  # None: detected from task_vectors pickles, else from the arch name
    checkpoints: str | None = None
    data: str | None = None
    tasks: Any = 8  # 8 | 14 | 20 (TASK_SETS) or a list of task names (of CLIP20_TASKS)
    layout: str = "auto"  # auto | task_vectors | tall_masks | open_clip
    allow_pickle: bool = False  # task_vectors pickles need it (trusted files only)
    text_checkpoint: str | None = None  # whole open_clip CLIP state for heads computed from text
    image_size: int | None = None  # None: the model's input size
    test_splits: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TEST_SPLITS))
    # MethodSpec entries (a name, or {name: ..., params: {...}}), params over DEFAULT_METHOD_PARAMS
    methods: list[Any] = field(default_factory=lambda: ["task_arithmetic", "ties"])
    # realigners (names or {name, params}) stacked on every method's row, and the RealignConfig fields
    # ``params`` they share (steps default DEFAULT_REALIGN_STEPS)
    realign: RealignSettings = field(default_factory=RealignSettings)
    max_unlabelled: int | None = 256  # per task, for merge data and realignment; None: the whole test split
    batch_size: int = 128
    num_workers: int = 0
    seed: int = 0
    output_dir: str = "runs/clip"
    allow_large_lambda: bool = (
        False  # a merge coefficient |λ| > 10 is refused unless set (config.check_numbers)
    )
    progress: bool = True
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # device, processes, precision

    def validate(self) -> None:
        """Check values (run :meth:`require_paths` too before running: folders may be set later)."""
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        self.task_list()
        from simo_merge.jobs._checks import check_method_list

        specs = check_method_list("methods", self.methods)
        for i, spec in enumerate(specs):
            if spec.transforms or spec.grid is not None:
                raise ConfigError(
                    f"methods[{i}]: bench clip takes a method's name and params, no transforms/grid"
                )
        try:
            self.realign.check("realign")
        except ValueError as err:
            raise ConfigError(str(err)) from err
        too_few = self.max_unlabelled is not None and self.max_unlabelled < 1
        if too_few or self.batch_size < 1:
            raise ConfigError(
                f"max_unlabelled, batch_size must be >= 1 (got {self.max_unlabelled}, {self.batch_size})"
            )

    def task_list(self) -> list[str]:
        """The tasks ``tasks`` names, in order (ConfigError naming the value when it names none)."""
        given = self.tasks
        if isinstance(given, int) and not isinstance(given, bool):
            if given not in TASK_SETS:
                raise ConfigError(
                    f"tasks: {given} is not a task count; use 8, 14, 20 or a list of task names"
                )
            return list(TASK_SETS[given])
        if not isinstance(given, (list, tuple)) or not all(isinstance(t, str) for t in given):
            raise ConfigError(f"tasks: 8, 14, 20 or a list of task names, got {given!r}")
        if not given:
            raise ConfigError("tasks: empty list")
        unknown = [t for t in given if t not in CLIP20_TASKS]
        if unknown:
            raise ConfigError(f"tasks: unknown {unknown}; known: {list(CLIP20_TASKS)}")
        if len(set(given)) != len(given):
            raise ConfigError(f"tasks: duplicates in {list(given)}")
        return list(given)

    def specs(self) -> list[MethodSpec]:
        """The methods as specs."""
        return method_specs(self.methods, "methods")

    def require_paths(self) -> None:
        """Both folders must be set before a run (the CLI may fill them in after loading the YAML)."""
        if not self.checkpoints:
            raise ConfigError("checkpoints: set the checkpoint folder (--checkpoints DIR)")
        if not self.data:
            raise ConfigError("data: set the data folder (--data DIR)")


# ----------------------------------------------------------------------------------------- checkpoints
def resolve_architecture(cfg: ClipConfig, ckpt: ClipCheckpoints | None = None) -> tuple[str, bool]:
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


def load_checkpoints(cfg: ClipConfig) -> ClipCheckpoints:
    """θ0, every expert of the tasks and the head files present, from any layout."""
    return load_clip_checkpoints(cfg.checkpoints, cfg.model, cfg.task_list(), cfg.layout, cfg.allow_pickle)


def build_taskpool(cfg: ClipConfig, ckpt: ClipCheckpoints) -> TaskPool:
    """The pool, its test sets (one per task) and the heads (from files, else from text) checked against
    them; unlabelled inputs are a seeded subset of each test set (named ``clip<T>-<model>``)."""
    arch, quick = resolve_architecture(cfg, ckpt)
    kwargs = _open_clip_kwargs(quick)

    def make_encoder() -> Any:
        return build_encoder("open_clip", arch, **kwargs)

    probe = make_encoder()
    size = cfg.image_size or int(tuple(probe.model.image_size)[0])
    tasks = cfg.task_list()
    datasets = {t: build_dataset(t, root=cfg.data, split=split_of(cfg, t), image_size=size) for t in tasks}
    text = cfg.text_checkpoint
    if text is None and ckpt.layout == "open_clip":
        text = ckpt.sources["base"]
    classnames = {t: ds.classnames for t, ds in datasets.items()}
    heads = zeroshot_heads(ckpt.head_weights, classnames, text, arch, quick, cfg.allow_pickle)
    for t, ds in datasets.items():
        c, n = heads[t].task.channels, ds.task_specs[t].channels
        if c != n:
            raise ValueError(f"{t}: head has {c} classes but the {split_of(cfg, t)} set has {n}")
        if heads[t].embed_dim != probe.feature_dim:
            raise ValueError(
                f"{t}: head embed_dim {heads[t].embed_dim} != {cfg.model} feature dim {probe.feature_dim}"
            )
    return TaskPool(
        ExpertPool(ckpt.base, ckpt.experts, sources=ckpt.sources),
        [(datasets[t], [t]) for t in tasks],
        heads=heads,
        make_encoder=make_encoder,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        seed=cfg.seed,
        name=f"clip{len(tasks)}-{cfg.model}",
        progress=cfg.progress,
    )


# ----------------------------------------------------------------------------------------- the bench
def _config_hash(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def row_keys(cfg: ClipConfig, ckpt: ClipCheckpoints | None = None) -> dict[str, str]:
    """Row name -> hash of the config that determines that row (for resuming)."""
    arch, quick = resolve_architecture(cfg, ckpt)
    tasks = cfg.task_list()
    common = {
        "model": cfg.model,
        "arch": arch,
        "quick_gelu": quick,
        "checkpoints": str(Path(cfg.checkpoints).expanduser().resolve()),
        "data": str(Path(cfg.data).expanduser().resolve()),
        "layout": cfg.layout,
        "text_checkpoint": cfg.text_checkpoint,
        "image_size": cfg.image_size,
        "test_splits": {t: split_of(cfg, t) for t in tasks},
        "datasets": tasks,  # (the key's name kept: rows stored before ``tasks`` replaced it stay valid)
    }
    unlabelled = {"max_unlabelled": cfg.max_unlabelled, "seed": cfg.seed}
    keys = {PRETRAINED: _config_hash({**common, "row": PRETRAINED})}
    keys[INDIVIDUAL] = _config_hash({**common, "row": INDIVIDUAL})
    settings = cfg.realign
    for m in [spec.name for spec in cfg.specs()]:
        facts = MERGE_METHODS.facts(m)
        method = {"method": m, "params": method_params(cfg, m), **(unlabelled if facts["needs_data"] else {})}
        keys[m] = _config_hash({**common, **method})
        for r in [] if facts.get("per_task") else settings.names():
            params = settings.settings(r)
            steps = params.pop("steps", DEFAULT_REALIGN_STEPS)
            extra = {"realigner": r, "steps": steps, "params": params, **unlabelled}
            keys[f"{m}+{r}"] = _config_hash({**common, **method, "realign": extra})
    return keys


def method_params(cfg: ClipConfig, method: str) -> dict[str, Any]:
    """The papers' defaults for ``method`` updated with its entry's params in ``cfg.methods``."""
    given = next((spec.params for spec in cfg.specs() if spec.name == method), {})
    return {**DEFAULT_METHOD_PARAMS.get(method, {}), **given}


def accuracy(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """Top-1 accuracy (%) per task of a task pool's results."""
    return {t: float(metrics["accuracy"]) for t, metrics in results.items()}


def split_of(cfg: ClipConfig, task: str) -> str:
    """The split evaluated as ``task``'s test set (task_vectors: ``val`` for SUN397)."""
    return cfg.test_splits.get(task, "test")


def realign_config(cfg: ClipConfig, realigner: str) -> RealignConfig:
    """The realignment run of row ``<method>+<realigner>``: on unlabelled inputs, so unsupervised unless
    asked, for ``DEFAULT_REALIGN_STEPS`` steps unless ``realign.params`` (or the realigner's own params)
    set ``steps``."""
    defaults = {"objective": "unsupervised", "steps": DEFAULT_REALIGN_STEPS}
    return cfg.realign.config(realigner, defaults, seed=cfg.seed, progress=cfg.progress)


def stored_rows(rows_dir: Path, keys: dict[str, str]) -> dict[str, dict[str, float]]:
    """The rows already stored in ``rows_dir`` under their current key (row -> accuracy). Under several
    processes rank 0 reads them and every rank gets its answer, so all ranks compute the same rows (each
    row's evaluation is collective: a rank computing a row alone would wait forever)."""
    found: dict[str, dict[str, float]] = {}
    if on_rank_zero():
        for name, key in keys.items():
            try:
                data = json.loads((rows_dir / f"{name}.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and data.get("key") == key:
                found[name] = data["accuracy"]
    return current().broadcast(found, 0)


Config = ClipConfig
DEFAULT_CONFIG = None
FLAGS = {  # command-line flags of ``bench clip`` -> config keys
    "--model": ("model", "open_clip architecture, e.g. ViT-B-32, ViT-B-16, ViT-L-14"),
    "--checkpoints": (
        "checkpoints",
        "folder with <model>/zeroshot.pt and <model>/<Dataset>/finetuned.pt (task_vectors), "
        "<model>/<Dataset>Val/nonlinear_finetuned.pt (tall_masks) or .safetensors (open_clip)",
    ),
    "--data": ("data", "folder with the tasks' datasets in their on-disk layouts"),
}


def output_folder(cfg: ClipConfig) -> tuple[str, str]:
    return cfg.output_dir, "output_dir"


def run(cfg: ClipConfig) -> dict:
    """Compute (or reuse) every row, write ``results.{md,csv,json,png}`` to ``output_dir``, return the
    results dict (``rows``: name -> accuracy/avg/normalized/normalized_avg; ``computed``/``reused`` rows)."""
    cfg.validate()
    cfg.require_paths()
    out = Path(cfg.output_dir)
    rows_dir = out / "rows"
    ckpt = load_checkpoints(cfg)
    keys = row_keys(cfg, ckpt)
    taskpool = build_taskpool(cfg, ckpt)
    probes = taskpool.probe_inputs(cfg.max_unlabelled)  # streamed: items read when a batch draws them
    tasks = taskpool.tasks
    raw: dict[str, dict[str, float]] = {}
    computed: list[str] = []

    def store(name: str, acc: dict[str, float]) -> None:
        write_json(
            rows_dir / f"{name}.json", {"row": name, "key": keys[name], "accuracy": acc}, on_rank_zero()
        )
        raw[name] = acc
        computed.append(name)

    show = cfg.progress and on_rank_zero()
    bar = progress_bar(list(keys), "clip rows", show=show)
    raw.update(stored_rows(rows_dir, keys))
    if PRETRAINED not in raw:
        store(PRETRAINED, accuracy(taskpool.evaluate(ckpt.base, desc=PRETRAINED)))
    bar.update(1)
    if INDIVIDUAL not in raw:
        store(INDIVIDUAL, accuracy(taskpool.individual(INDIVIDUAL)))
    bar.update(1)
    realigners = cfg.realign.names()
    for m in [given.name for given in cfg.specs()]:
        spec = MethodSpec(m, method_params(cfg, m))  # the papers' defaults + the given params
        if MERGE_METHODS.facts(m).get("per_task"):
            if m not in raw:  # one model per task, merged when its task is evaluated
                per_task = taskpool.per_task(lambda t, s=spec: merge(taskpool, s, probes, task=t), m)
                store(m, accuracy(per_task))
            bar.update(1)
            continue
        todo = [n for n in [m] + [f"{m}+{r}" for r in realigners] if n not in raw]
        if todo:
            merged = merge(taskpool, spec, probes)
            if m in todo:
                store(m, accuracy(taskpool.evaluate(merged, desc=m)))
            for r in realigners:
                if f"{m}+{r}" in todo:
                    name = f"{m}+{r}"
                    model, _ = realigned(taskpool, merged, realign_config(cfg, r), probes)
                    store(name, accuracy(taskpool.evaluate_model(model, desc=name)))
            del merged
        bar.update(1 + len(realigners))
    bar.close()

    rows = accuracy_rows(raw, tasks, list(keys))
    result = write_results(cfg, ckpt, rows, computed)
    return result


def write_results(cfg: ClipConfig, ckpt: ClipCheckpoints, rows: dict[str, dict], computed: list[str]) -> dict:
    """Write ``results.{md,csv,json,png}`` of the summarised ``rows``, print the tables, return the
    results dict."""
    out = Path(cfg.output_dir)
    tasks = cfg.task_list()
    arch, quick = resolve_architecture(cfg, ckpt)
    md, table_csv = accuracy_tables(rows, tasks, [canonical_dataset(t) for t in tasks])
    header = (
        f"# CLIP {len(tasks)}-task merging benchmark ({cfg.model}; open_clip {arch}"
        f"{', QuickGELU' if quick else ''})\n\n"
        f"checkpoints: `{cfg.checkpoints}` ({ckpt.layout} layout); data: `{cfg.data}`; "
        f"test splits: {', '.join(f'{canonical_dataset(t)}={split_of(cfg, t)}' for t in tasks)}\n\n"
    )
    result = {
        "model": cfg.model,
        "arch": arch,
        "quick_gelu": quick,
        "layout": ckpt.layout,
        "datasets": [canonical_dataset(t) for t in tasks],
        "rows": rows,
        "units": {"accuracy": "%", "avg": "%", "normalized": "%", "normalized_avg": "%"},
        "computed": computed,
        "reused": [n for n in rows if n not in computed],
        "config": asdict(cfg),
    }
    write_text(out / "results.md", header + md, on_rank_zero())
    write_text(out / "results.csv", table_csv, on_rank_zero())
    write_json(out / "results.json", json_safe(result), on_rank_zero())
    average_chart(
        {n: r["avg"] for n, r in rows.items()},
        out / "results.png",
        "average accuracy (%)",
        f"CLIP {len(tasks)}-task benchmark",
    )
    print(md)
    return result


__all__ = [
    "DEFAULT_METHOD_PARAMS",
    "TASK_SETS",
    "ClipCheckpoints",
    "ClipConfig",
    "build_taskpool",
    "detect_layout",
    "load_checkpoints",
    "row_keys",
    "run",
]
