"""``simo-merge realign``: pool + merged encoder -> trained adapters, metrics (+ diagnostics when asked).

Pool -> merged state (a checkpoint, or ``method`` merged on the training inputs, at the method's own
default scale, as ``merge`` does) -> realigner -> the task pool of ``eval_split`` evaluates the experts,
the merged and the realigned model -> report. Each phase is announced with its time; the diagnostics
(representation bias + bias.png, t-SNE) cost more than a short training and run only when asked.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from simo_merge.config import ConfigError, EncoderConfig, PoolConfig
from simo_merge.data import DataConfig, build_task_splits, check_data_config, data_label
from simo_merge.features.cache import FeatureCache
from simo_merge.features.inputs import split_inputs
from simo_merge.io.atomic import write_json, write_text
from simo_merge.io.checkpoint import load_state, read_sidecar, state_hash
from simo_merge.merging.api import resolved_merge_parameters
from simo_merge.merging.spec import MethodSpec
from simo_merge.pool.spec import check_checkpoint_encoder, describe, load_job_pool, pool_kind
from simo_merge.protocols import get_protocol
from simo_merge.realign.config import RECIPE_FIELDS, RealignSettings
from simo_merge.realign.diagnostics import bias_plot, mean_bias, representation_bias, tsne_groups, tsne_plot
from simo_merge.realign.inputs import InputsChoice, choose_inputs
from simo_merge.realign.inputs import describe as describe_inputs
from simo_merge.realign.io import save_realigned
from simo_merge.realign.train import RealignConfig
from simo_merge.runtime import RuntimeConfig, on_rank_zero
from simo_merge.taskpool import INDIVIDUAL, ResultsTable, TaskPool, merge, realigned
from simo_merge.training.eval_cache import EvaluationCache


@dataclass
class RealignJobConfig:
    """A realignment run of one realigner on a merged encoder. ``realign`` is the realignment section of
    every job (:class:`RealignSettings`, as in the demo and ``bench clip``): ``realigners`` (here the
    one trained: a name or ``{name: ..., params: {...}}``) and the RealignConfig fields ``params``
    (``realign.params.rank=16 realign.params.steps=500``); the objective is unsupervised unless set."""

    pool: PoolConfig = field(default_factory=PoolConfig)  # pool.dir, or pool.base + pool.experts/heads
    encoder: EncoderConfig | None = None  # default: the pool's; given, it must match the pool's
    checkpoint: str | None = None  # merged encoder; None merges the pool with ``method`` first
    # merges the pool when no checkpoint is given: the method's own defaults, as ``merge`` uses them
    method: MethodSpec = field(default_factory=lambda: MethodSpec("task_arithmetic"))
    realign: RealignSettings = field(default_factory=lambda: RealignSettings(["surgery"]))
    data: DataConfig = field(default_factory=lambda: DataConfig(tasks=None))  # tasks: default the pool's
    split: str = "val"  # unlabelled training inputs: held out from eval_split (see realign/inputs.py)
    test_time: bool = False  # the papers' setting: train on eval_split's unlabelled inputs instead
    augment: bool = False  # training augmentation on split=train inputs; never unless asked
    label_split: str = "val"  # labelled inputs for objective=supervised
    eval_split: str = "test"
    output_dir: str = "runs/realign"
    disk_cache: bool = True  # keep cached features in <output_dir>/cache as safetensors
    cache_memory_mb: float = 2048.0  # cached features past this stay on disk, read back by rows
    # reuse evaluations (experts, merged model, bias before) of unchanged checkpoints on unchanged data
    reuse_evaluations: bool = True
    eval_cache_dir: str | None = None  # None: <output_dir>/../eval_cache, shared by sibling runs
    bias: bool = False  # representation bias of merged and realigned vs the experts (+ bias.png)
    tsne: bool = False  # t-SNE of last-block features before/after (tsne.png); minutes on a real pool
    seed: int = 0
    allow_large_lambda: bool = (
        False  # a merge coefficient |λ| > 10 is refused unless set (config.check_numbers)
    )
    progress: bool = True
    threads: int = 2
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # device, processes, precision

    def realign_config(self) -> RealignConfig:
        """The realigner's run, its recipe's values filled in (recipe=simo: supervised on label_split,
        AdamW, OneCycle, clipping, one epoch)."""
        (name,) = self.realign.names()
        defaults = {"objective": "unsupervised"}
        return self.realign.config(name, defaults, seed=self.seed, progress=self.progress)

    def validate(self) -> None:
        """Names and values fail here, before any data is read or anything trained."""
        try:
            self.realign.check("realign")
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if len(self.realign.names()) != 1:
            raise ConfigError(
                f"realign.realigners={self.realign.names()}: the realign job trains one realigner; name one"
            )
        self.realign_config().validate()
        if not self.checkpoint:
            try:
                self.method.check("method")
            except ValueError as err:
                raise ConfigError(str(err)) from err
        pool_kind(self.pool)
        check_data_config(self.data)
        self.training_inputs()

    def training_inputs(self) -> InputsChoice:
        """The checked choice of realignment inputs (refuses the evaluated split unless test_time)."""
        supervised = self.realign_config().objective == "supervised"
        return choose_inputs(
            self.data,
            self.label_split if supervised else self.split,
            self.eval_split,
            self.test_time,
            labelled=supervised,
            augment=self.augment,
        )


Config = RealignJobConfig
DEFAULT_CONFIG = None


def output_folder(cfg: RealignJobConfig) -> tuple[str, str]:
    return cfg.output_dir, "output_dir"


@contextlib.contextmanager
def phase(what: str, timings: dict[str, float]) -> Iterator[None]:
    """Announce ``what``, run it, then print (and keep in ``timings``) how long it took."""
    print(f"realign: {what} ...", flush=True)
    t0 = time.perf_counter()
    yield
    timings[what] = time.perf_counter() - t0
    print(f"realign: {what} done in {timings[what]:.1f}s", flush=True)


def run(cfg: RealignJobConfig) -> dict[str, Any]:
    cfg.validate()
    run_cfg = cfg.realign_config()
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(cfg.output_dir)
    pool = load_job_pool(cfg)
    tasks = pool.tasks
    choice = cfg.training_inputs()  # held out from eval_split unless test_time=true (realign/inputs.py)
    train_data = replace(cfg.data, augment=choice.augmented)
    inputs = split_inputs(
        build_task_splits(train_data, tasks, choice.split, cfg.seed),
        f"{'+'.join(sorted({data_label(cfg.data, t) for t in tasks}))}/{choice.split}"
        + ("-augmented" if choice.augmented else ""),
        with_labels=choice.labelled,
    )
    trained_on = choice.record(cfg.data, {t: inputs.num_inputs(t) for t in tasks})
    # the evaluation data, and the metrics of unchanged checkpoints on it reused from the evaluation cache
    eval_splits = build_task_splits(cfg.data, tasks, cfg.eval_split, cfg.seed)
    evals = EvaluationCache(
        (cfg.eval_cache_dir or out.resolve().parent / "eval_cache") if cfg.reuse_evaluations else None
    )
    on = {"data": asdict(cfg.data), "split": cfg.eval_split, "seed": cfg.seed, "encoder": pool.encoder_config}
    protocol = get_protocol(cfg.data.protocol)
    taskpool = TaskPool(
        pool,
        eval_splits,
        seed=cfg.seed,
        progress=cfg.progress,
        cache=evals,
        cache_parts=on,
        protocol=protocol,
    )
    if cfg.checkpoint:
        check_checkpoint_encoder(pool, cfg.checkpoint)
        merged_state, merged_name = (
            load_state(cfg.checkpoint),
            read_sidecar(cfg.checkpoint).get("method", "merged"),
        )
        merged_what = cfg.checkpoint
        print(f"realign: merged encoder {merged_name} from {cfg.checkpoint}", flush=True)
    else:  # data-dependent methods read the same (unlabelled) training inputs
        resolved = resolved_merge_parameters(cfg.method.name, cfg.method.params, cfg.method.transforms)
        merged_what = f"{cfg.method.name} {resolved['hyperparameters']}"
        with phase(f"merging the pool with {merged_what} (no checkpoint= given)", timings):
            merged_state = merge(taskpool, cfg.method, inputs)
        merged_name = cfg.method.name
    merged_hash = state_hash(merged_state)
    cache = FeatureCache(out / "cache" if cfg.disk_cache else None, cfg.cache_memory_mb)
    t0 = time.perf_counter()
    with phase(f"training {run_cfg.realigner} (steps={run_cfg.steps})", timings):
        model, curve = realigned(taskpool, merged_state, run_cfg, inputs, cache)
    train_s = time.perf_counter() - t0
    save_realigned(
        out / "adapters.safetensors",
        model,
        run_cfg.realigner,
        {
            "objective": run_cfg.objective,
            "recipe": run_cfg.recipe,
            "recipe_settings": {name: getattr(run_cfg, name) for name in RECIPE_FIELDS},  # as resolved
            "merged": merged_what,
            "merged_hash": merged_hash,  # evaluate refuses these adapters on another model
            "pool": describe(cfg.pool),
            "steps": run_cfg.steps,
            "loss_first_last": [curve[0], curve[-1]] if curve else [],
            "trained_on": trained_on,
        },
    )
    # diagnostics on the evaluation inputs, when asked
    eval_images = taskpool.probe_inputs()  # streamed: read in batches by representation_bias
    before = after = None
    if cfg.bias or cfg.tsne:
        experts = pool.expert_encoders()
        merged_encoder = taskpool.encoder(merged_state)
    if cfg.bias:
        with phase("representation bias (bias.png)", timings):
            state_of = {t: state_hash(pool.experts[t]) for t in tasks} | {"merged": merged_hash}
            before = evals.get(
                {**on, "what": "representation_bias", "merged": state_of["merged"], "experts": state_of},
                lambda: representation_bias(merged_encoder, experts, eval_images),
            )
            after = representation_bias(model, experts, eval_images)
            title = f"representation bias, {merged_name} + {run_cfg.realigner}"
            bias_plot(before, after, out / "bias.png", title)
    if cfg.tsne:
        with phase("t-SNE (tsne.png)", timings):
            tsne_plot(
                tsne_groups(merged_encoder, model, experts, eval_images),
                out / "tsne.png",
                f"t-SNE of last-block features: {merged_name} before/after {run_cfg.realigner}",
                cfg.seed,
            )
    name = f"{merged_name}+{run_cfg.realigner}"
    with phase(f"evaluating experts, {merged_name} and {name} on {cfg.eval_split}", timings):
        rows = {INDIVIDUAL: taskpool.individual("expert")}
        rows[merged_name] = taskpool.evaluate(merged_state, desc=merged_name)
        rows[name] = taskpool.evaluate_model(model, desc=name)
    extra = {name: {"trained params": f"{model.num_trainable():,}"}}
    if cfg.bias:
        extra[name]["bias"] = f"{mean_bias(after):.4f}"
        extra[merged_name] = {"bias": f"{mean_bias(before):.4f}"}
    results = ResultsTable(rows, extra, delta_metrics=taskpool.protocol.delta_metrics)
    table = results.markdown()
    result = {
        **results.results(),
        "trained_on": trained_on,
        "eval_split": cfg.eval_split,
        "bias_before": before,
        "bias_after": after,
        "trainable_parameters": model.num_trainable(),
        "loss_curve": curve,
        "train_seconds": train_s,
        "phase_seconds": timings,
        "evaluations_reused": evals.hits,
        "evaluations_computed": evals.misses,
        "total_seconds": time.perf_counter() - start,
    }
    write_json(out / "metrics.json", result, on_rank_zero())
    evaluated_on = ", ".join(f"{t}: {data_label(cfg.data, t)}" for t in tasks)
    bias_note = (
        "\nbias = mean |merged − expert| over tasks and layers on the evaluation inputs (Surgery, Eq. 1); "
        "see bias.png.\n"
        if cfg.bias
        else ""
    )
    write_text(
        out / "report.md",
        f"# realign: {name}\n\n{describe_inputs(trained_on)} "
        f"Evaluated on {cfg.eval_split} ({evaluated_on}).\n\n{table}{bias_note}",
        on_rank_zero(),
    )
    print(table)
    bias_line = f"; mean bias {mean_bias(before):.4f} -> {mean_bias(after):.4f}" if cfg.bias else ""
    print(
        f"realigned {merged_what} with {run_cfg.realigner}, recipe {run_cfg.recipe} "
        f"({model.num_trainable():,} trained parameters, {len(curve)} iterations, {train_s:.1f}s)"
        f"{bias_line}; "
        f"{evals.hits} evaluations of unchanged checkpoints reused; wrote {out}"
    )
    return result
