"""Every numeric setting is finite and in range, and every data/method setting that cannot work is
refused when the config loads, with one line naming the key (issue 25, items 7 and 13)."""

from __future__ import annotations

import pytest

from simo_merge.cli import main
from simo_merge.config import ConfigError, load_config
from simo_merge.realign.config import RealignConfig
from tests.helpers.toy_states import TINY_ENCODER, write_dense_pool


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return write_dense_pool(tmp_path_factory.mktemp("pool"), TINY_ENCODER, ["semseg", "depth"], 0.05)


CASES = [
    # item 7: realign numbers
    ("realign", "realign.params.lr=1e309", "realign.params.lr=inf: must be a finite number"),
    ("realign", "realign.params.lr=0", "realign.params.lr=0: must be > 0"),
    ("realign", "realign.params.weight_decay=-1", "realign.params.weight_decay=-1: must be >= 0"),
    ("realign", "realign.params.clip_grad=.nan", "realign.params.clip_grad=nan: must be a finite number"),
    ("realign", "realign.params.clip_grad=abc", "realign.params.clip_grad='abc': must be a float"),
    ("realign", "realign.params.batch_size=0", "realign.params.batch_size=0: must be >= 1"),
    ("realign", "cache_memory_mb=-inf", "cache_memory_mb=-inf: must be a finite number"),
    ("realign", "seed=-1", "seed=-1: must be in [0, 2**32)"),
    ("realign", "threads=0", "threads=0: must be >= 1"),
    ("realign", "realign.realigners=[{name: deep, params: {lr: 1e309}}]", "realigners[0].params.lr=inf"),
    # item 7: affinity numbers and λ
    ("affinity", "k=0", "k=0.0: must be in (0, 100]"),
    ("affinity", "cluster_threshold=1e309", "cluster_threshold=inf: must be a finite number"),
    (
        "affinity",
        "transfer_lambdas=[0.5,20]",
        "transfer_lambdas[1]=20.0: |λ| > 10; set allow_large_lambda=true",
    ),
    # item 7: merge λ (opt-in below)
    ("merge", "method.params.lam=-11", "method.params.lam=-11: |λ| > 10"),
    # item 13
    ("merge", "method.transforms.dare=0.5", "method.transforms.dare=0.5: a transform takes a mapping"),
    ("evaluate", "data.size=[30,30]", "data.size=[30, 30]: the encoder takes [32, 32] images"),
    ("evaluate", "data.name=nyuv2", "data.root: data set 'nyuv2' reads files; give data.root=DIR"),
    (
        "evaluate",
        "data.options={foo: 1}",
        "data.options: data set 'synthetic_scenes' takes no option(s) ['foo']",
    ),
    ("evaluate", "threads=-1", "threads=-1: must be >= 1"),
    ("realign", "realign.params.recipe=simo|realign.params.epochs=1e309", "realign.params.epochs=inf"),
    ("affinity", "transfer_lambdas={a: 1}", "invalid value for key 'transfer_lambdas'"),
]


@pytest.mark.parametrize("command,override,message", CASES)
def test_bad_settings_fail_at_load_naming_the_key(pool, tmp_path, capsys, command, override, message):
    out = tmp_path / "out"
    target = f"output={out}/m.json" if command == "evaluate" else f"output_dir={out}"
    assert main([command, f"pool.dir={pool}", *override.split("|"), target]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert [p.name for p in out.rglob("*")] in ([], [".simo_merge.lock"])  # nothing written


def test_train_experts_checks_the_image_size_against_the_encoder(tmp_path, capsys):
    assert main(["train-experts", "data.size=[30,30]", f"output_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert "data.size=[30, 30]: the encoder takes [64, 64] images (encoder.kwargs.img_size)" in err


def test_a_large_lambda_needs_the_opt_in(pool, tmp_path, capsys):
    args = ["merge", f"pool.dir={pool}", "method.params.lam=12", f"output_dir={tmp_path / 'out'}"]
    assert main(args) == 2 and "allow_large_lambda=true" in capsys.readouterr().err
    assert main([*args, "allow_large_lambda=true"]) == 0
    assert (tmp_path / "out" / "merged.safetensors").is_file()


def test_realign_params_of_every_field_are_checked_by_one_rule_table():
    from simo_merge.jobs.realign import RealignJobConfig

    for name, bad in (("warmup", 1.0), ("fraction", 0.0), ("rank", 0), ("steps", -1)):
        assert hasattr(RealignConfig, name)
        with pytest.raises(ConfigError, match=rf"realign.params.{name}={bad!r}: must be"):
            load_config(RealignJobConfig, None, ["pool.kind=toy", f"realign.params.{name}={bad}"])
