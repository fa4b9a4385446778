"""The built-in dense SIMO demo: pretrain θ0 (or read it from ``encoder.checkpoint`` /
``encoder.pretrained``), fine-tune one expert per task, train the MTL baseline,
merge the experts (WA, TA, TIES with λ chosen on val) and evaluate every model on test, each split a
:class:`~simo_merge.taskpool.TaskPool` of the pool's frozen heads.

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

from simo_merge.config import ConfigError, to_yaml
from simo_merge.io.atomic import write_json, write_text
from simo_merge.jobs._demo_config import DEMO_REALIGN_STEPS, DemoConfig
from simo_merge.merging import MERGE_METHODS
from simo_merge.merging.spec import MethodSpec
from simo_merge.metrics.selection import SELECTION_LABELS, Criterion, criterion
from simo_merge.model import MultiTaskModel
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.protocols import get_protocol
from simo_merge.realign.config import RECIPE_FIELDS, RealignSettings
from simo_merge.realign.inputs import describe, inputs_dataset
from simo_merge.report import bar_chart
from simo_merge.runtime import on_rank_zero
from simo_merge.seeding import stage_seed
from simo_merge.taskpool import (
    INDIVIDUAL,
    ResultsTable,
    TaskPool,
    merge,
    merge_data,
    realigned,
    select_scale,
)
from simo_merge.training.recipes import CachedTraining, loss_span

#: the demo trains an MTL baseline on images carrying every task's labels (SIMO); a SISO pool runs the chain
SISO_REFUSAL = (
    "data.per_task={tasks}: the demo runs SIMO data (one data set carrying every task's labels); for one "
    "data set per task run the chain: simo-merge train-experts (data.per_task) -> merge method.grid=[...] "
    "split=val -> realign -> evaluate -> affinity (README: 'Classification experts from any θ0')"
)
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
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)  # realigned row -> resolved recipe

    def add(self, other: Rows) -> Rows:
        """Append ``other``'s rows after these; extra columns of a row already here are added to it."""
        self.rows.update(other.rows)
        for name, columns in other.info.items():
            self.info.setdefault(name, {}).update(columns)
        self.states.update(other.states)
        self.chosen.update(other.chosen)
        self.bias.update(other.bias)
        self.trained_on.update(other.trained_on)
        self.recipes.update(other.recipes)
        return self


def shown_params(params: dict[str, Any]) -> str:
    """``"lam=0.3, k=20"``: the table's params column (the val score, ``val_*``, has its own entry)."""
    return ", ".join(f"{k}={v}" for k, v in params.items() if not k.startswith("val_"))


class Demo(CachedTraining):
    """The demo's models (θ0, experts, MTL: trained once, cached in the run folder) and the task pools they
    are evaluated on; each step can be called on its own (e.g. from a notebook). ``protocol`` is
    ``data.protocol``'s: how the pools score and how λ is chosen."""

    def __init__(self, cfg: DemoConfig) -> None:
        cfg.validate()
        if cfg.data.per_task:
            raise ConfigError(SISO_REFUSAL.format(tasks=sorted(cfg.data.per_task)))
        torch.set_num_threads(cfg.threads)
        super().__init__(cfg, Path(cfg.output_dir))
        self.protocol = get_protocol(cfg.data.protocol)

    def taskpool(self, pool: ExpertPool, split: str) -> TaskPool:
        """The pool's frozen expert heads on the run's ``split`` (every task on the same images); states are
        held by the run's seeded encoder."""
        return TaskPool(
            pool,
            [(self.data.sets[split], list(self.data.specs))],
            make_encoder=self.new_encoder,
            seed=self.cfg.seed,
            name=f"{self.cfg.data.name}-{split}",
            progress=self.cfg.progress,
            protocol=self.protocol,
        )


# ---------------------------------------------------------------------------------------- rows
def baseline_rows(test: TaskPool, mtl: MultiTaskModel) -> Rows:
    """Individual experts (the 100 % of NormPerf), the MTL model and θ0 under the experts' heads."""
    rows = {INDIVIDUAL: test.individual("test")}
    rows["MTL"] = test.evaluate_model(mtl, desc="test MTL")
    rows["Pretrained θ0 + expert heads"] = test.evaluate(test.pool.base, desc="test θ0")
    return Rows(rows=rows)


def merge_with_selection(
    demo: Demo, val: TaskPool, spec: MethodSpec, select: Criterion
) -> tuple[State, dict[str, Any]]:
    """Merge with ``spec``; where its method has a sweepable scale (its registered ``scale`` fact), pick
    the value of ``spec.grid`` (default: the registered grid, else ``merge.lam_grid``) with the best val
    score by the protocol's criterion (``select``; the first best on a tie, as SIMO's ``find_optimal_coef``:
    :func:`~simo_merge.taskpool.select_scale`), recorded under ``select.key``."""
    params = dict(spec.params)
    facts = MERGE_METHODS.facts(spec.name)
    scale = facts["scale"]
    if scale is None or scale in params:
        return merge(val, spec), params
    grid = spec.grid or facts.get("grid") or demo.cfg.merge.lam_grid
    state, sweep = select_scale(val, spec, grid, select)
    return state, {**params, scale: sweep.value, select.key: round(sweep.score, 2)}


def selected_row(demo: Demo, test: TaskPool, val: TaskPool, spec: MethodSpec, select: Criterion) -> Rows:
    """One merged row, its scale chosen on val (:func:`merge_with_selection`), evaluated on test."""
    t0 = time.perf_counter()
    state, chosen = merge_with_selection(demo, val, spec, select)
    name = MERGE_METHODS.facts(spec.name)["label"]
    row = Rows(
        rows={name: test.evaluate(state, desc=f"test {name}")},
        info={name: {"params": shown_params(chosen)}},
        states={name: state},
        chosen={name: chosen},
    )
    demo.timings[f"merge {name}"] = time.perf_counter() - t0
    if MERGE_METHODS.facts(spec.name).get("grid"):  # a method with its own registered grid says its pick
        demo.say(f"{name}: {row.info[name]['params']} ({select.label}: {chosen.get(select.key, '–')})")
    return row


def per_task_row(demo: Demo, test: TaskPool, spec: MethodSpec) -> Rows:
    """A method that rebuilds one model per task (TALL masks): each task evaluated on its own model."""
    name, params = MERGE_METHODS.facts(spec.name)["label"], spec.params
    t0 = time.perf_counter()
    results = test.per_task(lambda task: merge(test, spec, task=task), f"test {name}")
    shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "one model per task"
    demo.timings[f"merge {name}"] = time.perf_counter() - t0
    return Rows(rows={name: results}, info={name: {"params": shown}})


def probe_data(demo: Demo, test: TaskPool) -> Any:
    """The data-dependent merges' :class:`MergeData`: unlabelled ``merge.split`` inputs in batches of
    ``merge.batch_size``, their statistics cached in ``<output_dir>/stats``."""
    from simo_merge.features.cache import FeatureCache
    from simo_merge.features.inputs import dataset_inputs

    cfg, split = demo.cfg, demo.cfg.merge.split
    inputs = dataset_inputs(demo.data.sets[split], list(demo.data.specs), f"{cfg.data.name}-{split}")
    return merge_data(test, inputs, cfg.merge.batch_size, FeatureCache(demo.out / "stats"))


def data_dependent_row(demo: Demo, test: TaskPool, spec: MethodSpec, probes: Any) -> Rows:
    """A merge on unlabelled inputs (AdaMerging task-/layer-wise, Fisher, RegMean) from ``probes``
    (:func:`probe_data`); a method that records its coefficients gets a heatmap ``lambdas_<method>.png``."""
    from simo_merge.merging.data.plots import lambda_heatmap

    t0 = time.perf_counter()
    record: dict[str, Any] = {}
    state = merge(test, spec, record=record, merge_data=probes)
    name = MERGE_METHODS.facts(spec.name)["label"]
    row = Rows(
        rows={name: test.evaluate(state, desc=f"test {name}")},
        info={name: {"params": ", ".join(f"{k}={v}" for k, v in spec.params.items())}},
        states={name: state},
    )
    if record:
        lambda_heatmap(record, demo.out / f"lambdas_{spec.name}.png")
    demo.timings[f"merge {name}"] = time.perf_counter() - t0
    demo.say(f"{name}: merged in {demo.timings[f'merge {name}']:.0f}s")
    return row


def merged_rows(demo: Demo, test: TaskPool, val: TaskPool, select: Criterion) -> Rows:
    """One row per ``merge.methods`` entry, in order, as its registered facts say: ``needs_data`` merges
    on unlabelled inputs (:func:`data_dependent_row`), ``per_task`` one model per task
    (:func:`per_task_row`), any other its ``scale`` chosen on val by ``select``
    (:func:`selected_row`). The rows with one merged encoder (``states``) are those realigners start from."""
    table, probes = Rows(), None
    for spec in demo.cfg.merge.specs(demo.cfg.full):
        facts = MERGE_METHODS.facts(spec.name)
        if facts["needs_data"]:
            probes = probe_data(demo, test) if probes is None else probes
            table.add(data_dependent_row(demo, test, spec, probes))
        elif facts.get("per_task"):
            table.add(per_task_row(demo, test, spec))
        else:
            table.add(selected_row(demo, test, val, spec, select))
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
            self.trained_on[objective] = choice.record(data, {t: len(dataset) for t in specs})
        return self.built[objective]


class RealignedRows:
    """``<merge>+<realigner>`` rows: each realigner trained on a merged row's encoder, evaluated on test,
    its representation bias against the experts on the test images compared with the merged row's."""

    def __init__(self, demo: Demo, test: TaskPool, states: dict[str, State]) -> None:
        self.demo, self.test, self.states = demo, test, states
        self.inputs = InputsByObjective(demo)
        self.experts = test.pool.expert_encoders()
        self.test_images = test.probe_inputs()  # streamed: read batch by batch by representation_bias

    def merged_bias(self, name: str) -> Rows:
        """The representation bias of the merged row ``name``, before any realigner."""
        from simo_merge.realign.diagnostics import mean_bias, representation_bias

        if name not in self.states:
            raise KeyError(
                f"realign.apply_to names {name!r}, which is not a merged row: {sorted(self.states)}"
            )
        before = representation_bias(self.test.encoder(self.states[name]), self.experts, self.test_images)
        bias = {name: {"before": mean_bias(before), "per_layer_before": before}}
        return Rows(info={name: {"bias": f"{mean_bias(before):.4f}"}}, bias=bias)

    def config(self, name: str, realigner: str, settings: RealignSettings) -> Any:
        """The resolved training config of ``realigner`` on the merged row ``name`` (its own seed)."""
        cfg = self.demo.cfg
        seed = stage_seed(cfg.seed, "realign", f"{name}+{realigner}") % (2**31)
        return settings.config(realigner, {"steps": DEMO_REALIGN_STEPS}, seed=seed, progress=cfg.progress)

    def row(self, name: str, realigner: str, bias_before: float, settings: RealignSettings) -> Rows:
        """Train ``realigner`` on the merged row ``name`` and evaluate it: the row ``name+realigner``."""
        from simo_merge.realign.diagnostics import mean_bias, representation_bias

        demo, t0 = self.demo, time.perf_counter()
        cfg = self.config(name, realigner, settings)
        objective = cfg.objective
        model, curve = realigned(self.test, self.states[name], cfg, self.inputs(objective))
        row = f"{name}+{realigner}"
        results = self.test.evaluate_model(model, desc=f"test {row}")
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
        recipe = {"recipe": cfg.recipe} | {f: getattr(cfg, f) for f in RECIPE_FIELDS}
        return Rows(rows={row: results}, info={row: info}, bias=bias, recipes={row: recipe})


def realign_rows(
    demo: Demo, test: TaskPool, states: dict[str, State], targets: list[tuple[str, RealignSettings]]
) -> Rows:
    """For each (merged row, realigners' settings) of ``targets`` (``realign.apply_to``) with a realigner:
    the merged row's bias before realignment, then a ``<row>+<realigner>`` row per realigner."""
    targets = [(name, settings) for name, settings in targets if settings.names()]
    if not targets:
        return Rows()
    rows = RealignedRows(demo, test, states)
    table = Rows()
    for name, settings in targets:
        merged = rows.merged_bias(name)
        table.add(merged)
        for realigner in settings.names():
            table.add(rows.row(name, realigner, merged.bias[name]["before"], settings))
    table.trained_on = rows.inputs.trained_on
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
        f"NormPerf and ΔMTL ({demo.protocol.delta_metrics} metrics) against the individual experts; λ "
        f"chosen by {SELECTION_LABELS[demo.protocol.selection]} (protocol {demo.protocol.name}).\n"
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
    results = ResultsTable(table.rows, table.info, delta_metrics=demo.protocol.delta_metrics)
    markdown = results.markdown()
    demo.timings["total"] = time.perf_counter() - start
    result = {
        **results.results(),
        "protocol": demo.protocol.record(),
        "merge_params": table.chosen,
        "representation_bias": table.bias,
        "realign_trained_on": table.trained_on,
        "realign_recipes": table.recipes,  # each realigned row's settings as resolved (user > recipe)
        "timings": demo.timings,
        "tasks": specs,
    }
    write_json(demo.out / "metrics.json", result, on_rank_zero())
    title = "Dense SIMO demo: normalised performance"
    bar_chart(results.summary, specs, demo.out / "results.png", title=title)
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
    # config.yaml names the rows that run, not the preset a null list stands for
    cfg.merge.methods, cfg.realign.apply_to = cfg.merge.entries(cfg.full), cfg.realign.entries(cfg.full)
    write_text(demo.out / "config.yaml", to_yaml(cfg), on_rank_zero())
    pool = demo.experts()
    mtl = demo.mtl(pool.base)
    test, val = demo.taskpool(pool, "test"), demo.taskpool(pool, "val")
    # the val Individual row only where it is the criterion's baseline (protocol=simo's are constants)
    individual = val.individual("val") if demo.protocol.selection == "normperf" else None
    select = criterion(demo.protocol.selection, cfg.data.name, list(demo.data.specs), individual)
    demo.say(
        f"λ chosen by {select.label}"
        + (f" on {', '.join(select.baselines)}" if select.key == "val_delta_mtl" else "")
    )
    table = baseline_rows(test, mtl)
    table.add(merged_rows(demo, test, val, select))
    table.add(realign_rows(demo, test, table.states, cfg.realign.targets(cfg.full)))
    return write_results(demo, table, start)
