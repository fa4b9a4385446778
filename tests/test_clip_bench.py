"""The CLIP eight-task bench end to end on tiny fixtures: eight real data formats, task_vectors pickles."""

from __future__ import annotations

import csv
import gzip
import json
import math
import struct
import sys
import types
from pathlib import Path

import numpy as np
import open_clip
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from simo_merge.bench import ClassificationBench
from simo_merge.checkpoint import CheckpointError
from simo_merge.config import ConfigError, load_config
from simo_merge.datasets import build_dataset
from simo_merge.datasets.clip8 import CLIP8_TASKS
from simo_merge.encoders import build_encoder
from simo_merge.encoders.open_clip_vit import register_small_configs
from simo_merge.jobs import clip8 as clip_bench
from simo_merge.jobs.clip8 import Clip8Config, row_keys
from simo_merge.jobs.clip8 import run as run_clip8

ARCH = "ViT-Tiny-8"
NAMES = {
    "sun397": "SUN397", "cars": "Cars", "resisc45": "RESISC45", "eurosat": "EuroSAT",
    "svhn": "SVHN", "gtsrb": "GTSRB", "mnist": "MNIST", "dtd": "DTD",
}  # fmt: skip


# ------------------------------------------------------------------------------------------- data
def _img(path: Path, rng: np.random.Generator, cls: int, size: int = 12) -> None:
    """A noisy image whose mean colour depends on the class (so centroid heads can separate them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = np.array([[140, 120, 120], [120, 120, 140]][cls % 2], np.float64)
    arr = np.clip(base + rng.normal(0, 60, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)


def _folders(base: Path, rng, classes: list[str], n: int = 2, ext: str = ".png") -> None:
    for c, name in enumerate(classes):
        for i in range(n):
            _img(base / name / f"{name}_{i}{ext}", rng, c)


def _idx(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    with gzip.open(path, "wb") as f:
        f.write(data)


def _annos(rows: list[tuple[str, int]]) -> np.ndarray:
    arr = np.zeros((1, len(rows)), dtype=[("class", "O"), ("fname", "O")])
    for i, (fname, cls) in enumerate(rows):
        arr[0, i] = (np.array([[cls]], np.uint8), fname)
    return arr


def write_clip8_data(root: Path) -> None:
    """Four test images (two classes) per dataset, each in its real on-disk format."""
    rng = np.random.default_rng(0)
    _folders(root / "sun397" / "val", rng, ["a_abbey", "b_bakery"])  # SUN397's test set is "val"
    _folders(root / "resisc45" / "test", rng, ["airplane", "sea_ice"], ext=".jpg")
    _folders(root / "EuroSAT_splits" / "test", rng, ["Forest", "SeaLake"], ext=".jpg")
    _folders(root / "dtd" / "val", rng, ["banded", "woven"], ext=".jpg")  # DTD's test set is "val"
    cars = root / "stanford_cars"
    (cars / "devkit").mkdir(parents=True)
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], object).reshape(1, -1)
    scipy.io.savemat(cars / "devkit" / "cars_meta.mat", {"class_names": names})
    rows = [(f"{i:05d}.jpg", 1 + i % 2) for i in range(1, 5)]
    scipy.io.savemat(cars / "cars_test_annos_withlabels.mat", {"annotations": _annos(rows)})
    for fname, cls in rows:
        _img(cars / "cars_test" / fname, rng, cls - 1)
    gt = root / "gtsrb"
    lines = ["Filename;Width;Height;ClassId"]
    for i in range(4):
        _img(gt / "GTSRB" / "Final_Test" / "Images" / f"{i:05d}.ppm", rng, i % 2)
        lines.append(f"{i:05d}.ppm;12;12;{i % 2}")
    (gt / "GT-final_test.csv").write_text("\n".join(lines) + "\n")
    ims = [Image.open(gt / "GTSRB" / "Final_Test" / "Images" / f"{i:05d}.ppm") for i in range(4)]
    x = np.stack([np.asarray(im.resize((32, 32))) for im in ims], -1)
    (root / "svhn").mkdir()
    scipy.io.savemat(
        root / "svhn" / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [10], [1]], np.uint8)}
    )
    digits = (x.mean(2).transpose(2, 0, 1)[:, ::2, ::2]).astype(np.uint8)  # [4, 16, 16] grey
    _idx(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz", digits)
    _idx(root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 0, 1], np.uint8))


# ------------------------------------------------------------------------------------ checkpoints
def _tv_classes() -> tuple[type, type]:
    """Stand-ins for task_vectors' ``src.modeling`` classes (pickled under that module name)."""

    class ImageEncoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

    class ClassificationHead(torch.nn.Linear):
        def __init__(self, weights):
            super().__init__(weights.shape[1], weights.shape[0])
            self.normalize = True
            self.weight = torch.nn.Parameter(weights.clone())
            self.bias = torch.nn.Parameter(torch.zeros(weights.shape[0]))

    for cls in (ImageEncoder, ClassificationHead):
        cls.__module__, cls.__qualname__ = "src.modeling", cls.__name__
    return ImageEncoder, ClassificationHead


@torch.no_grad()
def _centroid_head(visual_state: dict, data: Path, task: str) -> torch.Tensor:
    """Class-mean features of the expert on its test images (x100), absent classes pushed away."""
    enc = build_encoder("open_clip", ARCH).eval()
    enc.load_model_state(visual_state)
    ds = build_dataset(task, root=data, split=clip_bench.split_of(Clip8Config(), task), image_size=32)
    feats = F.normalize(enc(torch.stack([ds[i]["image"] for i in range(len(ds))])).features, dim=-1)
    labels = torch.tensor(ds.targets)
    weight = torch.zeros(ds.num_classes, feats.shape[1])
    for c in labels.unique():
        weight[c] = F.normalize(feats[labels == c].mean(0), dim=0)
    absent = [c for c in range(ds.num_classes) if c not in labels.tolist()]
    weight[absent] = -F.normalize(feats.mean(0), dim=0)
    return 100 * weight


def write_task_vectors(root: Path, data: Path, skip_head: str = "dtd") -> Path:
    """``<root>/ViT-Tiny-8/{zeroshot.pt, <Dataset>/finetuned.pt, head_<Dataset>.pt}`` as task_vectors
    pickles (experts = θ0 + noise); returns a whole-CLIP safetensors usable as text_checkpoint."""
    register_small_configs()
    torch.manual_seed(0)
    clip = open_clip.create_model(ARCH, pretrained=None).eval()
    text_ckpt = root / "clip_text.safetensors"
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(text_ckpt))
    image_encoder, head_cls = _tv_classes()
    src, modeling = types.ModuleType("src"), types.ModuleType("src.modeling")
    modeling.ImageEncoder, modeling.ClassificationHead, src.modeling = image_encoder, head_cls, modeling
    sys.modules["src"], sys.modules["src.modeling"] = src, modeling
    try:
        del clip.transformer  # task_vectors keeps no text transformer
        base = root / ARCH
        base.mkdir(parents=True)
        torch.save(image_encoder(clip), base / "zeroshot.pt")
        theta0 = {k: v.clone() for k, v in clip.visual.state_dict().items()}
        gen = torch.Generator().manual_seed(1)
        for t in CLIP8_TASKS:
            state = {
                k: v + 0.05 * torch.randn(v.shape, generator=gen) * v.std().clamp_min(0.02)
                for k, v in theta0.items()
            }
            clip.visual.load_state_dict(state)
            (base / NAMES[t]).mkdir()
            torch.save(image_encoder(clip), base / NAMES[t] / "finetuned.pt")
            if t != skip_head:
                torch.save(head_cls(_centroid_head(state, data, t)), base / f"head_{NAMES[t]}.pt")
    finally:
        del sys.modules["src.modeling"], sys.modules["src"]
    return text_ckpt


@pytest.fixture(scope="module")
def fixture_dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("clip8")
    write_clip8_data(root / "data")
    text = write_task_vectors(root / "ckpt", root / "data")
    return root, text


def _overrides(root: Path, text: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"checkpoints={root / 'ckpt'}", f"data={root / 'data'}", f"text_checkpoint={text}",
        f"output_dir={out}", *extra,
    ]  # fmt: skip


STANDIN = Path(__file__).resolve().parents[1] / "configs" / "clip8_standin.yaml"


# ------------------------------------------------------------------------------------------- tests
def test_end_to_end_tables_and_resume(fixture_dirs, tmp_path, monkeypatch):
    root, text = fixture_dirs
    out = tmp_path / "run"
    cfg = load_config(Clip8Config, STANDIN, _overrides(root, text, out))
    assert cfg.model == ARCH and cfg.methods == ["task_arithmetic", "ties"] and cfg.realign == ["surgery"]
    from simo_merge.pool.clip_layout import detect_layout

    assert detect_layout(root / "ckpt", ARCH, cfg.datasets) == "task_vectors"
    states, realigned = [], []
    real_state_model, real_realigned = ClassificationBench.state_model, ClassificationBench.realigned
    monkeypatch.setattr(
        ClassificationBench, "state_model", lambda self, st: states.append(st) or real_state_model(self, st)
    )
    monkeypatch.setattr(
        ClassificationBench,
        "realigned",
        lambda self, st, r: realigned.append((st, r.realigner)) or real_realigned(self, st, r),
    )
    result = run_clip8(cfg)
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
    table = list(csv.reader((out / "results.csv").open()))
    assert table[0] == ["row", "metric", "unit", *cols, "Avg."]
    assert {r[2] for r in table[1:]} == {"%"} and stored["units"]["accuracy"] == "%"
    assert [r[0] for r in table[1:7]] == expected_rows and {r[1] for r in table[1:]} == {
        "accuracy",
        "normalized",
    }
    assert float(table[2][3]) == pytest.approx(ind["accuracy"]["sun397"])
    assert sorted(p.stem for p in (out / "rows").glob("*.json")) == sorted(expected_rows)

    # resume: nothing recomputed, same numbers
    calls = []
    real = ClassificationBench.accuracy
    monkeypatch.setattr(
        ClassificationBench, "accuracy", lambda self, *a: calls.append(a[2]) or real(self, *a)
    )
    again = run_clip8(load_config(Clip8Config, STANDIN, _overrides(root, text, out, "progress=false")))
    assert calls == [] and again["computed"] == [] and again["rows"] == result["rows"]
    # a changed ties λ recomputes ties and ties+surgery only; a deleted row file is recomputed
    (out / "rows" / "Pretrained.json").unlink()
    third = run_clip8(
        load_config(Clip8Config, STANDIN, _overrides(root, text, out, "method_params={ties: {lam: 1.0}}"))
    )
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
    cfg = Clip8Config(
        model=ARCH,
        checkpoints=str(tmp_path / "oc"),
        data=str(root / "data"),
        datasets=["mnist", "svhn"],
        methods=["task_arithmetic", "adamerging", "fisher", "regmean"],
        method_params={
            "adamerging": {"steps": 2},
            "fisher": {"num_batches": 1},
            "regmean": {"num_batches": 1},
        },
        max_unlabelled=3,
        output_dir=str(tmp_path / "out"),
        progress=False,
    )
    result = run_clip8(cfg)  # heads from the whole-CLIP zeroshot file's text tower
    assert result["layout"] == "open_clip"
    methods = ["task_arithmetic", "adamerging", "fisher", "regmean"]
    assert list(result["rows"]) == ["Pretrained", "Individual", *methods]
    # the SVHN expert is θ0 itself: Pretrained and Individual agree there
    rows = result["rows"]
    assert rows["Pretrained"]["accuracy"]["svhn"] == rows["Individual"]["accuracy"]["svhn"]
    assert set(rows["task_arithmetic"]["accuracy"]) == {"mnist", "svhn"}

    real = load_config(
        Clip8Config, STANDIN.parent / "clip8.yaml", ["methods=[ties,adamerging]", "realign=[surgery]"]
    )
    assert (real.model, real.datasets, real.methods, real.realign) == (
        "ViT-B-32",
        list(CLIP8_TASKS),
        ["ties", "adamerging"],
        ["surgery"],
    )
    assert real.test_splits == {"sun397": "val", "dtd": "val"} and not real.allow_pickle
    with pytest.raises(ConfigError, match="unknown merge method 'nope'"):
        load_config(Clip8Config, None, ["checkpoints=a", "data=b", "methods=[nope]"])
    with pytest.raises(ConfigError, match="datasets: unknown"):
        load_config(Clip8Config, None, ["checkpoints=a", "data=b", "datasets=[imagenet]"])
    with pytest.raises(ConfigError, match="checkpoints: set"):
        run_clip8(Clip8Config(data="x"))
    with pytest.raises(FileNotFoundError, match="zeroshot.safetensors"):
        run_clip8(Clip8Config(model="ViT-B-32", checkpoints=str(tmp_path / "oc"), data=str(root / "data")))
    bad = Clip8Config(**{**cfg.__dict__, "checkpoints": str(root / "ckpt"), "datasets": ["dtd"]})
    with pytest.raises(CheckpointError, match="allow_pickle"):
        run_clip8(bad)  # task_vectors pickles need allow_pickle
    bad.allow_pickle = True
    with pytest.raises(FileNotFoundError, match="text_checkpoint"):
        run_clip8(bad)  # no head_DTD.pt and task_vectors' zeroshot.pt has no text tower
    assert (
        row_keys(cfg)["Pretrained"]
        != row_keys(Clip8Config(**{**cfg.__dict__, "image_size": 64}))["Pretrained"]
    )
    assert not math.isnan(rows["Individual"]["avg"])


def test_bench_command_on_the_standin(fixture_dirs, tmp_path, capsys):
    from simo_merge.cli import main

    root, text = fixture_dirs
    out = tmp_path / "cli"
    code = main(
        [
            "bench",
            "clip8",
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
        main(["bench", "clip8", "--config", str(STANDIN), "--data", str(root / "data"), f"output_dir={out}"])
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
    image_encoder, head_cls = _tv_classes()
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

    cfg = Clip8Config(
        model=ARCH, checkpoints=str(ckpt_root), data=str(data_root / "data"), datasets=["mnist"],
        allow_pickle=True, image_size=32, methods=[], output_dir=str(tmp_path / "out"), progress=False,
    )  # fmt: skip
    ckpt = clip_bench.load_checkpoints(cfg)
    assert ckpt.activation == "quick_gelu"
    assert clip_bench.resolve_architecture(cfg, ckpt) == (ARCH, True)
    bench = clip_bench.build_bench(cfg, ckpt)
    enc = bench.make_encoder().eval()
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
    named = Clip8Config(**{**cfg.__dict__, "arch": "ViT-B-32-quickgelu", "model": "ViT-B-32"})
    assert clip_bench.resolve_architecture(named) == ("ViT-B-32-quickgelu", True)
    assert clip_bench.resolve_architecture(Clip8Config(model="ViT-B-32")) == ("ViT-B-32", False)
    assert row_keys(cfg, ckpt)["Pretrained"] != row_keys(cfg)["Pretrained"]  # GELU rows are not reused
    with pytest.raises(ConfigError, match=r"zeroshot\.pt.*QuickGELU"):
        clip_bench.resolve_architecture(Clip8Config(**{**cfg.__dict__, "quick_gelu": False}), ckpt)
