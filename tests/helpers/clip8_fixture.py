"""Writers of the CLIP eight-task fixture: eight real on-disk data formats and task_vectors pickles of
the tiny open_clip ViT-Tiny-8 (experts = θ0 + noise, centroid heads), shared by the bench's tests."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import open_clip
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from simo_merge.datasets import build_dataset
from simo_merge.datasets.clip8 import CLIP8_TASKS
from simo_merge.encoders import build_encoder
from simo_merge.encoders.open_clip_vit import register_small_configs
from simo_merge.jobs import clip as clip_bench
from simo_merge.jobs.clip import ClipConfig
from simo_merge.taskpool import TaskPool
from tests.helpers import REPO
from tests.helpers.idx_files import write_idx

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
    ims = []
    for i in range(4):
        with Image.open(gt / "GTSRB" / "Final_Test" / "Images" / f"{i:05d}.ppm") as im:
            ims.append(np.asarray(im.resize((32, 32))))
    x = np.stack(ims, -1)
    (root / "svhn").mkdir()
    scipy.io.savemat(
        root / "svhn" / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [10], [1]], np.uint8)}
    )
    digits = (x.mean(2).transpose(2, 0, 1)[:, ::2, ::2]).astype(np.uint8)  # [4, 16, 16] grey
    write_idx(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz", digits)
    write_idx(root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 0, 1], np.uint8))


# ------------------------------------------------------------------------------------ checkpoints
def tv_classes() -> tuple[type, type]:
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
def centroid_head(visual_state: dict, data: Path, task: str, arch: str, image_size: int) -> torch.Tensor:
    """Class-mean features of the expert on its test images (x100), absent classes pushed away."""
    enc = build_encoder("open_clip", arch).eval()
    enc.load_model_state(visual_state)
    split = clip_bench.split_of(ClipConfig(), task)
    ds = build_dataset(task, root=data, split=split, image_size=image_size)
    feats = F.normalize(enc(torch.stack([ds[i]["image"] for i in range(len(ds))])).features, dim=-1)
    labels = torch.tensor(ds.targets)
    weight = torch.zeros(ds.num_classes, feats.shape[1])
    for c in labels.unique():
        weight[c] = F.normalize(feats[labels == c].mean(0), dim=0)
    absent = [c for c in range(ds.num_classes) if c not in labels.tolist()]
    weight[absent] = -F.normalize(feats.mean(0), dim=0)
    return 100 * weight


def write_task_vectors(
    root: Path, data: Path, skip_head: str = "dtd", arch: str = ARCH, image_size: int = 32
) -> Path:
    """``<root>/<arch>/{zeroshot.pt, <Dataset>/finetuned.pt, head_<Dataset>.pt}`` as task_vectors
    pickles (experts = θ0 + noise, heads from ``image_size`` inputs); returns a whole-CLIP safetensors
    usable as text_checkpoint. ``arch`` is any open_clip config: the tests' ViT-Tiny-8, or ViT-B-32 for
    the full-size stand-in that benchmarks/gpu_check.sh runs."""
    register_small_configs()
    torch.manual_seed(0)
    clip = open_clip.create_model(arch, pretrained=None).eval()
    text_ckpt = root / "clip_text.safetensors"
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(text_ckpt))
    image_encoder, head_cls = tv_classes()
    src, modeling = types.ModuleType("src"), types.ModuleType("src.modeling")
    modeling.ImageEncoder, modeling.ClassificationHead, src.modeling = image_encoder, head_cls, modeling
    sys.modules["src"], sys.modules["src.modeling"] = src, modeling
    try:
        del clip.transformer  # task_vectors keeps no text transformer
        base = root / arch
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
                torch.save(
                    head_cls(centroid_head(state, data, t, arch, image_size)), base / f"head_{NAMES[t]}.pt"
                )
    finally:
        del sys.modules["src.modeling"], sys.modules["src"]
    return text_ckpt


def overrides(root: Path, text: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"checkpoints={root / 'ckpt'}", f"data={root / 'data'}", f"text_checkpoint={text}",
        f"output_dir={out}", *extra,
    ]  # fmt: skip


STANDIN = REPO / "configs" / "clip_standin.yaml"


def record_models(monkeypatch) -> tuple[list, list]:
    """Patch the bench so that every state it turns into a model is appended to the first list and every
    realignment, as ``(merged state, realigner)``, to the second; the calls go through unchanged."""
    states: list = []
    realigned: list = []
    real_model, real_realigned = TaskPool.model, clip_bench.realigned

    def model(self, state, tasks=None):
        states.append(state)
        return real_model(self, state, tasks)

    def realign(taskpool, state, rcfg, inputs):
        realigned.append((state, rcfg.realigner))
        return real_realigned(taskpool, state, rcfg, inputs)

    monkeypatch.setattr(TaskPool, "model", model)
    monkeypatch.setattr(clip_bench, "realigned", realign)
    return states, realigned
