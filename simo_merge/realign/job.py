"""``simo-merge realign``: pool folder + merged encoder -> trained adapters, bias diagnostics, metrics.

Also the building blocks the demo uses: turning a dataset split into :class:`RealignInputs`, realigning
one merged state, and summarising the representation bias before/after.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from simo_merge.atomic import write_json, write_text
from simo_merge.checkpoint import load_state, read_sidecar, state_hash
from simo_merge.config import MethodConfig
from simo_merge.data import DataConfig, build_split
from simo_merge.encoders import Encoder, build_encoder
from simo_merge.experts import ExpertPool
from simo_merge.merging import merge
from simo_merge.plotting import pyplot, save_png
from simo_merge.pool_io import load_pool_dir, pool_heads
from simo_merge.realign.cache import FeatureCache
from simo_merge.realign.diagnostics import representation_bias, tsne_plot
from simo_merge.realign.inputs import InputsChoice, choose_inputs, describe, inputs_dataset
from simo_merge.realign.io import save_realigned
from simo_merge.realign.model import RealignedModel, run_encoder
from simo_merge.realign.train import RealignConfig, RealignInputs, realign
from simo_merge.report import markdown_table, result_units, summarize
from simo_merge.training.eval_cache import EvaluationCache, module_hash
from simo_merge.training.evaluate import evaluate
from simo_merge.training.model import MultiTaskModel


@dataclass
class RealignJobConfig(RealignConfig):
    """A realignment run; the realigner's own settings (``realigner=deep rank=16 ...``) are top-level keys."""

    pool_dir: str = "runs/demo/experts"
    checkpoint: str | None = None  # merged encoder; None merges the pool with ``method`` first
    method: MethodConfig = field(default_factory=lambda: MethodConfig("task_arithmetic", {"lam": 0.4}))
    data: DataConfig = field(default_factory=DataConfig)
    split: str = "val"  # unlabelled training inputs: held out from eval_split (see realign/inputs.py)
    test_time: bool = False  # the papers' setting: train on eval_split's unlabelled inputs instead
    augment: bool = False  # training augmentation on split=train inputs; never unless asked
    label_split: str = "val"  # labelled inputs for objective=supervised
    eval_split: str = "test"
    output_dir: str = "runs/realign"
    disk_cache: bool = True  # keep cached features in <output_dir>/cache as safetensors
    # reuse evaluations (experts, merged model, bias before) of unchanged checkpoints on unchanged data
    reuse_evaluations: bool = True
    eval_cache_dir: str | None = None  # None: <output_dir>/../eval_cache, shared by sibling runs
    tsne: bool = True
    threads: int = 2

    def validate(self) -> None:
        self.training_inputs()

    def training_inputs(self) -> InputsChoice:
        """The checked choice of realignment inputs (refuses the evaluated split unless test_time)."""
        supervised = self.objective == "supervised"
        return choose_inputs(
            self.data,
            self.label_split if supervised else self.split,
            self.eval_split,
            self.test_time,
            labelled=supervised,
            augment=self.augment,
        )


def dataset_inputs(dataset: Any, tasks: list[str], name: str, with_labels: bool = False) -> RealignInputs:
    """Stack a SIMO dataset split into one image tensor shared by every task (+ labels if asked)."""
    samples = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([s["image"] for s in samples])
    labels: dict[str, dict[str, Tensor]] = {}
    if with_labels:
        for t in tasks:
            labels[t] = {t: torch.stack([s[t] for s in samples])}
            if f"{t}_mask" in samples[0]:
                labels[t][f"{t}_mask"] = torch.stack([s[f"{t}_mask"] for s in samples])
    return RealignInputs({t: images for t in tasks}, labels, name)


def encoder_factory(pool: ExpertPool):
    cfg = pool.encoder_config
    if not cfg:
        raise KeyError("the pool's theta0 sidecar has no 'encoder' config; cannot rebuild the encoder")
    return lambda: build_encoder(cfg["library"], cfg["arch"], **cfg.get("kwargs", {}))


def mean_bias(bias: dict[str, dict[str, float]]) -> float:
    values = [v for per_task in bias.values() for v in per_task.values()]
    return sum(values) / len(values)


def expert_encoders(pool: ExpertPool, make: Any) -> dict[str, Encoder]:
    experts = {}
    for task in pool.tasks:
        enc = make()
        enc.load_model_state(pool.experts[task])
        experts[task] = enc.eval()
    return experts


def bias_plot(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], path: Path, title: str
):
    """Per task, representation bias per layer before (dashed) and after (solid) realignment."""
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    for i, task in enumerate(before):
        sites = list(before[task])
        color = f"C{i}"
        ax.plot(sites, [before[task][s] for s in sites], ls="--", color=color, label=f"{task} merged")
        ax.plot(sites, [after[task][s] for s in sites], ls="-", color=color, label=f"{task} realigned")
    ax.set_ylabel("mean |merged − expert|")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path, dpi=100)


@torch.no_grad()
def tsne_groups(
    merged: Encoder, realigned: RealignedModel, experts: dict[str, Encoder], images: Tensor, limit: int = 200
) -> dict[str, dict[str, Tensor]]:
    """Token-averaged last-block features of merged (before/after) vs each expert, for t-SNE panels."""
    x = images[:limit]
    last = merged.depth - 1
    before = run_encoder(merged, x, [last])[last].mean(1)
    groups = {}
    for task, expert in experts.items():
        ref = run_encoder(expert, x, [last])[last].mean(1)
        owner = realigned.plan.owner(task)
        if realigned.plan.feed_forward and owner is not None:
            with realigned.attached(owner):
                after = run_encoder(realigned.encoder, x, [last])[last]
        else:
            after = realigned.apply_post_hoc(owner, run_encoder(realigned.encoder, x, [last]))[last]
        groups[f"{task}: before"] = {"merged": before, "expert": ref}
        groups[f"{task}: after"] = {"realigned": after.mean(1), "expert": ref}
    return groups


def run_realign_job(cfg: RealignJobConfig) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    out = Path(cfg.output_dir)
    pool = load_pool_dir(cfg.pool_dir, cfg.data.tasks)
    make = encoder_factory(pool)
    if cfg.checkpoint:
        merged_state, merged_name = (
            load_state(cfg.checkpoint),
            read_sidecar(cfg.checkpoint).get("method", "merged"),
        )
    else:
        merged_state = merge(pool, cfg.method.name, transforms=cfg.method.transforms, **cfg.method.params)
        merged_name = cfg.method.name
    choice = cfg.training_inputs()
    inputs = dataset_inputs(
        inputs_dataset(cfg.data, choice, cfg.seed),
        pool.tasks,
        f"{cfg.data.name}/{choice.split}" + ("-augmented" if choice.augmented else ""),
        with_labels=choice.labelled,
    )
    trained_on = choice.record(len(next(iter(inputs.images.values()))), cfg.data.name)
    heads = pool_heads(pool)
    head_ids = {t: [module_hash(h), h.config()] for t, h in heads.items()}  # before any training
    cache = FeatureCache(out / "cache" if cfg.disk_cache else None)
    t0 = time.perf_counter()
    run_cfg = RealignConfig(**{k: getattr(cfg, k) for k in RealignConfig.__dataclass_fields__})
    model, curve = realign(make, merged_state, pool.experts, heads, inputs, run_cfg, cache)
    train_s = time.perf_counter() - t0
    save_realigned(
        out / "adapters.safetensors",
        model,
        cfg.realigner,
        {
            "objective": cfg.objective,
            "merged": cfg.checkpoint or f"{merged_name} {cfg.method.params}",
            "pool_dir": cfg.pool_dir,
            "steps": cfg.steps,
            "loss_first_last": [curve[0], curve[-1]] if curve else [],
            "trained_on": trained_on,
        },
    )
    # diagnostics on the evaluation inputs
    eval_set = build_split(cfg.data, cfg.eval_split, cfg.seed)
    eval_images = dataset_inputs(eval_set, pool.tasks, "eval").images
    experts = expert_encoders(pool, make)
    merged_encoder = make()
    merged_encoder.load_model_state(merged_state)
    evals = EvaluationCache(
        (cfg.eval_cache_dir or out.resolve().parent / "eval_cache") if cfg.reuse_evaluations else None
    )
    on = {"data": asdict(cfg.data), "split": cfg.eval_split, "seed": cfg.seed, "encoder": pool.encoder_config}
    state_of = {t: state_hash(pool.experts[t]) for t in pool.tasks} | {"merged": state_hash(merged_state)}
    before = evals.get(
        {**on, "what": "representation_bias", "merged": state_of["merged"], "experts": state_of},
        lambda: representation_bias(merged_encoder, experts, eval_images),
    )
    after = representation_bias(model, experts, eval_images)
    bias_plot(before, after, out / "bias.png", f"representation bias, {merged_name} + {cfg.realigner}")
    if cfg.tsne:
        tsne_plot(
            tsne_groups(merged_encoder, model, experts, next(iter(eval_images.values()))),
            out / "tsne.png",
            f"t-SNE of last-block features: {merged_name} before/after {cfg.realigner}",
            cfg.seed,
        )
    loader = DataLoader(eval_set, 64)
    specs = {t: eval_set.task_specs[t] for t in pool.tasks}
    rows = {"Individual": {}}
    for task in pool.tasks:
        rows["Individual"][task] = evals.get(
            {**on, "what": "evaluate", "encoder_state": state_of[task], "heads": {task: head_ids[task]}},
            lambda task=task: evaluate(
                MultiTaskModel(experts[task], {task: heads[task]}),
                loader,
                {task: specs[task]},
                f"expert {task}",
                cfg.progress,
            ),
        )[task]
    rows[merged_name] = evals.get(
        {**on, "what": "evaluate", "encoder_state": state_of["merged"], "heads": head_ids},
        lambda: evaluate(MultiTaskModel(merged_encoder, heads), loader, specs, merged_name, cfg.progress),
    )
    name = f"{merged_name}+{cfg.realigner}"
    rows[name] = evaluate(model, loader, specs, name, cfg.progress)
    summary = summarize(rows, "Individual")
    extra = {
        name: {"trained params": f"{model.num_trainable():,}", "bias": f"{mean_bias(after):.4f}"},
        merged_name: {"bias": f"{mean_bias(before):.4f}"},
    }
    table = markdown_table(rows, summary, extra)
    result = {
        "rows": rows,
        "summary": summary,
        "units": result_units(rows),
        "trained_on": trained_on,
        "eval_split": cfg.eval_split,
        "bias_before": before,
        "bias_after": after,
        "trainable_parameters": model.num_trainable(),
        "loss_curve": curve,
        "train_seconds": train_s,
        "evaluations_reused": evals.hits,
        "evaluations_computed": evals.misses,
        "total_seconds": time.perf_counter() - start,
    }
    write_json(out / "metrics.json", result)
    write_text(
        out / "report.md",
        f"# realign: {name}\n\n{describe(trained_on)} Evaluated on {cfg.data.name}/{cfg.eval_split}.\n\n"
        f"{table}\nbias = mean |merged − expert| over tasks and "
        "layers on the evaluation inputs (Surgery, Eq. 1); see bias.png, tsne.png.\n",
    )
    print(table)
    print(
        f"realigned with {cfg.realigner} ({model.num_trainable():,} trained parameters, {cfg.steps} steps, "
        f"{train_s:.1f}s); mean bias {mean_bias(before):.4f} -> {mean_bias(after):.4f}; "
        f"{evals.hits} evaluations of unchanged checkpoints reused; wrote {out}"
    )
    return result
