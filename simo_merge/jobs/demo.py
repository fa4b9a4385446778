"""The built-in dense SIMO demo: pretrain θ0 (or read it from ``encoder.checkpoint`` /
``encoder.pretrained``), fine-tune one expert per task, train the MTL baseline,
merge the experts (WA, TA, TIES with λ chosen on val) and evaluate every model on test.

Everything lands in one run folder; trained θ0, experts and MTL model are cached there (keyed by the
config sections that produced them, :mod:`simo_merge.training.recipes`), so a rerun with the same config
only re-evaluates. Each step below returns its table rows (:class:`Rows`); :func:`run` adds them up in
order and writes the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from simo_merge.config import to_yaml
from simo_merge.io.atomic import write_json, write_text
from simo_merge.jobs._demo_config import DemoConfig
from simo_merge.merging import MERGE_METHODS, merge
from simo_merge.merging.spec import MethodSpec
from simo_merge.model import MultiTaskModel
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.realign.config import RealignSettings
from simo_merge.realign.inputs import describe, inputs_dataset
from simo_merge.report import bar_chart, markdown_table, result_units, summarize
from simo_merge.runtime import on_rank_zero
from simo_merge.seeding import stage_seed
from simo_merge.training.evaluate import evaluate
from simo_merge.training.recipes import CachedTraining, loss_span

Results = dict[str, dict[str, float]]  # task -> metric -> value
State = dict[str, torch.Tensor]


@dataclass
class Rows:
    """Rows of the results table made by one step, and what later steps and the report need of them."""

    rows: dict[str, Results] = field(default_factory=dict)  # row -> test metrics
    info: dict[str, dict[str, str]] = field(default_factory=dict)  # row -> extra column -> text
    states: dict[str, State] = field(default_factory=dict)  # merged row -> encoder (realigners start here)
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)  # merged row -> params chosen on val
    bias: dict[str, Any] = field(default_factory=dict)  # row -> representation bias vs the experts
    trained_on: dict[str, dict[str, Any]] = field(default_factory=dict)  # objective -> realigners' inputs

    def add(self, other: Rows) -> Rows:
        """Append ``other``'s rows after these; extra columns of a row already here are added to it."""
        self.rows.update(other.rows)
        for name, columns in other.info.items():
            self.info.setdefault(name, {}).update(columns)
        self.states.update(other.states)
        self.chosen.update(other.chosen)
        self.bias.update(other.bias)
        self.trained_on.update(other.trained_on)
        return self


def shown_params(params: dict[str, Any]) -> str:
    """``"lam=0.3, k=20"``: the table's params column (the val score has its own entry)."""
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != "val_norm_perf")


class Demo(CachedTraining):
    """The demo's models (θ0, experts, MTL: trained once, cached in the run folder) and their evaluation on
    the run's splits; each step can be called on its own (e.g. from a notebook)."""

    def __init__(self, cfg: DemoConfig) -> None:
        cfg.validate()
        torch.set_num_threads(cfg.threads)
        super().__init__(cfg, Path(cfg.output_dir))

    def merged_model(self, pool: ExpertPool, state: State) -> MultiTaskModel:
        """The encoder ``state`` under the pool's (frozen) expert heads."""
        encoder = self.new_encoder()
        encoder.load_model_state(state)
        return MultiTaskModel(encoder, pool.frozen_heads()).eval()

    def individual(self, pool: ExpertPool, loader: DataLoader, desc: str) -> Results:
        """Each expert evaluated on its own task (its own encoder + head)."""
        results = {}
        for task in pool.tasks:
            model = self.merged_model(pool.subset([task]), pool.experts[task])
            results[task] = evaluate(
                model,
                loader,
                {task: self.data.specs[task]},
                desc=f"{desc} {task}",
                progress=self.cfg.progress,
            )[task]
        return results

    def test_row(self, pool: ExpertPool, state: State, name: str) -> Results:
        """Test metrics of the merged ``state`` under the experts' heads, as the row ``name``."""
        return evaluate(
            self.merged_model(pool, state),
            self.data.test,
            self.data.specs,
            desc=f"test {name}",
            progress=self.cfg.progress,
        )


# ---------------------------------------------------------------------------------------- rows
def baseline_rows(demo: Demo, pool: ExpertPool, mtl: MultiTaskModel) -> Rows:
    """Individual experts (the 100 % of NormPerf), the MTL model and θ0 under the experts' heads."""
    rows = {"Individual": demo.individual(pool, demo.data.test, "test")}
    rows["MTL"] = evaluate(mtl, demo.data.test, demo.data.specs, desc="test MTL", progress=demo.cfg.progress)
    rows["Pretrained θ0 + expert heads"] = evaluate(
        demo.merged_model(pool, pool.base),
        demo.data.test,
        demo.data.specs,
        desc="test θ0",
        progress=demo.cfg.progress,
    )
    return Rows(rows=rows)


def merge_with_selection(
    demo: Demo, pool: ExpertPool, spec: MethodSpec, val_baseline: Results
) -> tuple[State, dict[str, Any]]:
    """Merge with ``spec``; where its method has a sweepable scale (its registered ``scale`` fact), pick
    the value of ``spec.grid`` (default: the registered grid, else ``merge.lam_grid``) with the best val
    NormPerf."""
    from simo_merge.metrics.summary import normalized_performance

    method, params, transforms = spec.name, dict(spec.params), spec.transforms
    facts = MERGE_METHODS.facts(method)
    scale = facts["scale"]
    if scale is None or scale in params:
        return merge(pool, method, transforms=transforms, **params), params
    best = None
    for value in spec.grid or facts.get("grid") or demo.cfg.merge.lam_grid:
        state = merge(pool, method, transforms=transforms, **{scale: value}, **params)
        val = evaluate(
            demo.merged_model(pool, state),
            demo.data.val,
            demo.data.specs,
            desc=f"{method} {scale}={value}",
            progress=demo.cfg.progress,
        )
        score = normalized_performance(val, val_baseline)["mean"]
        if best is None or score > best[0]:
            best = (score, value, state)
    return best[2], {**params, scale: best[1], "val_norm_perf": round(best[0], 2)}


def selected_row(demo: Demo, pool: ExpertPool, spec: MethodSpec, val_baseline: Results) -> Rows:
    """One merged row, its scale chosen on val (:func:`merge_with_selection`), evaluated on test."""
    t0 = time.perf_counter()
    state, chosen = merge_with_selection(demo, pool, spec, val_baseline)
    name = MERGE_METHODS.facts(spec.name)["label"]
    row = Rows(
        rows={name: demo.test_row(pool, state, name)},
        info={name: {"params": shown_params(chosen)}},
        states={name: state},
        chosen={name: chosen},
    )
    demo.timings[f"merge {name}"] = time.perf_counter() - t0
    return row


def per_task_row(demo: Demo, pool: ExpertPool, spec: MethodSpec) -> Rows:
    """A method that rebuilds one model per task (TALL masks): each task evaluated on its own model."""
    name, params = MERGE_METHODS.facts(spec.name)["label"], spec.params
    t0 = time.perf_counter()
    results = {}
    for task in pool.tasks:
        state = merge(pool, spec.name, transforms=spec.transforms, task=task, **params)
        results[task] = evaluate(
            demo.merged_model(pool.subset([task]), state),
            demo.data.test,
            {task: demo.data.specs[task]},
            desc=f"test {name} {task}",
            progress=demo.cfg.progress,
        )[task]
    shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "one model per task"
    demo.timings[f"merge {name}"] = time.perf_counter() - t0
    return Rows(rows={name: results}, info={name: {"params": shown}})


def merge_data(demo: Demo, pool: ExpertPool) -> Any:
    """The data-dependent merges' :class:`MergeData`: unlabelled ``merge.split`` inputs in batches of
    ``merge.batch_size``, their statistics cached in the run folder."""
    from simo_merge.features.cache import FeatureCache
    from simo_merge.features.inputs import dataset_inputs
    from simo_merge.merging.data import MergeData

    cfg, split = demo.cfg, demo.cfg.merge.split
    inputs = dataset_inputs(demo.data.sets[split], list(demo.data.specs), f"{cfg.data.name}-{split}")
    return MergeData(
        demo.new_encoder,
        pool.frozen_heads(),
        pool.experts,
        inputs.images,
        name=inputs.name,
        batch_size=cfg.merge.batch_size,
        seed=cfg.seed,
        cache=FeatureCache(demo.out / "stats"),
        progress=cfg.progress and on_rank_zero(),
    )


def data_dependent_row(demo: Demo, pool: ExpertPool, spec: MethodSpec, data: Any) -> Rows:
    """A merge on unlabelled inputs (AdaMerging task-/layer-wise, Fisher, RegMean) from ``data``
    (:func:`merge_data`); a method that records its coefficients gets a heatmap ``lambdas_<method>.png``."""
    from simo_merge.merging.data.plots import lambda_heatmap

    t0 = time.perf_counter()
    method, params = spec.name, dict(spec.params)
    record: dict[str, Any] = {}
    facts = MERGE_METHODS.facts(method)
    if facts.get("records"):
        params["record"] = record
    if facts["progress"]:
        params["progress"] = demo.cfg.progress and on_rank_zero()
    state = merge(pool, method, merge_data=data, transforms=spec.transforms, **params)
    name = facts["label"]
    shown = {k: v for k, v in params.items() if k not in ("record", "progress")}
    row = Rows(
        rows={name: demo.test_row(pool, state, name)},
        info={name: {"params": ", ".join(f"{k}={v}" for k, v in shown.items())}},
        states={name: state},
    )
    if record:
        lambda_heatmap(record, demo.out / f"lambdas_{method}.png")
    demo.timings[f"merge {name}"] = time.perf_counter() - t0
    demo.say(f"{name}: merged in {demo.timings[f'merge {name}']:.0f}s")
    return row


def merged_rows(demo: Demo, pool: ExpertPool, val_individual: Results) -> Rows:
    """One row per ``merge.methods`` entry, in order, as its registered facts say: ``needs_data`` merges
    on unlabelled inputs (:func:`data_dependent_row`), ``per_task`` one model per task
    (:func:`per_task_row`), any other its ``scale`` chosen on val against ``val_individual``
    (:func:`selected_row`). The rows with one merged encoder (``states``) are those realigners start from."""
    table, data = Rows(), None
    for spec in demo.cfg.merge.specs(demo.cfg.full):
        facts = MERGE_METHODS.facts(spec.name)
        if facts["needs_data"]:
            data = merge_data(demo, pool) if data is None else data
            table.add(data_dependent_row(demo, pool, spec, data))
        elif facts.get("per_task"):
            table.add(per_task_row(demo, pool, spec))
        else:
            table.add(selected_row(demo, pool, spec, val_individual))
    return table


class InputsByObjective:
    """The checked training inputs of each realignment objective, built on first use, and the record of
    where they came from (``trained_on``: objective -> split, setting, size)."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.built: dict[str, Any] = {}
        self.trained_on: dict[str, dict[str, Any]] = {}

    def __call__(self, objective: str) -> Any:
        from simo_merge.features.inputs import dataset_inputs

        if objective not in self.built:
            demo, data = self.demo, self.demo.cfg.data
            choice = demo.cfg.realign.inputs(data, objective == "supervised")
            dataset = (
                demo.data.sets[choice.split]
                if choice.split != "train"
                else inputs_dataset(data, choice, demo.cfg.seed, demo.out / "cache")
            )
            name = f"{data.name}-{choice.split}" + ("-augmented" if choice.augmented else "")
            specs = list(demo.data.specs)
            self.built[objective] = dataset_inputs(dataset, specs, name, with_labels=choice.labelled)
            self.trained_on[objective] = choice.record(len(dataset), data.name)
        return self.built[objective]


class RealignedRows:
    """``<merge>+<realigner>`` rows: each realigner trained on a merged row's encoder, evaluated on test,
    its representation bias against the experts on the test images compared with the merged row's."""

    def __init__(self, demo: Demo, pool: ExpertPool, states: dict[str, State]) -> None:
        from simo_merge.features.inputs import dataset_inputs

        self.demo, self.pool, self.states = demo, pool, states
        self.inputs = InputsByObjective(demo)
        self.experts = pool.expert_encoders()
        self.test_images = dataset_inputs(demo.data.sets["test"], list(demo.data.specs), "test").images
        self.heads = pool.frozen_heads()

    def merged_bias(self, name: str) -> Rows:
        """The representation bias of the merged row ``name``, before any realigner."""
        from simo_merge.realign.diagnostics import mean_bias, representation_bias

        if name not in self.states:
            raise KeyError(
                f"realign.apply_to names {name!r}, which is not a merged row: {sorted(self.states)}"
            )
        merged = self.demo.new_encoder()
        merged.load_model_state(self.states[name])
        before = representation_bias(merged, self.experts, self.test_images)
        bias = {name: {"before": mean_bias(before), "per_layer_before": before}}
        return Rows(info={name: {"bias": f"{mean_bias(before):.4f}"}}, bias=bias)

    def config(self, name: str, realigner: str, settings: RealignSettings) -> Any:
        """The resolved training config of ``realigner`` on the merged row ``name`` (its own seed)."""
        cfg = self.demo.cfg
        seed = stage_seed(cfg.seed, "realign", f"{name}+{realigner}") % (2**31)
        return settings.config(realigner, seed=seed, progress=cfg.progress).resolved()

    def row(self, name: str, realigner: str, bias_before: float, settings: RealignSettings) -> Rows:
        """Train ``realigner`` on the merged row ``name`` and evaluate it: the row ``name+realigner``."""
        from simo_merge.realign.diagnostics import mean_bias, representation_bias
        from simo_merge.realign.train import realign

        demo, t0 = self.demo, time.perf_counter()
        cfg = self.config(name, realigner, settings)
        objective = cfg.objective
        inputs = self.inputs(objective)
        model, curve = realign(
            demo.new_encoder, self.states[name], self.pool.experts, self.heads, inputs, cfg
        )
        row = f"{name}+{realigner}"
        results = evaluate(
            model, demo.data.test, demo.data.specs, desc=f"test {row}", progress=demo.cfg.progress
        )
        per_layer = representation_bias(model, self.experts, self.test_images)
        after = mean_bias(per_layer)
        info = {
            "trained params": f"{model.num_trainable():,}",
            "bias": f"{after:.4f}",
            "params": f"{cfg.recipe} recipe, "
            + (objective if objective == "supervised" else f"{objective}, {model.plan.match}"),
        }
        demo.timings[f"realign {row}"] = time.perf_counter() - t0
        demo.say(
            f"{row}: {len(curve)} iterations {info['params']}, loss {loss_span(curve)}, "
            f"bias {bias_before:.4f} -> {after:.4f}, {demo.timings[f'realign {row}']:.0f}s"
        )
        bias = {row: {"after": after, "per_layer_after": per_layer}}
        return Rows(rows={row: results}, info={row: info}, bias=bias)


def realign_rows(
    demo: Demo, pool: ExpertPool, states: dict[str, State], targets: list[tuple[str, RealignSettings]]
) -> Rows:
    """For each (merged row, realigners' settings) of ``targets`` (``realign.apply_to``) with a realigner:
    the merged row's bias before realignment, then a ``<row>+<realigner>`` row per realigner."""
    targets = [(name, settings) for name, settings in targets if settings.names()]
    if not targets:
        return Rows()
    realigned = RealignedRows(demo, pool, states)
    table = Rows()
    for name, settings in targets:
        merged = realigned.merged_bias(name)
        table.add(merged)
        for realigner in settings.names():
            table.add(realigned.row(name, realigner, merged.bias[name]["before"], settings))
    table.trained_on = realigned.inputs.trained_on
    return table


# -------------------------------------------------------------------------------------- report
def report_text(demo: Demo, table: Rows, markdown: str) -> str:
    """``report.md``: what ran, the results table, then the run's log lines."""
    cfg, specs = demo.cfg, demo.data.specs
    return (
        "# simo_merge dense demo\n\n"
        f"Dataset {cfg.data.name} {cfg.data.size}, tasks {', '.join(specs)}; encoder "
        f"{cfg.encoder.arch} {cfg.encoder.kwargs}; head {cfg.head.kind}.\n"
        "Every rate in % (segmentation mIoU / pixel accuracy, normals within t°); depth errors in metres "
        "(rel_err a ratio), normal angles in degrees. "
        "NormPerf and ΔMTL against the individual experts; λ chosen on val.\n"
        + "".join(
            f"Realigners ({objective}): {describe(info)}\n" for objective, info in table.trained_on.items()
        )
        + "\n"
        + markdown
        + "\n"
        + "\n".join(demo.log)
        + "\n"
    )


def write_results(demo: Demo, table: Rows, start: float) -> dict[str, Any]:
    """``metrics.json``, ``results.png`` and ``report.md`` of the finished table; the metrics returned."""
    specs = list(demo.data.specs)
    summary = summarize(table.rows, "Individual")
    markdown = markdown_table(table.rows, summary, table.info)
    demo.timings["total"] = time.perf_counter() - start
    result = {
        "rows": table.rows,
        "summary": summary,
        "units": result_units(table.rows),
        "merge_params": table.chosen,
        "representation_bias": table.bias,
        "realign_trained_on": table.trained_on,
        "timings": demo.timings,
        "tasks": specs,
    }
    write_json(demo.out / "metrics.json", result, on_rank_zero())
    title = "Dense SIMO demo: normalised performance"
    bar_chart(summary, specs, demo.out / "results.png", title=title)
    write_text(demo.out / "report.md", report_text(demo, table, markdown), on_rank_zero())
    print("\n" + markdown)
    print(f"wrote {demo.out}/report.md, metrics.json, results.png ({demo.timings['total']:.0f}s)")
    return result


Config = DemoConfig
DEFAULT_CONFIG = "demo"  # configs/demo.yaml


def output_folder(cfg: DemoConfig) -> tuple[str, str]:
    return cfg.output_dir, "output_dir"


def run(cfg: DemoConfig) -> dict[str, Any]:
    """Train (or reuse) θ0, experts and MTL, merge, realign, evaluate and report into ``output_dir``."""
    demo = Demo(cfg)
    start = time.perf_counter()
    write_text(demo.out / "config.yaml", to_yaml(cfg), on_rank_zero())
    pool = demo.experts()
    mtl = demo.mtl(pool.base)
    val_individual = demo.individual(pool, demo.data.val, "val")
    table = baseline_rows(demo, pool, mtl)
    table.add(merged_rows(demo, pool, val_individual))
    table.add(realign_rows(demo, pool, table.states, cfg.realign.targets(cfg.full)))
    return write_results(demo, table, start)
