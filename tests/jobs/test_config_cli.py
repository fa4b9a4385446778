"""Config loading/validation and the `simo-merge merge` / `methods` commands."""

from __future__ import annotations

import pytest
import torch

from simo_merge.cli import main
from simo_merge.config import ConfigError, load_config
from simo_merge.io.checkpoint import load_state, read_sidecar
from simo_merge.jobs.merge import MergeJobConfig

TINY = ["encoder.kwargs={img_size: 32, patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}"]


def test_yaml_and_overrides_give_typed_objects(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pool: {kind: toy, seed: 3}\nmethod: {name: ties, params: {k: 10}}\n")
    cfg = load_config(MergeJobConfig, path, ["method.params.lam=0.5", "pool.tasks=[a,b]"])
    assert isinstance(cfg, MergeJobConfig)
    assert (cfg.pool.seed, cfg.method.params, cfg.pool.tasks) == (3, {"k": 10, "lam": 0.5}, ["a", "b"])


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("pool.sed=3", "pool.sed"),
        ("pool.seed=abc", "pool.seed"),
        ("pool.kind=zip", "'zip'"),
        ("oops", "oops"),
    ],
)
def test_bad_keys_and_values_are_named(tmp_path, override, needle):
    path = tmp_path / "c.yaml"
    path.write_text("pool: {kind: toy}\n")
    with pytest.raises(ConfigError, match=needle) as info:
        load_config(MergeJobConfig, path, [override])
    assert "c.yaml" in str(info.value)


def test_missing_pool_is_explained():
    with pytest.raises(ConfigError, match="no pool given: give a pool folder") as info:
        load_config(MergeJobConfig, None, [])
    assert "pool.base" in str(info.value) and "pool.kind=toy" in str(info.value)
    with pytest.raises(ConfigError, match="missing pool.experts"):
        load_config(MergeJobConfig, None, ["pool.base=t0.safetensors"])


def test_merge_command_writes_checkpoint_sidecar_and_config(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["merge", "pool.kind=toy", *TINY, "method.name=ties", "method.params.k=30", f"output_dir={out}"]
    )
    assert code == 0
    merged = load_state(out / "merged.safetensors")
    meta = read_sidecar(out / "merged.safetensors")
    assert meta["method"] == "ties"
    assert meta["hyperparameters"] == {"k": 30, "lam": 1.0, "merge_func": "mean"}  # + the defaults
    assert meta["given"]["hyperparameters"] == {"k": 30} and meta["pool"]["kind"] == "toy"
    assert meta["encoder"]["kwargs"]["embed_dim"] == 32  # the toy pool is built from the given encoder
    assert meta["tasks"] == ["semseg", "depth", "normal"]
    assert "blocks.1.mlp.fc2.weight" in merged and merged["blocks.1.mlp.fc2.weight"].dtype == torch.float32
    assert (out / "config.yaml").read_text().count("ties") == 1
    assert "merged 3 experts" in capsys.readouterr().out


def test_merge_command_reports_bad_input(tmp_path, capsys):
    assert (
        main(["merge", "--config", "merge_toy", *TINY, "method.params.zzz=1", f"output_dir={tmp_path}"]) == 2
    )
    assert "zzz" in capsys.readouterr().err
    assert main(["merge", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert not (tmp_path / "merged.safetensors").exists()


def test_methods_lists_registry(capsys):
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    for name in ("weight_average", "task_arithmetic", "ties", "dare"):
        assert name in text


def test_encoder_kwargs_given_as_a_mapping_replace_the_defaults(tmp_path):
    """A config that names another encoder must not inherit the default tiny ViT's patch_size/depth."""
    from simo_merge.jobs.demo import DemoConfig

    path = tmp_path / "dino.yaml"
    path.write_text(
        "encoder: {arch: vit_small_patch14_dinov2, kwargs: {img_size: [28, 42]}}\ndata: {size: [28, 42]}\n"
    )
    assert load_config(DemoConfig, path).encoder.kwargs == {"img_size": [28, 42]}
    given = ["encoder.kwargs={img_size: 28}", "data.size=[28,28]"]
    assert load_config(DemoConfig, None, given).encoder.kwargs == {"img_size": 28}
    dotted = load_config(DemoConfig, None, ["encoder.kwargs.img_size=32", "data.size=[32,32]"]).encoder.kwargs
    assert dotted == {"img_size": 32, "patch_size": 8, "depth": 6, "embed_dim": 96, "num_heads": 3}
    assert load_config(DemoConfig, path, ["encoder.kwargs.depth=2"]).encoder.kwargs == {
        "img_size": [28, 42],
        "depth": 2,
    }


@pytest.mark.parametrize("given", [[], ["--config", "demo"]])
@pytest.mark.parametrize("shadow", ["file", "folder"])
def test_builtin_config_names_are_not_shadowed_by_the_working_directory(
    tmp_path, monkeypatch, capsys, given, shadow
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text("foo: 1\n") if shadow == "file" else (tmp_path / "demo").mkdir()
    assert main(["train-experts", *given, "bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "configs/demo.yaml + overrides" in err and "key 'bogus'" in err, err
    if shadow == "file":  # the file is used when named as a path
        assert main(["train-experts", "--config", "./demo", "bogus=1"]) == 2
        assert "error: demo: invalid config at key 'foo'" in capsys.readouterr().err
