"""One config shape for "merge method + params" (MethodSpec), one for realignment settings
(RealignSettings: ``realign: {realigners, params}`` in the demo, the realign job and bench clip), one
way to name a pool folder (``pool.dir``); the older keys are unknown keys, and bad names / values name
their key."""

from __future__ import annotations

import pytest

from simo_merge.config import ConfigError, load_config
from simo_merge.jobs.clip import DEFAULT_REALIGN_STEPS, ClipConfig, method_params, realign_config, row_keys
from simo_merge.jobs.demo import DemoConfig
from simo_merge.jobs.merge import MergeJobConfig
from simo_merge.jobs.realign import RealignJobConfig
from simo_merge.merging import MERGE_METHODS
from simo_merge.merging.spec import MethodSpec, method_specs
from simo_merge.realign.config import RealignConfig, RealignSettings
from tests.helpers import REPO

BASIC_ROWS = ["WA", "TA", "TIES"]
DATA_FREE_ROWS = ["LiNeS", "Consensus", "Iso-C", "Iso-CTS", "TSV-M"]
FULL_ROWS = [*BASIC_ROWS, "AdaMerging", "AdaMerging-LW", "Fisher", "RegMean"]
FULL_ROWS += ["LiNeS", "Consensus", "TALL masks", "Iso-C", "Iso-CTS", "TSV-M"]


def _rows(cfg: DemoConfig) -> list[str]:
    return [MERGE_METHODS.facts(spec.name)["label"] for spec in cfg.merge.specs(cfg.full)]


def _targets(cfg: DemoConfig) -> list[tuple[str, list[str]]]:
    return [(row, settings.names()) for row, settings in cfg.realign.targets(cfg.full)]


def test_null_methods_and_apply_to_are_the_preset_of_full():
    basic = load_config(DemoConfig, None, [])
    assert (basic.merge.methods, basic.realign.apply_to) == (None, None)
    assert basic.merge.specs(False) == [
        MethodSpec("weight_average"),
        MethodSpec("task_arithmetic"),
        MethodSpec("ties", {"k": 20}),
    ]
    every = ["surgery", "deep", "shared-deep", "taps", "heads"]
    assert _rows(basic) == BASIC_ROWS and _targets(basic) == [("TA", every), ("TIES", every)]
    full = load_config(DemoConfig, None, ["full=true"])
    assert _rows(full) == FULL_ROWS
    assert _targets(full) == [
        ("TA", every),
        ("TIES", every),
        ("AdaMerging-LW", every),
        *[(row, ["deep", "taps"]) for row in DATA_FREE_ROWS],  # TALL masks has no one merged encoder
    ]
    specs = {spec.name: spec for spec in full.merge.specs(True)}
    assert specs["adamerging"].params == {"steps": 100} and specs["fisher"].params == {"num_batches": 8}
    assert specs["regmean"].params == {"alpha": 0.9, "num_batches": 8} and specs["lines"].grid is None
    # the presets are copies: a run cannot change what the next config resolves to
    specs["ties"].params["k"] = 99
    assert load_config(DemoConfig, None, []).merge.specs(False)[2].params == {"k": 20}


def test_given_methods_and_apply_to_replace_the_preset():
    cfg = load_config(
        DemoConfig,
        None,
        [
            "full=true",
            "merge.methods=[task_arithmetic, {name: adamerging, params: {steps: 2}}, tall_masks,"
            " {name: lines, grid: [0.2, 0.9]}]",
            "realign.realigners=[surgery, {name: deep, params: {lr: 0.01}}]",
            "realign.params={steps: 7, rank: 8}",
            "realign.apply_to=[TA, {row: LiNeS, realigners: [deep, {name: taps, params: {rank: 4}}]}]",
        ],
    )
    assert _rows(cfg) == ["TA", "AdaMerging", "TALL masks", "LiNeS"]
    assert cfg.merge.specs(True)[3] == MethodSpec("lines", grid=[0.2, 0.9])
    (ta, on_ta), (lines, on_lines) = cfg.realign.targets(True)
    assert (ta, on_ta.names(), lines, on_lines.names()) == (
        "TA",
        ["surgery", "deep"],
        "LiNeS",
        ["deep", "taps"],
    )
    deep, taps = on_lines.config("deep"), on_lines.config("taps")
    assert (deep.lr, deep.steps, deep.rank) == (0.01, 7, 8)  # its params in realign.realigners, shared
    assert (taps.rank, taps.steps) == (4, 7)  # the entry's own params over the shared ones
    assert on_ta.config("deep") == deep


def test_a_per_task_row_has_no_merged_encoder_to_realign():
    given = ["merge.methods=[task_arithmetic, tall_masks]", "realign.apply_to=[TA]"]
    assert _rows(load_config(DemoConfig, None, given)) == ["TA", "TALL masks"]
    with pytest.raises(
        ConfigError, match=r"names \['TALL masks'\], which are not rows of one merged encoder"
    ):
        load_config(
            DemoConfig, None, [*given, "realign.apply_to=[TA, {row: TALL masks, realigners: [deep]}]"]
        )
    # a row without realigners trains nothing, so it is not checked
    load_config(DemoConfig, None, [*given, "realign.apply_to=[{row: TALL masks, realigners: []}]"])


def test_data_dependent_inputs_are_merge_split_and_batch_size():
    cfg = load_config(DemoConfig, None, ["merge.split=val", "merge.batch_size=4"])
    assert (cfg.merge.split, cfg.merge.batch_size) == ("val", 4)
    with pytest.raises(ConfigError, match="merge.batch_size=0: must be >= 1"):
        load_config(DemoConfig, None, ["merge.batch_size=0"])
    # the split is checked only when a method reads it
    load_config(DemoConfig, None, ["merge.split=nope"])
    with pytest.raises(ConfigError, match="data.splits has no 'nope' entry"):
        load_config(DemoConfig, None, ["merge.split=nope", "merge.methods=[fisher]", "realign.apply_to=[]"])


def test_shipped_demo_config_runs_the_basic_rows_with_its_realigners():
    shipped = load_config(DemoConfig, REPO / "configs" / "demo.yaml")
    assert not shipped.full and _rows(shipped) == BASIC_ROWS
    assert [row for row, _ in shipped.realign.targets(False)] == ["TA", "TIES"]
    settings = shipped.realign.settings()
    assert settings.names() == ["surgery", "deep", "shared-deep", "taps", "heads"]
    surgery, heads = settings.config("surgery", seed=1), settings.config("heads", seed=1)
    assert (surgery.steps, surgery.rank, surgery.objective) == (100, 16, "unsupervised")
    assert (heads.steps, heads.rank, heads.objective) == (100, 16, "supervised")
    gpu = load_config(DemoConfig, REPO / "configs" / "demo_gpu.yaml")
    assert _rows(gpu) == BASIC_ROWS and [row for row, _ in gpu.realign.targets(False)] == ["TA", "TIES"]
    assert gpu.realign.settings().config("deep").batch_size == 64
    assert _rows(load_config(DemoConfig, REPO / "configs" / "demo.yaml", ["full=true"])) == FULL_ROWS


@pytest.mark.parametrize(
    "schema,override,key",
    [
        (DemoConfig, "merge.params={ties: {k: 20}}", "merge.params"),
        (DemoConfig, "data_dependent.methods=[fisher]", "data_dependent"),
        (DemoConfig, "data_free.grids={lines: [0.2]}", "data_free"),
        (DemoConfig, "realign.steps=2", "realign.steps"),
        (DemoConfig, "realign.objectives={heads: supervised}", "realign.objectives"),
        (DemoConfig, "realign.recipes={surgery: simo}", "realign.recipes"),
        (ClipConfig, "method_params={ties: {k: 10}}", "method_params"),
        (ClipConfig, "realign_steps=3", "realign_steps"),
        (ClipConfig, "realign_params={steps: 3}", "realign_params"),
        (ClipConfig, "datasets=[mnist]", "datasets"),  # tasks=[...] (or 8 | 14 | 20) replaced it
        (RealignJobConfig, "realigner=deep", "realigner"),
        (RealignJobConfig, "rank=4", "rank"),
        (MergeJobConfig, "pool_dir=runs/demo/experts", "pool_dir"),
    ],
)
def test_older_keys_are_unknown_keys(schema, override, key):
    with pytest.raises(ConfigError, match=rf"invalid config at key '{key}'"):
        load_config(schema, None, [override])


def test_clip_bench_methods_and_realign_section():
    common = ["checkpoints=/c", "data=/d"]
    cfg = load_config(
        ClipConfig,
        None,
        [*common, "methods=[task_arithmetic, {name: ties, params: {k: 10}}]", "realign.realigners=[surgery]"],
    )
    assert cfg.specs() == [MethodSpec("task_arithmetic"), MethodSpec("ties", {"k": 10})]
    assert method_params(cfg, "ties") == {"k": 10, "lam": 0.3, "merge_func": "sum"}  # over the papers'
    run = realign_config(cfg, "surgery")
    assert (run.steps, run.objective, run.seed) == (DEFAULT_REALIGN_STEPS, "unsupervised", cfg.seed)
    keys = row_keys(cfg)
    assert list(keys) == ["Pretrained", "Individual", "task_arithmetic", "task_arithmetic+surgery"] + [
        "ties",
        "ties+surgery",
    ]
    # the default number of steps written out is the same row: resumed runs keep their rows
    same = load_config(
        ClipConfig,
        None,
        [
            *common,
            "methods=[task_arithmetic, {name: ties, params: {k: 10}}]",
            "realign={realigners: [surgery], params: {steps: 500}}",
        ],
    )
    assert row_keys(same) == keys
    fewer = load_config(ClipConfig, None, [*common, "realign.realigners=[surgery]", "realign.params.steps=3"])
    assert (
        realign_config(fewer, "surgery").steps == 3
        and row_keys(fewer)["ties+surgery"] != keys["ties+surgery"]
    )


def test_realign_job_trains_the_one_realigner_of_its_realign_section():
    cfg = load_config(
        RealignJobConfig,
        None,
        ["pool.dir=p", "realign.realigners=[deep]", "realign.params={rank: 8, steps: 3}", "seed=5"],
    )
    assert cfg.realign == RealignSettings(["deep"], {"rank": 8, "steps": 3})
    assert cfg.realign_config() == RealignConfig(realigner="deep", rank=8, steps=3, seed=5).resolved()
    default = load_config(RealignJobConfig, None, ["pool.dir=p", "realign.realigners=[heads]"])
    assert default.realign_config().objective == "unsupervised"  # unless set, as before
    simo = load_config(RealignJobConfig, None, ["pool.dir=p", "realign.params.recipe=simo"])
    run = simo.realign_config()
    assert (run.realigner, run.objective, run.optimizer, run.train_heads) == (
        "surgery",
        "supervised",
        "adamw",
        False,
    )
    # a value set by the user is kept, also one equal to the surgery recipe's (it was replaced before)
    mine = ["pool.dir=p", "realign.params={recipe: simo, lr: 1.0e-3, weight_decay: 0.01, train_heads: true}"]
    run = load_config(RealignJobConfig, None, mine).realign_config()
    assert (run.lr, run.weight_decay, run.train_heads, run.epochs) == (1e-3, 0.01, True, 1.0)
    with pytest.raises(
        ConfigError, match=r"realign.realigners=\['deep', 'taps'\]: the realign job trains one"
    ):
        load_config(RealignJobConfig, None, ["pool.dir=p", "realign.realigners=[deep, taps]"])
    with pytest.raises(ConfigError, match="realign.realigners: unknown realigner 'deeep'"):
        load_config(RealignJobConfig, None, ["pool.dir=p", "realign.realigners=[deeep]"])
    with pytest.raises(ConfigError, match=r"realign.params: unknown realignment setting\(s\) \['seed'\]"):
        load_config(RealignJobConfig, None, ["pool.dir=p", "realign.params={seed: 1}"])


def test_merge_job_method_is_a_method_spec():
    cfg = load_config(MergeJobConfig, None, ["pool.kind=toy", "method.name=ties", "method.params={k: 20}"])
    assert cfg.method == MethodSpec("ties", {"k": 20})
    toy = ["pool.kind=toy", "data.name=synthetic_scenes"]
    cfg = load_config(MergeJobConfig, None, [*toy, "method.grid=[0.3, 0.5]", "split=val"])
    assert cfg.method.grid == [0.3, 0.5]
    refused = [
        (["pool.kind=toy", "method.grid=[0.3]", "split=val"], "judged on labelled data; give a data section"),
        ([*toy, "method.grid=[0.3]"], "split=test would choose lam on the evaluated split"),
        ([*toy, "method.grid=[]", "split=val"], r"method.grid: \[\] must be a non-empty list"),
        ([*toy, "method.grid=[0.3]", "method.params.lam=0.4", "split=val"], "give one"),
        ([*toy, "method.name=weight_average", "method.grid=[0.3]", "split=val"], "no sweepable scale"),
    ]
    for overrides, message in refused:
        with pytest.raises(ConfigError, match=message):
            load_config(MergeJobConfig, None, overrides)


@pytest.mark.parametrize(
    "override,message",
    [
        ("merge.methods=[tiez]", r"merge.methods: unknown merge method 'tiez'; known: .*task_arithmetic"),
        (
            "merge.methods=[{name: ties, params: {kk: 3}}]",
            r"merge.methods\[0\].params.ties: unknown hyper-parameter\(s\) \['kk'\]; accepted: \[.*'k'",
        ),
        ("merge.methods=[{name: ties, params: {k: abc}}]", r"merge.methods\[0\].params.ties: k='abc'"),
        ("merge.methods=[{name: ties, parms: {k: 3}}]", r"merge.methods\[0\]: unknown key\(s\) \['parms'\]"),
        ("merge.methods=[ties, ties]", r"merge.methods: \['ties'\] given more than once"),
        ("merge.methods=[{name: ties, grid: [.nan]}]", r"merge.methods\[0\].grid"),
        (
            "merge.methods=[{name: ties, transforms: {drae: {p: 0.5}}}]",
            r"merge.methods\[0\].transforms: unknown transform 'drae'; known: dare",
        ),
        ("realign.realigners=[deeep]", "realign.realigners: unknown realigner 'deeep'; known: "),
        ("realign.params={rnk: 4}", r"realign.params: unknown realignment setting\(s\) \['rnk'\]; accepted"),
        ("realign.params={rank: abc}", r"realign.params.rank='abc': must be a int"),
        (
            "realign.realigners=[{name: deep, params: {stepz: 1}}]",
            r"realign.realigners\[0\].params: unknown realignment setting\(s\) \['stepz'\]",
        ),
        (
            "realign.apply_to=[TA, {rows: TIES}]",
            r"realign.apply_to\[1\]: a row name or \{row: NAME, realigners",
        ),
        (
            "realign.apply_to=[{row: TA, realigners: [tapz]}]",
            r"realign.apply_to\[0\].realigners: unknown realigner 'tapz'",
        ),
        ("realign.apply_to=[TA, WAT]", r"realign.apply_to names \['WAT'\], which are not rows of one merged"),
        (
            "merge.methods=[task_arithmetic, tall_masks]",  # the preset names TIES; TALL masks is per task
            r"realign.apply_to \(null: the preset of full=False\) names \['TIES'\]",
        ),
    ],
)
def test_bad_method_or_setting_names_its_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DemoConfig, None, [override])


def test_clip_bench_bad_names_name_their_key():
    common = ["checkpoints=/c", "data=/d"]
    with pytest.raises(ConfigError, match=r"methods\[1\].params.ties: unknown hyper-parameter\(s\) \['q'\]"):
        load_config(ClipConfig, None, [*common, "methods=[task_arithmetic, {name: ties, params: {q: 1}}]"])
    with pytest.raises(ConfigError, match="realign.realigners: unknown realigner 'srgery'"):
        load_config(ClipConfig, None, [*common, "realign.realigners=[srgery]"])
    with pytest.raises(ConfigError, match=r"realign.params: unknown realignment setting\(s\) \['seed'\]"):
        load_config(ClipConfig, None, [*common, "realign.realigners=[surgery]", "realign.params={seed: 1}"])


def test_library_shapes_from_python():
    specs = method_specs(["task_arithmetic", {"name": "ties", "params": {"k": 20, "lam": 1}}], "methods")
    assert specs == [MethodSpec("task_arithmetic"), MethodSpec("ties", {"k": 20, "lam": 1})]
    assert [s.compact() for s in specs] == [
        "task_arithmetic",
        {"name": "ties", "params": {"k": 20, "lam": 1}},
    ]
    settings = RealignSettings(["deep", {"name": "heads", "params": {"lr": 1e-4}}], {"steps": 5})
    assert settings.names() == ["deep", "heads"]
    heads = settings.config("heads")
    assert (heads.steps, heads.lr, heads.objective) == (5, 1e-4, "supervised")  # heads' registered objective
    assert settings.config("deep", {"objective": "supervised"}).objective == "supervised"  # a job default


def test_the_protocol_is_data_protocol_and_reaches_the_dataset(tmp_path):
    """One key names the protocol: ``data.protocol``; a protocol inside ``data.options`` and an unknown name
    are errors naming the key; datasets with protocol-specific splits receive it."""
    from simo_merge.data import build_split

    cfg = load_config(DemoConfig, None, ["data.name=nyuv2", f"data.root={tmp_path}", "data.protocol=simo"])
    assert cfg.data.protocol == "simo"
    # protocol=simo chooses λ against the SIMO code's constants, which the generated scenes lack
    with pytest.raises(
        ConfigError, match=r"data\.protocol=simo: selection 'delta_mtl'.*'synthetic_scenes' has none"
    ):
        load_config(DemoConfig, None, ["data.protocol=simo"])
    with pytest.raises(ConfigError, match=r"data\.protocol: unknown protocol 'paper'"):
        load_config(DemoConfig, None, ["data.protocol=paper"])
    with pytest.raises(ConfigError, match=r"data\.options\.protocol"):
        load_config(DemoConfig, None, ["data.options={protocol: simo}"])
    # nyuv2 (npy layout) has no 'val' split under the default protocol: the protocol reached the loader
    cfg = load_config(DemoConfig, None, ["data.name=nyuv2", f"data.root={tmp_path}"])
    with pytest.raises(ValueError, match="protocol 'default' has splits train, test; got 'val'"):
        build_split(cfg.data, "val", seed=0)


def test_demo_refuses_a_siso_pool_at_start_pointing_to_the_chain(tmp_path, capsys):
    from simo_merge.cli import main

    args = ["demo", "data.name=idx", "data.tasks=[a]", f"data.per_task.a={{root: {tmp_path}}}"]
    assert main([*args, f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "data.per_task=['a']: the demo runs SIMO data" in err
    assert "simo-merge train-experts (data.per_task) -> merge method.grid=[...] split=val" in err
    assert not (tmp_path / "run" / "experts").exists()  # refused before any training


def test_train_experts_per_task_needs_a_given_theta0(tmp_path, capsys):
    from simo_merge.cli import main

    args = ["train-experts", "data.name=idx", "data.tasks=[a]", f"data.per_task.a={{root: {tmp_path}}}"]
    assert main([*args, f"output_dir={tmp_path / 'run'}"]) == 2
    assert (
        "θ0 pretraining reads one shared data set; give θ0 as encoder.checkpoint" in capsys.readouterr().err
    )
    assert not (tmp_path / "run" / "experts").exists()


def test_evaluate_takes_one_checkpoint_or_a_list():
    from simo_merge.jobs.evaluate import EvaluateConfig, output_path

    one = load_config(EvaluateConfig, None, ["pool.dir=p", "checkpoint=runs/a/merged.safetensors"])
    assert one.checkpoints() == ["runs/a/merged.safetensors"]
    assert output_path(one).as_posix() == "runs/a/merged.metrics.json"
    two = load_config(
        EvaluateConfig, None, ["pool.dir=p", "checkpoint=[runs/a/m.safetensors,runs/b/m.safetensors]"]
    )
    assert two.checkpoints() == ["runs/a/m.safetensors", "runs/b/m.safetensors"]
    assert output_path(two).as_posix() == "runs/a/evaluate.metrics.json"
    with pytest.raises(ConfigError, match="adapters=ad.safetensors needs checkpoint= .* got 2 checkpoints"):
        load_config(EvaluateConfig, None, ["pool.dir=p", "checkpoint=[a,b]", "adapters=ad.safetensors"])
