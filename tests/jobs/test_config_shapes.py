"""One config shape for "merge method + params" (MethodSpec) and one for realignment settings
(RealignSettings): the older keys load to the same configs, and bad names / values name their key."""

from __future__ import annotations

import warnings

import pytest

from simo_merge.config import ConfigError, load_config
from simo_merge.jobs.clip8 import Clip8Config, method_params, row_keys
from simo_merge.jobs.demo import DemoConfig
from simo_merge.jobs.merge import MergeJobConfig
from simo_merge.merging.spec import MethodSpec, method_specs
from simo_merge.realign.config import RealignSettings
from tests.helpers import REPO

OLD_DEMO = [
    "merge.methods=[weight_average, task_arithmetic, ties]",
    "merge.params={ties: {k: 20}}",
    "realign.realigners=[surgery, heads]",
    "realign.params={}",
    "realign.steps=7",
    "realign.rank=8",
    "realign.objectives={heads: supervised}",
    "realign.recipes={surgery: simo}",
    "full=true",
    "data_dependent.methods=[adamerging, fisher]",
    "data_dependent.realign_on=[]",
    "data_dependent.params={adamerging: {steps: 2}, fisher: {num_batches: 1}}",
    "data_free.methods=[lines, iso_c]",
    "data_free.params={iso_c: {lam: 1.5}}",
    "data_free.grids={lines: [0.2, 0.9]}",
]
NEW_DEMO = [
    "merge.methods=[weight_average, task_arithmetic, {name: ties, params: {k: 20}}]",
    "realign.realigners=[{name: surgery, params: {recipe: simo}},"
    " {name: heads, params: {objective: supervised}}]",
    "realign.params={steps: 7, rank: 8}",
    "full=true",
    "data_dependent.methods=[{name: adamerging, params: {steps: 2}},"
    " {name: fisher, params: {num_batches: 1}}]",
    "data_dependent.realign_on=[]",
    "data_free.methods=[{name: lines, grid: [0.2, 0.9]}, {name: iso_c, params: {lam: 1.5}}]",
]


def _demo(overrides: list[str]) -> DemoConfig:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return load_config(DemoConfig, None, overrides)


def _settings(cfg: DemoConfig) -> dict:
    """What the demo runs: method specs per section and each realigner's training config."""
    rc = cfg.realign.current()
    free = cfg.realign.current(cfg.data_free.realigners)
    return {
        "merge": cfg.merge.specs(),
        "data_dependent": cfg.data_dependent.specs(),
        "data_free": cfg.data_free.specs(),
        "realign": {r: rc.config(r, seed=1) for r in rc.names()},
        "data_free_realign": {r: free.config(r, seed=1) for r in free.names()},
    }


def test_demo_sweep_in_old_and_new_shape_loads_to_equal_configs():
    old, new = _settings(_demo(OLD_DEMO)), _settings(_demo(NEW_DEMO))
    assert old == new
    assert new["data_free"][0] == MethodSpec("lines", grid=[0.2, 0.9])
    surgery, heads = new["realign"]["surgery"], new["realign"]["heads"]
    assert (surgery.steps, surgery.rank, surgery.recipe, surgery.objective) == (7, 8, "simo", "unsupervised")
    assert heads.objective == "supervised"


def test_old_demo_keys_warn_and_new_ones_do_not():
    with pytest.warns(FutureWarning, match="merge.params is deprecated"):
        load_config(DemoConfig, None, ["merge.params={ties: {k: 20}}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        load_config(DemoConfig, None, NEW_DEMO)  # the default config itself is in the new shape


def test_shipped_demo_config_equals_the_old_defaults():
    """configs/demo.yaml (new shape) runs what its older form ran."""
    shipped = load_config(DemoConfig, REPO / "configs" / "demo.yaml")
    old = _demo(
        [
            "merge.methods=[weight_average, task_arithmetic, ties]",
            "merge.params={ties: {k: 20}}",
            "realign.realigners=[surgery, deep, shared-deep, taps, heads]",
            "realign.params={}",
            "realign.steps=100",
            "realign.rank=16",
            "realign.objectives={heads: supervised}",
            "realign.split=test",
            "realign.test_time=true",
        ]
    )
    assert _settings(shipped)["merge"] == _settings(old)["merge"]
    assert _settings(shipped)["realign"] == _settings(old)["realign"]


def test_clip8_old_and_new_shape_load_to_equal_configs_and_row_keys():
    common = ["checkpoints=/c", "data=/d"]
    old = [*common, "methods=[task_arithmetic, ties]", "method_params={ties: {k: 10}}"]
    old += ["realign=[surgery]", "realign_steps=3", "realign_params={batch_size: 4}"]
    new = [*common, "methods=[task_arithmetic, {name: ties, params: {k: 10}}]"]
    new += ["realign=[surgery]", "realign_params={steps: 3, batch_size: 4}"]
    with pytest.warns(FutureWarning):
        a = load_config(Clip8Config, None, old)
    b = load_config(Clip8Config, None, new)
    assert a.specs() == b.specs() and method_params(a, "ties") == method_params(b, "ties")
    assert method_params(b, "ties") == {"k": 10, "lam": 0.3, "merge_func": "sum"}
    assert a.realign_settings().config("surgery") == b.realign_settings().config("surgery")
    assert row_keys(a) == row_keys(b)  # resumed runs keep their rows


def test_merge_job_method_is_a_method_spec():
    cfg = load_config(MergeJobConfig, None, ["pool.kind=toy", "method.name=ties", "method.params={k: 20}"])
    assert cfg.method == MethodSpec("ties", {"k": 20})
    with pytest.raises(ConfigError, match="method.grid"):
        load_config(MergeJobConfig, None, ["pool.kind=toy", "method.grid=[0.3]"])


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
    ],
)
def test_bad_method_or_setting_names_its_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DemoConfig, None, [override])


def test_clip8_bad_names_name_their_key():
    common = ["checkpoints=/c", "data=/d"]
    with pytest.raises(ConfigError, match=r"methods\[1\].params.ties: unknown hyper-parameter\(s\) \['q'\]"):
        load_config(Clip8Config, None, [*common, "methods=[task_arithmetic, {name: ties, params: {q: 1}}]"])
    with pytest.raises(ConfigError, match="realign: unknown realigner 'srgery'"):
        load_config(Clip8Config, None, [*common, "realign=[srgery]"])
    with pytest.raises(ConfigError, match=r"realign_params: unknown realignment setting\(s\) \['seed'\]"):
        load_config(Clip8Config, None, [*common, "realign=[surgery]", "realign_params={seed: 1}"])


def test_library_shapes_from_python():
    specs = method_specs(
        ["task_arithmetic", {"name": "ties", "params": {"k": 20}}], "methods", {"ties": {"lam": 1}}
    )
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
