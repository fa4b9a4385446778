"""The dense demo end to end on a tiny config, its cache, and the train-experts / evaluate commands."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from simo_merge.cli import main
from tests.helpers import AFFINITY_FILES
from tests.helpers.demo import TINY

pytestmark = pytest.mark.slow  # the demo and its commands end to end


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", *TINY, f"output_dir={out}"]) == 0
    return out


def test_demo_writes_the_run_folder(demo_run):
    for name in (
        "config.yaml",
        "metrics.json",
        "report.md",
        "results.png",
        "experts/theta0.safetensors",
        "experts/semseg.safetensors",
        "experts/normal_head.safetensors",
        "mtl/encoder.safetensors",
    ):
        assert (demo_run / name).is_file(), name
    result = json.loads((demo_run / "metrics.json").read_text())
    assert list(result["rows"]) == [
        "Individual",
        "MTL",
        "Pretrained θ0 + expert heads",
        "WA",
        "TA",
        "TIES",
        "TA+surgery",
        "TA+deep",
        "TA+shared-deep",
        "TA+taps",
        "TA+heads",
    ]
    assert set(result["representation_bias"]) == {
        "TA",
        "TA+surgery",
        "TA+deep",
        "TA+shared-deep",
        "TA+taps",
        "TA+heads",
    }
    assert result["summary"]["Individual"]["norm_perf"] == pytest.approx(100.0)
    assert result["summary"]["Individual"]["delta_mtl"] == pytest.approx(0.0)
    assert result["merge_params"]["TA"]["lam"] in (0.3, 1.0)
    # config.yaml names the rows that ran (the basic preset a null merge.methods stands for)
    written = yaml.safe_load((demo_run / "config.yaml").read_text())
    assert written["merge"]["methods"] == [
        "weight_average",
        "task_arithmetic",
        {"name": "ties", "params": {"k": 20}},
    ]
    assert written["realign"]["apply_to"] == ["TA"]
    assert set(result["rows"]["TIES"]) == {"semseg", "depth", "normal"}
    report = (demo_run / "report.md").read_text()
    assert "| TIES |" in report and "semseg miou % ↑" in report and "| TA+deep |" in report
    assert result["units"]["miou"] == "%" and result["units"]["within_30"] == "%"
    assert result["units"]["mean_angle"] == "degrees" and result["units"]["delta_mtl"] == "%"
    # demo.yaml asks for the papers' test-time setting by name; the supervised heads realigner uses val
    trained_on = result["realign_trained_on"]
    assert (
        trained_on["unsupervised"]["setting"] == "test-time" and trained_on["unsupervised"]["split"] == "test"
    )
    assert trained_on["supervised"]["split"] == "val" and trained_on["supervised"]["labelled"]
    assert not trained_on["unsupervised"]["augmented"] and "test-time setting (test_time=true)" in report


def _without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "timings"}


def test_rerun_reuses_trained_models_and_reproduces_the_metrics(demo_run, capsys):
    first = json.loads((demo_run / "metrics.json").read_text())
    assert main(["demo", *TINY, f"output_dir={demo_run}"]) == 0
    out = capsys.readouterr().out
    assert "fine-tuned" not in out and "pretrained θ0" not in out and "trained the MTL" not in out
    assert "| TA |" in out
    again = json.loads((demo_run / "metrics.json").read_text())
    assert _without_timings(again) == _without_timings(first)  # every number, bit for bit
    assert not any(k.startswith(("pretrain", "expert", "mtl")) for k in again["timings"])  # nothing trained


def _tiny_demo(out):
    from simo_merge.config import load_config
    from simo_merge.configs import builtin_config
    from simo_merge.jobs.demo import Demo, DemoConfig

    return Demo(load_config(DemoConfig, builtin_config("demo"), [*TINY, f"output_dir={out}"]))


def test_summary_is_normalised_performance_against_the_individual_experts(demo_run):
    from simo_merge.metrics.summary import normalized_performance

    result = json.loads((demo_run / "metrics.json").read_text())
    rows, summary = result["rows"], result["summary"]
    assert all(summary["Individual"][f"norm_{t}"] == pytest.approx(100.0) for t in result["tasks"])
    for name, row in rows.items():
        norm = normalized_performance(row, rows["Individual"])
        assert summary[name]["norm_perf"] == pytest.approx(norm["mean"]), name
        assert norm["mean"] == pytest.approx(sum(norm[t] for t in result["tasks"]) / 3), name
    # the table's NormPerf column shows the same numbers
    report = (demo_run / "report.md").read_text()
    mtl_line = next(line for line in report.splitlines() if line.startswith("| MTL |"))
    assert f" {summary['MTL']['norm_perf']:.1f} | {summary['MTL']['delta_mtl']:+.2f} |" in mtl_line


def test_lambda_is_the_grid_value_with_the_best_val_norm_perf(demo_run):
    """Recompute the TA sweep from the cached pool: the chosen λ maximises val NormPerf over the grid, its
    score is the recorded one, and the TA row is that merge's test result."""
    from torch.utils.data import DataLoader

    from simo_merge.merging import merge
    from simo_merge.metrics.summary import normalized_performance
    from simo_merge.model import MultiTaskModel
    from simo_merge.training.evaluate import evaluate

    result = json.loads((demo_run / "metrics.json").read_text())
    demo = _tiny_demo(demo_run)
    pool = demo.experts()  # cached: nothing retrained
    specs, val_set = demo.data.specs, demo.data.sets["val"]

    def by_hand(state, tasks, data):  # the encoder holding ``state`` under the experts' heads
        encoder = demo.new_encoder()
        encoder.load_model_state(state)
        model = MultiTaskModel(encoder, pool.subset(tasks).frozen_heads())
        return evaluate(model, DataLoader(data, 64), {t: specs[t] for t in tasks}, progress=False)

    val_individual = {t: by_hand(pool.experts[t], [t], val_set)[t] for t in specs}
    assert demo.taskpool(pool, "val").individual() == val_individual
    scores = {}
    for lam in (0.3, 1.0):
        val = by_hand(merge(pool, "task_arithmetic", lam=lam), list(specs), val_set)
        scores[lam] = normalized_performance(val, val_individual)["mean"]
    chosen = result["merge_params"]["TA"]
    assert chosen["lam"] == max(scores, key=scores.get)
    assert chosen["val_norm_perf"] == round(scores[chosen["lam"]], 2)
    assert scores[0.3] != scores[1.0]  # the sweep did choose
    ta = demo.taskpool(pool, "test").evaluate(merge(pool, "task_arithmetic", lam=chosen["lam"]))
    assert ta == result["rows"]["TA"]


def test_representation_bias_before_and_after_realignment(demo_run):
    """The recorded bias of TA is the mean over tasks and layers of its per-layer bias against the experts;
    the heads realigner leaves the encoder as merged, so its bias is TA's to the last digit, while the
    encoder realigners change it."""
    bias = json.loads((demo_run / "metrics.json").read_text())["representation_bias"]
    before = bias["TA"]["per_layer_before"]
    assert set(before) == {"semseg", "depth", "normal"}
    values = [v for per_task in before.values() for v in per_task.values()]
    assert all(v > 0 for v in values) and len(values) == 3 * 3  # 2 blocks + final, per task
    assert bias["TA"]["before"] == pytest.approx(sum(values) / len(values))
    assert bias["TA+heads"]["after"] == pytest.approx(bias["TA"]["before"], rel=1e-6)
    for realigner in ("surgery", "deep", "shared-deep", "taps"):
        assert bias[f"TA+{realigner}"]["after"] != pytest.approx(bias["TA"]["before"], rel=1e-6), realigner


def test_changed_recipe_retrains_only_what_depends_on_it(demo_run, tmp_path, capsys):
    shutil.copytree(demo_run, tmp_path / "run")  # the fixture's folder keeps the models of TINY
    assert main(["demo", *TINY, "expert.finetune_steps=3", f"output_dir={tmp_path / 'run'}"]) == 0
    out = capsys.readouterr().out
    assert out.count("fine-tuned the") == 3 and "pretrained θ0" not in out and "trained the MTL" not in out


def test_evaluate_command_on_a_merged_checkpoint(demo_run, tmp_path, capsys):
    pool = demo_run / "experts"
    assert (
        main(
            [
                "merge",
                "pool.kind=files",
                f"pool.base={pool}/theta0.safetensors",
                f"pool.experts={{semseg: {pool}/semseg.safetensors, depth: {pool}/depth.safetensors, "
                f"normal: {pool}/normal.safetensors}}",
                "method.name=task_arithmetic",
                f"output_dir={tmp_path}",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                f"pool.dir={pool}",
                f"checkpoint={tmp_path}/merged.safetensors",
                "data.size=[32,32]",
                "data.num_samples={test: 8}",
                "progress=false",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "| task_arithmetic |" in text and "| Individual |" in text
    result = json.loads((tmp_path / "merged.metrics.json").read_text())
    assert set(result["rows"]["task_arithmetic"]) == {"semseg", "depth", "normal"}


def test_realign_command_then_evaluate_with_its_adapters(demo_run, tmp_path, capsys):
    pool = demo_run / "experts"
    experts = "{" + ", ".join(f"{t}: {pool}/{t}.safetensors" for t in ("semseg", "depth", "normal")) + "}"
    assert (
        main(
            [
                "merge",
                "pool.kind=files",
                f"pool.base={pool}/theta0.safetensors",
                f"pool.experts={experts}",
                "method.name=ties",
                f"output_dir={tmp_path}",
            ]
        )
        == 0
    )
    data = ["data.size=[32,32]", "data.num_samples={val: 8, test: 8}", "progress=false"]
    out = tmp_path / "realign"
    assert (
        main(
            [
                "realign",
                f"pool.dir={pool}",
                f"checkpoint={tmp_path}/merged.safetensors",
                "realign.realigners=[deep]",
                "realign.params={objective: unsupervised, rank: 4, steps: 3}",
                "bias=true",
                "tsne=true",
                *data,
                f"output_dir={out}",
            ]
        )
        == 0
    )
    for name in (
        "adapters.safetensors",
        "adapters.json",
        "bias.png",
        "tsne.png",
        "metrics.json",
        "report.md",
    ):
        assert (out / name).is_file(), name
    realigned = json.loads((out / "metrics.json").read_text())
    # by default the adapters train on val, not on the evaluated test split, and the report says so
    trained_on = realigned["trained_on"]
    assert (trained_on["split"], trained_on["setting"], realigned["eval_split"]) == (
        "val",
        "held-out",
        "test",
    )
    assert not trained_on["augmented"] and not trained_on["labelled"]
    read = trained_on["per_task"]
    assert {t: r["num_inputs"] for t, r in read.items()} == dict.fromkeys(["semseg", "depth", "normal"], 8)
    assert {r["dataset"] for r in read.values()} == {"synthetic_scenes"}
    assert "Adapters trained on synthetic_scenes/val" in (out / "report.md").read_text()
    assert "held out from the evaluated split 'test'" in (out / "report.md").read_text()
    assert realigned["trainable_parameters"] == 3 * 2 * (2 * 4 * 32)  # 3 tasks x 2 blocks x (down + up)
    assert set(realigned["bias_after"]["depth"]) == {"block0", "block1", "final"}
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                f"pool.dir={pool}",
                f"checkpoint={tmp_path}/merged.safetensors",
                f"adapters={out}/adapters.safetensors",
                f"output={tmp_path}/eval.json",
                *data,
            ]
        )
        == 0
    )
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    for task, metrics in realigned["rows"]["ties+deep"].items():
        for key, value in metrics.items():
            assert evaluated["rows"]["ties+deep"][task][key] == pytest.approx(value, rel=1e-5, abs=1e-6)
    assert main(["realign", f"pool.dir={pool}", "realign.realigners=[nope]", *data, f"output_dir={out}"]) == 2
    assert "unknown realigner 'nope'" in capsys.readouterr().err
    # the evaluated split only by name: test_time=true (the papers' setting), recorded as such
    assert main(["realign", f"pool.dir={pool}", "split=test", *data, f"output_dir={out}"]) == 2
    assert "split='test'" in capsys.readouterr().err
    tt = tmp_path / "test_time"
    args = [f"pool.dir={pool}", f"checkpoint={tmp_path}/merged.safetensors", "realign.params.steps=1"]
    args += ["bias=true", *data, f"output_dir={tt}"]
    assert main(["realign", *args, "test_time=true"]) == 0
    second = json.loads((tt / "metrics.json").read_text())
    test_time = second["trained_on"]
    assert (test_time["split"], test_time["setting"]) == ("test", "test-time")
    # a second realign of the same checkpoint reuses the evaluations (3 experts, merged model, bias before)
    assert realigned["evaluations_reused"] == 0 and realigned["evaluations_computed"] == 5
    assert second["evaluations_reused"] == 5 and second["evaluations_computed"] == 0
    assert second["rows"]["Individual"] == realigned["rows"]["Individual"]
    assert second["rows"]["ties"] == realigned["rows"]["ties"]
    assert second["bias_before"] == realigned["bias_before"]
    assert "test-time setting (test_time=true)" in (tt / "report.md").read_text()


def test_realign_command_with_the_simo_recipe(demo_run, tmp_path):
    """recipe=simo in one word: supervised on label_split, the adapters trained (heads frozen), one epoch."""
    from simo_merge.io.checkpoint import load_state, read_sidecar

    pool = demo_run / "experts"
    data = ["data.size=[32,32]", "data.num_samples={val: 8, test: 8}", "progress=false"]
    out = tmp_path / "simo"
    args = ["realign", f"pool.dir={pool}", "realign.realigners=[shared-deep]"]
    args += ["realign.params={recipe: simo, rank: 4, batch_size: 4}"]
    assert main([*args, *data, f"output_dir={out}", "tsne=false"]) == 0
    meta = read_sidecar(out / "adapters.safetensors")
    assert meta["recipe"] == "simo" and meta["objective"] == "supervised" and not meta["train_heads"]
    settings = meta["recipe_settings"]  # the notebook's values, as the run resolved them
    assert (settings["optimizer"], settings["weight_decay"], settings["lr"], settings["clip_grad"]) == (
        "adamw", 0.0, 1e-5, 35.0,
    )  # fmt: skip
    assert (settings["lr_schedule"], settings["warmup"], settings["epochs"]) == ("onecycle", 0.1, 1.0)
    keys = list(load_state(out / "adapters.safetensors"))
    assert not any(k.startswith("heads.") for k in keys) and any(k.startswith("adapters.") for k in keys)
    realigned = json.loads((out / "metrics.json").read_text())
    assert len(realigned["loss_curve"]) == 2  # one epoch of the 8 val images in batches of 4


def test_affinity_command_writes_every_file(demo_run, tmp_path, capsys):
    out = tmp_path / "affinity"
    assert (
        main(
            [
                "affinity",
                f"pool.dir={demo_run / 'experts'}",
                "data.size=[32,32]",
                "data.num_samples={val: 8, test: 8}",
                "transfer_lambdas=[0.0,0.5,1.0]",
                "select_lambdas=[0.5,1.0]",
                "progress=false",
                f"output_dir={out}",
            ]
        )
        == 0
    )
    for name in AFFINITY_FILES:
        assert (out / name).is_file(), name
    result = json.loads((out / "affinity.json").read_text())
    cosine = result["cosine"]["global"]["cosine"]
    assert [round(cosine[i][i], 6) for i in range(3)] == [1.0, 1.0, 1.0]
    assert result["agreement"]["cosine"]["n_pairs"] == 3
    assert "Spearman" in capsys.readouterr().out


def test_demo_data_dependent_rows_and_realigners_per_row(tmp_path):
    out = tmp_path / "data_dependent"
    methods = (
        "merge.methods=[task_arithmetic, {name: adamerging, params: {steps: 2}},"
        " {name: adamerging_layerwise, params: {steps: 2}}, {name: fisher, params: {num_batches: 1}},"
        " {name: regmean, params: {num_batches: 1}}, lines]"
    )
    realign = [
        "realign.realigners=[surgery, heads]",
        "realign.apply_to=[TA, AdaMerging-LW, {row: LiNeS, realigners: [taps]}]",
    ]
    assert main(["demo", *TINY, methods, *realign, f"output_dir={out}"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    merged = ["TA", "AdaMerging", "AdaMerging-LW", "Fisher", "RegMean", "LiNeS"]
    realigned = ["TA+surgery", "TA+heads", "AdaMerging-LW+surgery", "AdaMerging-LW+heads", "LiNeS+taps"]
    # merged rows in merge.methods order, then realigned rows in realign.apply_to order
    assert list(result["rows"]) == ["Individual", "MTL", "Pretrained θ0 + expert heads", *merged, *realigned]
    assert (out / "lambdas_adamerging_layerwise.png").is_file()
    assert result["merge_params"]["LiNeS"]["beta"] in (0.2, 0.4, 0.6, 0.8, 1.0)
    # the supervised heads realigner's inputs and the unsupervised ones' are both recorded
    assert list(result["realign_trained_on"]) == ["unsupervised", "supervised"]
    assert (
        "Realigners (supervised): Adapters trained on synthetic_scenes/val" in (out / "report.md").read_text()
    )


def test_demo_is_reproducible_from_its_config(tmp_path):
    small = [*TINY, "realign.realigners=[taps]"]
    results = []
    for name in ("a", "b"):
        assert main(["demo", *small, f"output_dir={tmp_path / name}"]) == 0
        results.append(json.loads((tmp_path / name / "metrics.json").read_text())["rows"])
    assert results[0] == results[1]


def test_train_experts_with_pretrain_steps_0_keeps_the_initialised_encoder(tmp_path, capsys):
    from simo_merge.config import load_config
    from simo_merge.configs import builtin_config
    from simo_merge.io.checkpoint import load_state, read_sidecar
    from simo_merge.jobs.demo import DemoConfig
    from simo_merge.training.recipes import CachedTraining

    args = [*TINY, "pretrain.steps=0", f"output_dir={tmp_path}"]
    assert main(["train-experts", *args]) == 0
    assert "θ0 = the initialised encoder" in capsys.readouterr().out
    theta0 = tmp_path / "experts" / "theta0.safetensors"
    assert read_sidecar(theta0)["loss_first_last"] == []
    assert "pretrain.steps=0" in read_sidecar(theta0)["role"]
    cfg = load_config(DemoConfig, builtin_config("demo"), args)
    fresh = CachedTraining(cfg, tmp_path).new_encoder().model_state()
    stored = load_state(theta0)
    assert set(stored) == set(fresh)
    assert all(torch.equal(stored[k], fresh[k]) for k in fresh)
    # the experts were fine-tuned from it
    expert = load_state(tmp_path / "experts" / "semseg.safetensors")
    assert any(not torch.equal(expert[k], stored[k]) for k in stored)
