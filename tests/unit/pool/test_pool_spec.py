"""The one pool spec of every command: files / folder / toy, mixing errors, the pool's encoder, tasks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from simo_merge.cli import main
from simo_merge.config import ConfigError, EncoderConfig, PoolConfig
from simo_merge.encoders import build_encoder
from simo_merge.io.checkpoint import load_state, read_sidecar, save_state
from simo_merge.merging import merge
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.pool.spec import check_checkpoint_encoder, pool_kind, resolve_pool, stored_encoder_config
from tests.helpers import REPO

CLIP = {"library": "open_clip", "arch": "ViT-Tiny-8", "kwargs": {}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """θ0 (a tiny open_clip tower, its encoder config in the sidecar) and two experts, as files."""
    root = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    base = build_encoder("open_clip", "ViT-Tiny-8").model_state()
    gen = torch.Generator().manual_seed(1)
    save_state(root / "theta0.safetensors", base, {"encoder": CLIP})
    for task in ("a", "b"):
        expert = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        save_state(root / f"{task}.safetensors", expert, {"task": task})
    return root


def test_the_exact_files_command_merges_those_files(files, tmp_path, capsys):
    """Issue 17 item 1: no toy pool behind the user's back; the sidecar records the pool's encoder."""
    code = main(
        [
            "merge",
            f"pool.base={files}/theta0.safetensors",
            f"pool.experts.a={files}/a.safetensors",
            f"pool.experts.b={files}/b.safetensors",
            f"output_dir={tmp_path}",
        ]
    )
    assert code == 0, capsys.readouterr().err
    pool = ExpertPool.from_files(files / "theta0.safetensors", {t: files / f"{t}.safetensors" for t in "ab"})
    expected = merge(pool, "task_arithmetic")
    got = load_state(tmp_path / "merged.safetensors")
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    meta = read_sidecar(tmp_path / "merged.safetensors")
    assert meta["encoder"] == CLIP  # θ0's, not the CLI's default vit_tiny_patch16_224
    assert meta["tasks"] == ["a", "b"] and meta["pool"]["kind"] == "files"
    assert meta["hyperparameters"] == {"lam": 0.3}  # the default, recorded
    assert meta["sources"]["a"].endswith("a.safetensors")
    assert "merged 2 experts (a, b)" in capsys.readouterr().out


def test_resolved_parameters_include_transform_defaults(files, tmp_path):
    code = main(
        [
            "merge",
            f"pool.dir={files}",
            "pool.kind=files",
            f"pool.base={files}/theta0.safetensors",
            f"pool.experts.a={files}/a.safetensors",
            f"output_dir={tmp_path}",
        ]
    )
    assert code == 2  # a folder and files at once
    code = main(
        [
            "merge",
            f"pool.base={files}/theta0.safetensors",
            f"pool.experts={{a: {files}/a.safetensors, b: {files}/b.safetensors}}",
            "method.name=ties",
            "method.params.k=50",
            "method.transforms={dare: {p: 0.5}}",
            f"output_dir={tmp_path}",
        ]
    )
    assert code == 0
    meta = read_sidecar(tmp_path / "merged.safetensors")
    assert meta["hyperparameters"] == {"k": 50, "lam": 1.0, "merge_func": "mean"}
    assert meta["transforms"] == {"dare": {"p": 0.5, "seed": 0}}
    assert meta["given"] == {"hyperparameters": {"k": 50}, "transforms": {"dare": {"p": 0.5}}}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["pool.kind=toy", "pool.base=x.safetensors"], "pool.kind=toy generates its own experts"),
        (["pool.dir=somewhere", "pool.base=x.safetensors", "pool.experts.a=a"], "not both"),
        (["pool_dir=a"], "invalid config at key 'pool_dir'"),  # one way to name a folder: pool.dir
        (["pool.experts.a=a.safetensors"], "missing pool.base"),
        ([], "no pool given"),
        (["pool.kind=zip"], "pool.kind must be one of"),
    ],
)
def test_pool_spec_errors_on_every_command(args, needle, tmp_path, capsys):
    for command in ("merge", "evaluate", "realign", "affinity"):
        assert (
            main([command, *args, f"output_dir={tmp_path}"] if command != "evaluate" else [command, *args])
            == 2
        )
        err = capsys.readouterr().err
        assert needle in err, (command, err)
        assert f"simo-merge {command}: error:" in err


def test_encoder_given_must_match_the_pool(files, tmp_path, capsys):
    common = [f"pool.base={files}/theta0.safetensors", f"pool.experts.a={files}/a.safetensors"]
    out = [f"output_dir={tmp_path}"]
    assert main(["merge", *common, "encoder.arch=vit_small_patch14_dinov2", *out]) == 2
    err = capsys.readouterr().err
    assert "differs from the pool's encoder" in err and "ViT-Tiny-8" in err and "theta0.safetensors" in err
    assert main(["merge", *common, "encoder.library=open_clip", "encoder.arch=ViT-Tiny-8", *out]) == 0
    assert read_sidecar(tmp_path / "merged.safetensors")["encoder"] == CLIP
    pool = resolve_pool(
        PoolConfig(base=str(files / "theta0.safetensors"), experts={"a": str(files / "a.safetensors")})
    )
    check_checkpoint_encoder(pool, tmp_path / "merged.safetensors")  # same encoder: accepted
    other = tmp_path / "other.safetensors"
    save_state(
        other, load_state(tmp_path / "merged.safetensors"), {"encoder": {"library": "timm", "arch": "x"}}
    )
    with pytest.raises(ConfigError, match="was merged for encoder .*timm.* but the pool's is .*ViT-Tiny-8"):
        check_checkpoint_encoder(pool, other)


def test_encoder_without_a_sidecar(files, tmp_path):
    """θ0 with no sidecar: the encoder comes from safetensors metadata, or the user, or is recorded as
    unknown (never a made-up default); commands that rebuild models ask for it."""
    state = load_state(files / "theta0.safetensors")
    bare = tmp_path / "bare.safetensors"
    save_file(state, str(bare))
    assert stored_encoder_config(bare) is None
    meta = tmp_path / "meta.safetensors"
    save_file(state, str(meta), metadata={"simo_merge": json.dumps({"encoder": CLIP})})
    assert stored_encoder_config(meta) == CLIP
    spec = PoolConfig(base=str(bare), experts={"a": str(files / "a.safetensors")})
    assert resolve_pool(spec).encoder_config == {}
    given = EncoderConfig("open_clip", "ViT-Tiny-8")
    assert resolve_pool(spec, encoder=given).encoder_config == CLIP
    with pytest.raises(ConfigError, match="records no encoder config: give encoder.library"):
        resolve_pool(spec, need_encoder=True)
    with pytest.raises(ConfigError, match=r"task\(s\) \['a'\] have no head: give pool.heads.<task>"):
        resolve_pool(spec, encoder=given, need_heads=True)
    out = tmp_path / "run"
    assert (
        main(["merge", f"pool.base={bare}", f"pool.experts.a={files}/a.safetensors", f"output_dir={out}"])
        == 0
    )
    assert read_sidecar(out / "merged.safetensors")["encoder"] is None


def test_tasks_default_to_the_pools_and_unknown_tasks_are_named(files):
    spec = PoolConfig(
        base=str(files / "theta0.safetensors"),
        experts={t: str(files / f"{t}.safetensors") for t in "ab"},
    )
    assert resolve_pool(spec).tasks == ["a", "b"]
    assert resolve_pool(spec, tasks=["b"]).tasks == ["b"]
    with pytest.raises(
        ConfigError, match=r"task\(s\) \['semseg'\] have no expert in the pool .*its tasks: a, b"
    ):
        resolve_pool(spec, tasks=["semseg"])
    spec.tasks = ["a"]
    assert resolve_pool(spec).tasks == ["a"]
    with pytest.raises(ConfigError, match="disagree"):
        resolve_pool(spec, tasks=["b"])


def test_pool_kind_inference():
    assert pool_kind(PoolConfig(dir="p")) == "dir"
    assert pool_kind(PoolConfig(base="t", experts={"a": "a"})) == "files"
    assert pool_kind(PoolConfig(kind="toy")) == "toy"
    with pytest.raises(ConfigError, match="pool.kind=dir needs pool.dir"):
        pool_kind(PoolConfig(kind="dir"))


def test_per_task_data_sections():
    from simo_merge.data import DataConfig, task_data, task_groups

    cfg = DataConfig(
        tasks=None,
        size=[32, 32],
        splits={"train": "train", "val": "val", "test": "test"},
        options={"image_size": 32},
        per_task={"dtd": {"name": "dtd", "root": "/b", "splits": {"test": "val"}}},
    )
    dtd = task_data(cfg, "dtd")
    assert (dtd.name, dtd.root, dtd.tasks, dtd.per_task) == ("dtd", "/b", ["dtd"], {})
    assert dtd.splits == {"train": "train", "val": "val", "test": "val"}  # merged key by key
    assert dtd.options == {"image_size": 32} and dtd.size == [32, 32]  # the shared section's
    groups = task_groups(cfg, ["semseg", "dtd"])
    assert [(g.name, ts) for g, ts in groups] == [("synthetic_scenes", ["semseg"]), ("dtd", ["dtd"])]
    with pytest.raises(ConfigError, match=r"data.per_task has task\(s\) \['dtd'\] that are not among"):
        task_groups(cfg, ["semseg"])
    cfg.per_task["dtd"]["split"] = "val"
    with pytest.raises(ConfigError, match=r"data.per_task.dtd: unknown key\(s\) \['split'\] \(use splits:"):
        task_data(cfg, "dtd")


def test_the_readme_pool_config_loads_on_every_command(tmp_path):
    """The README's real-checkpoint ``clip_pool.yaml`` is a valid config of merge, realign, evaluate and
    affinity, and describes a files pool with one data set per task."""

    from simo_merge.config import load_config
    from simo_merge.data import task_groups
    from simo_merge.jobs.affinity import AffinityJobConfig
    from simo_merge.jobs.evaluate import EvaluateConfig
    from simo_merge.jobs.merge import MergeJobConfig
    from simo_merge.jobs.realign import RealignJobConfig

    readme = (REPO / "README.md").read_text()
    block = readme.split("`clip_pool.yaml`:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "clip_pool.yaml"
    path.write_text(block)
    for schema in (MergeJobConfig, RealignJobConfig, EvaluateConfig, AffinityJobConfig):
        cfg = load_config(schema, path, ["checkpoint=m.safetensors"] if hasattr(schema, "checkpoint") else [])
        assert pool_kind(cfg.pool) == "files"
        assert cfg.encoder == EncoderConfig("open_clip", "ViT-B-32")
        groups = task_groups(cfg.data, list(cfg.pool.experts))
        assert [(g.name, g.splits["test"], g.splits["val"]) for g, _ in groups] == [
            ("mnist", "test", "train"),
            ("eurosat", "test", "val"),
            ("dtd", "test", "val"),  # DTD's val: DTDVal, held out of its train folder; test: its val folder
        ]
