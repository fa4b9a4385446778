"""The CLIP eight-task bench end to end on tiny fixtures: eight real data formats, task_vectors pickles."""

from __future__ import annotations

import csv
import json
import math
import sys
import types
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from simo_merge.config import ConfigError, load_config
from simo_merge.datasets.clip8 import CLIP8_TASKS
from simo_merge.encoders import build_encoder
from simo_merge.encoders.open_clip_vit import register_small_configs
from simo_merge.io.checkpoint import CheckpointError
from simo_merge.jobs import clip as clip_bench
from simo_merge.jobs.clip import ClipConfig, row_keys
from simo_merge.jobs.clip import run as run_clip
from simo_merge.realign.config import RealignSettings
from simo_merge.taskpool import TaskPool
from tests.helpers.clip8_fixture import ARCH, NAMES, STANDIN, record_models, tv_classes
from tests.helpers.clip8_fixture import overrides as _overrides


# ------------------------------------------------------------------------------------------- tests
@pytest.mark.slow
def test_end_to_end_tables_and_resume(fixture_dirs, tmp_path, monkeypatch):
    root, text = fixture_dirs
    out = tmp_path / "run"
    cfg = load_config(ClipConfig, STANDIN, _overrides(root, text, out))
    assert cfg.model == ARCH and cfg.methods == ["task_arithmetic", "ties"]
    assert cfg.realign == RealignSettings(["surgery"], {"steps": 3, "batch_size": 4})
    from simo_merge.pool.clip_layout import detect_layout

    assert detect_layout(root / "ckpt", ARCH, cfg.task_list()) == "task_vectors"
    states, realigned = record_models(monkeypatch)
    result = run_clip(cfg)
    # the models evaluated: θ0, the eight experts in order, θ0 + 0.3 Σ τt (task arithmetic), then TIES
    from simo_merge.pool.clip_layout import load_task_vectors_encoder

    tv_dir = root / "ckpt" / ARCH
    theta0 = load_task_vectors_encoder(tv_dir / "zeroshot.pt", allow_pickle=True)
    experts = [
        load_task_vectors_encoder(tv_dir / NAMES[t] / "finetuned.pt", allow_pickle=True) for t in CLIP8_TASKS
    ]
    assert len(states) == 11 and torch.equal(states[0]["conv1.weight"], theta0["conv1.weight"])
    for got, want in zip(states[1:9], experts, strict=True):
        assert torch.equal(got["proj"], want["proj"])
    key = "transformer.resblocks.1.mlp.c_fc.weight"
    ta = theta0[key] + 0.3 * sum(e[key] - theta0[key] for e in experts)
    torch.testing.assert_close(states[9][key], ta)
    assert not torch.allclose(states[10][key], ta)  # ties differs
    assert [r for _, r in realigned] == ["surgery", "surgery"] and realigned[0][0] is states[9]
    expected_rows = ["Pretrained", "Individual", "task_arithmetic", "task_arithmetic+surgery"]
    expected_rows += ["ties", "ties+surgery"]
    assert list(result["rows"]) == expected_rows and result["computed"] == expected_rows
    assert result["layout"] == "task_vectors"
    cols = ["SUN397", "Cars", "RESISC45", "EuroSAT", "SVHN", "GTSRB", "MNIST", "DTD"]
    assert result["datasets"] == cols
    for name, row in result["rows"].items():
        acc = row["accuracy"]
        assert list(acc) == list(CLIP8_TASKS)
        # 4 test images per task: accuracies are multiples of 25 %
        assert all(v in (0.0, 25.0, 50.0, 75.0, 100.0) for v in acc.values()), (name, acc)
        assert row["avg"] == pytest.approx(sum(acc.values()) / 8)
    ind = result["rows"]["Individual"]
    # centroid heads of the experts classify their own (class-coloured) test images
    assert all(ind["accuracy"][t] > 0 for t in CLIP8_TASKS if t != "dtd")
    for t in CLIP8_TASKS:
        assert ind["normalized"][t] == (pytest.approx(100.0) if ind["accuracy"][t] > 0 else None)
    ta = result["rows"]["task_arithmetic"]
    t0 = next(t for t in CLIP8_TASKS if ind["accuracy"][t] > 0)
    assert ta["normalized"][t0] == pytest.approx(100 * ta["accuracy"][t0] / ind["accuracy"][t0])

    # files
    files = {p.name for p in out.iterdir()}
    assert {"results.md", "results.csv", "results.json", "results.png", "rows"} <= files
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((out / "results.json").read_text())
    assert stored["rows"]["ties"]["accuracy"] == result["rows"]["ties"]["accuracy"]
    md = (out / "results.md").read_text()
    assert "| Method | " + " | ".join(cols) + " | Avg. |" in md and "Normalised accuracy" in md
    table = list(csv.reader((out / "results.csv").read_text().splitlines()))
    assert table[0] == ["row", "metric", "unit", *cols, "Avg."]
    assert {r[2] for r in table[1:]} == {"%"} and stored["units"]["accuracy"] == "%"
    assert [r[0] for r in table[1:7]] == expected_rows and {r[1] for r in table[1:]} == {
        "accuracy",
        "normalized",
    }
    assert float(table[2][3]) == pytest.approx(ind["accuracy"]["sun397"])
    assert sorted(p.stem for p in (out / "rows").glob("*.json")) == sorted(expected_rows)

    # resume: nothing recomputed, same numbers
    calls = []  # the rows evaluated, by name
    real = TaskPool.evaluate_model
    monkeypatch.setattr(
        TaskPool,
        "evaluate_model",
        lambda self, m, tasks=None, desc="": calls.append(desc) or real(self, m, tasks, desc),
    )
    again = run_clip(load_config(ClipConfig, STANDIN, _overrides(root, text, out, "progress=false")))
    assert calls == [] and again["computed"] == [] and again["rows"] == result["rows"]
    # a changed ties λ recomputes ties and ties+surgery only; a deleted row file is recomputed
    (out / "rows" / "Pretrained.json").unlink()
    ties = "methods=[task_arithmetic, {name: ties, params: {lam: 1.0}}]"
    third = run_clip(load_config(ClipConfig, STANDIN, _overrides(root, text, out, ties)))
    assert third["computed"] == ["Pretrained", "ties", "ties+surgery"]
    assert calls == ["Pretrained", "ties", "ties+surgery"]
    assert third["rows"]["Pretrained"] == result["rows"]["Pretrained"]


def test_open_clip_layout_text_heads_and_errors(fixture_dirs, tmp_path):
    root, text = fixture_dirs
    ckpt = tmp_path / "oc" / ARCH
    ckpt.mkdir(parents=True)
    from safetensors.torch import load_file

    whole = load_file(str(text))
    save_file(whole, str(ckpt / "zeroshot.safetensors"))
    visual = {k[len("visual.") :]: v for k, v in whole.items() if k.startswith("visual.")}
    save_file({k: (v + 0.01).contiguous() for k, v in visual.items()}, str(ckpt / "MNIST.safetensors"))
    save_file(visual, str(ckpt / "SVHN.safetensors"))
    cfg = ClipConfig(
        model=ARCH,
        checkpoints=str(tmp_path / "oc"),
        data=str(root / "data"),
        tasks=["mnist", "svhn"],
        methods=[
            "task_arithmetic",
            {"name": "adamerging", "params": {"steps": 2}},
            {"name": "fisher", "params": {"num_batches": 1}},
            {"name": "regmean", "params": {"num_batches": 1}},
        ],
        max_unlabelled=3,
        output_dir=str(tmp_path / "out"),
        progress=False,
    )
    result = run_clip(cfg)  # heads from the whole-CLIP zeroshot file's text tower
    assert result["layout"] == "open_clip"
    methods = ["task_arithmetic", "adamerging", "fisher", "regmean"]
    assert list(result["rows"]) == ["Pretrained", "Individual", *methods]
    # the SVHN expert is θ0 itself: Pretrained and Individual agree there
    rows = result["rows"]
    assert rows["Pretrained"]["accuracy"]["svhn"] == rows["Individual"]["accuracy"]["svhn"]
    assert set(rows["task_arithmetic"]["accuracy"]) == {"mnist", "svhn"}

    real = load_config(
        ClipConfig,
        STANDIN.parent / "clip.yaml",
        ["methods=[ties,adamerging]", "realign.realigners=[surgery]"],
    )
    assert (real.model, real.task_list(), real.methods, real.realign) == (
        "ViT-B-32",
        list(CLIP8_TASKS),
        ["ties", "adamerging"],
        RealignSettings(["surgery"], {"steps": 500}),
    )
    assert real.test_splits == {"sun397": "val"} and not real.allow_pickle
    with pytest.raises(ConfigError, match="unknown merge method 'nope'"):
        load_config(ClipConfig, None, ["checkpoints=a", "data=b", "methods=[nope]"])
    with pytest.raises(ConfigError, match="tasks: unknown"):
        load_config(ClipConfig, None, ["checkpoints=a", "data=b", "tasks=[imagenet]"])
    with pytest.raises(ConfigError, match="checkpoints: set"):
        run_clip(ClipConfig(data="x"))
    with pytest.raises(FileNotFoundError, match="zeroshot.safetensors"):
        run_clip(ClipConfig(model="ViT-B-32", checkpoints=str(tmp_path / "oc"), data=str(root / "data")))
    bad = ClipConfig(**{**cfg.__dict__, "checkpoints": str(root / "ckpt"), "tasks": ["dtd"]})
    with pytest.raises(CheckpointError, match="allow_pickle"):
        run_clip(bad)  # task_vectors pickles need allow_pickle
    bad.allow_pickle = True
    with pytest.raises(FileNotFoundError, match="text_checkpoint"):
        run_clip(bad)  # no head_DTD.pt and task_vectors' zeroshot.pt has no text tower
    assert (
        row_keys(cfg)["Pretrained"]
        != row_keys(ClipConfig(**{**cfg.__dict__, "image_size": 64}))["Pretrained"]
    )
    assert not math.isnan(rows["Individual"]["avg"])


def test_bench_command_on_the_standin(fixture_dirs, tmp_path, capsys):
    from simo_merge.cli import main

    root, text = fixture_dirs
    out = tmp_path / "cli"
    code = main(
        [
            "bench",
            "clip",
            "--config",
            str(STANDIN),
            "--checkpoints",
            str(root / "ckpt"),
            "--data",
            str(root / "data"),
            f"text_checkpoint={text}",
            f"output_dir={out}",
            "methods=[task_arithmetic]",
            "progress=false",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "SUN397" in printed and "task_arithmetic+surgery" in printed
    for name in ("results.md", "results.csv", "results.json", "results.png"):
        assert (out / name).is_file(), name
    assert (
        main(["bench", "clip", "--config", str(STANDIN), "--data", str(root / "data"), f"output_dir={out}"])
        == 2
    )
    assert "checkpoints" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- QuickGELU
def _write_quickgelu_task_vectors(root: Path) -> tuple[Path, torch.nn.Module]:
    """A task_vectors layout (zeroshot.pt, MNIST/finetuned.pt, head_MNIST.pt) of a QuickGELU CLIP, as the
    OpenAI-initialised task_vectors checkpoints are; returns the folder and the original visual tower."""
    register_small_configs()
    torch.manual_seed(3)
    clip = open_clip.create_model(ARCH, pretrained=None, force_quick_gelu=True).eval()
    del clip.transformer
    image_encoder, head_cls = tv_classes()
    src, modeling = types.ModuleType("src"), types.ModuleType("src.modeling")
    modeling.ImageEncoder, modeling.ClassificationHead, src.modeling = image_encoder, head_cls, modeling
    sys.modules["src"], sys.modules["src.modeling"] = src, modeling
    base = root / ARCH
    try:
        (base / "MNIST").mkdir(parents=True)
        torch.save(image_encoder(clip), base / "zeroshot.pt")
        torch.save(image_encoder(clip), base / "MNIST" / "finetuned.pt")
        torch.save(head_cls(torch.randn(10, clip.visual.output_dim)), base / "head_MNIST.pt")
    finally:
        del sys.modules["src.modeling"], sys.modules["src"]
    return root, clip.visual


def test_task_vectors_row_builds_a_quickgelu_model(fixture_dirs, tmp_path):
    from simo_merge.pool.clip_layout import load_task_vectors_encoder_and_activation

    data_root, _ = fixture_dirs
    ckpt_root, visual = _write_quickgelu_task_vectors(tmp_path / "ckpt")
    _, act = load_task_vectors_encoder_and_activation(ckpt_root / ARCH / "zeroshot.pt", allow_pickle=True)
    assert act == "quick_gelu"
    _, gelu = load_task_vectors_encoder_and_activation(
        data_root / "ckpt" / ARCH / "zeroshot.pt", allow_pickle=True
    )
    assert gelu == "gelu"  # the GELU fixture pool is told apart

    cfg = ClipConfig(
        model=ARCH, checkpoints=str(ckpt_root), data=str(data_root / "data"), tasks=["mnist"],
        allow_pickle=True, image_size=32, methods=[], output_dir=str(tmp_path / "out"), progress=False,
    )  # fmt: skip
    ckpt = clip_bench.load_checkpoints(cfg)
    assert ckpt.activation == "quick_gelu"
    assert clip_bench.resolve_architecture(cfg, ckpt) == (ARCH, True)
    taskpool = clip_bench.build_taskpool(cfg, ckpt)
    enc = taskpool.make_encoder().eval()
    acts = {type(m).__name__ for m in enc.model.modules() if "GELU" in type(m).__name__}
    assert acts == {"QuickGELU"}
    enc.load_model_state(ckpt.base)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference = visual(enc.normalize(x))  # the checkpoint's own function
        assert torch.allclose(enc(x).features, reference, atol=1e-5)
        gelu_enc = build_encoder("open_clip", ARCH).eval()
        gelu_enc.load_model_state(ckpt.base)
        assert not torch.allclose(gelu_enc(x).features, reference, atol=1e-3)  # what GELU computed before
    # the checkpoint folder name and the architecture are separate settings
    named = ClipConfig(**{**cfg.__dict__, "arch": "ViT-B-32-quickgelu", "model": "ViT-B-32"})
    assert clip_bench.resolve_architecture(named) == ("ViT-B-32-quickgelu", True)
    assert clip_bench.resolve_architecture(ClipConfig(model="ViT-B-32")) == ("ViT-B-32", False)
    assert row_keys(cfg, ckpt)["Pretrained"] != row_keys(cfg)["Pretrained"]  # GELU rows are not reused
    with pytest.raises(ConfigError, match=r"zeroshot\.pt.*QuickGELU"):
        clip_bench.resolve_architecture(ClipConfig(**{**cfg.__dict__, "quick_gelu": False}), ckpt)
