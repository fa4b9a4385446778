"""A classification (SISO) pool, two tasks on two different data sets, from the CLI alone: merge ->
realign (every realigner) -> evaluate -> affinity, with the Python API's numbers for the same seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simo_merge.affinity import run_affinity
from simo_merge.cli import main
from simo_merge.datasets import build_dataset
from simo_merge.encoders import build_encoder
from simo_merge.features.inputs import RealignInputs
from simo_merge.heads.zeroshot import zeroshot_head_from_weights
from simo_merge.io.checkpoint import load_state, read_sidecar, save_state
from simo_merge.merging import merge
from simo_merge.merging.data import MergeData
from simo_merge.pool.folder import load_pool_dir, save_expert
from simo_merge.realign import REALIGNERS
from simo_merge.realign.diagnostics import representation_bias
from simo_merge.realign.train import RealignConfig, realign
from tests.helpers.siso_checks import accuracy, rows_accuracy, state_model

pytestmark = pytest.mark.slow  # merge, realign and evaluate from the CLI, end to end

CLIP = {"library": "open_clip", "arch": "ViT-Tiny-8", "kwargs": {}}
CLASSES = {"resisc45": ["airplane", "beach", "forest"], "dtd": ["banded", "woven"]}
TASKS = ["dtd", "resisc45"]  # the pool folder's order (sorted head files)
COLOURS = np.array([[150, 110, 110], [110, 150, 110], [110, 110, 150]], np.float64)


def make_encoder():
    return build_encoder("open_clip", "ViT-Tiny-8")


def write_image_folders(root: Path, dataset: str, seed: int, n: int = 3) -> None:
    """``root/<dataset>/{train,val,test}/<class>/<i>.png``: noisy 40x40 images coloured by class."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        for c, name in enumerate(CLASSES[dataset]):
            for i in range(n):
                path = root / dataset / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.clip(COLOURS[c] + rng.normal(0, 90, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two data roots (one data set each) and a pool folder: θ0, two experts, zero-shot heads."""
    base_dir = tmp_path_factory.mktemp("siso")
    roots = {"resisc45": base_dir / "data_a", "dtd": base_dir / "data_b"}
    for i, (task, root) in enumerate(roots.items()):
        write_image_folders(root, task, seed=i)
    pool_dir = base_dir / "pool"
    torch.manual_seed(0)
    encoder = make_encoder()
    theta0 = encoder.model_state()
    save_state(pool_dir / "theta0.safetensors", theta0, {"encoder": CLIP})
    gen = torch.Generator().manual_seed(1)
    for task in TASKS:
        expert = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in theta0.items()}
        weight = centroid_weights(expert, build_dataset(task, root=roots[task], split="train", image_size=32))
        save_expert(pool_dir, task, expert, zeroshot_head_from_weights(weight, task_name=task))
    data = [
        "data.size=[32,32]",
        "data.options={image_size: 32}",
        *(f"data.per_task.{t}={{name: {t}, root: {roots[t]}}}" for t in TASKS),
        "progress=false",
    ]
    return base_dir, roots, pool_dir, data


@torch.no_grad()
def centroid_weights(state: dict, dataset) -> torch.Tensor:
    """A zero-shot head weight [C, D]: each class's mean normalised expert feature on the train split."""
    encoder = make_encoder()
    encoder.load_model_state(state)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    feats = torch.nn.functional.normalize(encoder(images).features, dim=-1)
    labels = torch.tensor(dataset.targets)
    centroids = torch.stack([feats[labels == c].mean(0) for c in range(dataset.num_classes)])
    return 20 * torch.nn.functional.normalize(centroids, dim=-1)


def task_sets(roots: dict[str, Path], split: str) -> dict:
    return {t: build_dataset(t, root=roots[t], split=split, image_size=32) for t in TASKS}


def test_siso_pool_end_to_end_from_the_cli(setup, capsys):
    base_dir, roots, pool_dir, data = setup
    out = base_dir / "runs"
    pool = load_pool_dir(pool_dir)
    assert pool.tasks == TASKS
    test_sets, val_sets = task_sets(roots, "test"), task_sets(roots, "val")
    assert {t: len(s) for t, s in test_sets.items()} == {"dtd": 6, "resisc45": 9}

    # merge: pool folder given as pool.dir; same tensors as the Python API
    assert (
        main(["merge", f"pool.dir={pool_dir}", "method.params.lam=0.5", f"output_dir={out / 'merge'}"]) == 0
    )
    merged_path = out / "merge" / "merged.safetensors"
    merged = load_state(merged_path)
    expected = merge(pool, "task_arithmetic", lam=0.5)
    assert all(torch.equal(merged[k], expected[k]) for k in expected)

    val_images = {t: torch.stack([s[i]["image"] for i in range(len(s))]) for t, s in val_sets.items()}
    assert {t: x.shape[0] for t, x in val_images.items()} == {"dtd": 6, "resisc45": 9}

    # a data-dependent merge: the merge_data reads each task's unlabelled inputs from its own data set
    run = out / "adamerging"
    args = [
        "method.name=adamerging",
        "method.params.steps=2",
        "method.params.lr=0.1",
        "split=val",
        *data[:-1],
        f"output_dir={run}",
    ]
    assert main(["merge", f"pool.dir={pool_dir}", *args]) == 0, capsys.readouterr().err
    merge_data = MergeData(make_encoder, pool.frozen_heads(), pool.experts, val_images, "val", progress=False)
    expected = merge(pool, "adamerging", merge_data=merge_data, steps=2, lr=0.1, progress=False)
    got = load_state(run / "merged.safetensors")
    assert all(torch.allclose(got[k], expected[k], rtol=0, atol=1e-6) for k in expected)
    meta = read_sidecar(run / "merged.safetensors")
    assert meta["probe_inputs"] == {"dtd": ["val", 6], "resisc45": ["val", 9]}
    assert meta["hyperparameters"]["steps"] == 2 and meta["hyperparameters"]["init"] == 0.3
    swapped = {"dtd": val_images["resisc45"], "resisc45": val_images["resisc45"]}  # the wrong inputs
    other = MergeData(make_encoder, pool.frozen_heads(), pool.experts, swapped, "x", progress=False)
    other_merge = merge(pool, "adamerging", merge_data=other, steps=2, lr=0.1, progress=False)
    assert not all(torch.allclose(got[k], other_merge[k], rtol=0, atol=1e-6) for k in expected)

    # realign with every realigner, each task's unlabelled inputs from its own data set (val)
    individual = {
        t: accuracy(state_model(make_encoder, pool, pool.experts[t], [t]), test_sets, [t])[t] for t in TASKS
    }
    realigners = REALIGNERS.names()
    assert {"surgery", "deep", "shared-deep", "taps", "heads"} <= set(realigners)
    for r in realigners:
        run = out / f"realign_{r}"
        args = [f"pool.dir={pool_dir}", f"checkpoint={merged_path}", f"realign.realigners=[{r}]"]
        args += ["realign.params={steps: 3, rank: 4, batch_size: 4}", "split=val", "eval_split=test"]
        args += ["bias=true", *data, f"output_dir={run}"]
        assert main(["realign", *args]) == 0, capsys.readouterr().err
        result = json.loads((run / "metrics.json").read_text())
        cfg = RealignConfig(realigner=r, steps=3, rank=4, batch_size=4, progress=False)
        model, curve = realign(
            make_encoder,
            merged,
            pool.experts,
            pool.frozen_heads(),
            RealignInputs(val_images, name="val"),
            cfg,
        )
        assert result["loss_curve"] == pytest.approx(curve, rel=1e-5), r
        assert len(curve) == 3 and curve[0] > 0
        assert rows_accuracy(result["rows"], f"task_arithmetic+{r}") == pytest.approx(
            accuracy(model.eval(), test_sets, TASKS), abs=1e-6
        ), r
        assert rows_accuracy(result["rows"], "Individual") == pytest.approx(individual, abs=1e-6)
        assert rows_accuracy(result["rows"], "task_arithmetic") == pytest.approx(
            accuracy(state_model(make_encoder, pool, merged, TASKS), test_sets, TASKS), abs=1e-6
        )
        test_images = {t: torch.stack([s[i]["image"] for i in range(len(s))]) for t, s in test_sets.items()}
        experts = {t: state_model(make_encoder, pool, pool.experts[t], [t]).encoder for t in TASKS}
        bias = representation_bias(model, experts, test_images)
        for t in TASKS:
            assert result["bias_after"][t] == pytest.approx(bias[t], rel=1e-4), r

    # evaluate (files form of the same pool) with the surgery adapters: the realign run's rows again
    files = [f"pool.base={pool_dir}/theta0.safetensors"]
    for t in TASKS:
        files += [
            f"pool.experts.{t}={pool_dir}/{t}.safetensors",
            f"pool.heads.{t}={pool_dir}/{t}_head.safetensors",
        ]
    adapters = out / "realign_surgery" / "adapters.safetensors"
    report = out / "eval.json"
    args = [f"checkpoint={merged_path}", f"adapters={adapters}", f"output={report}", *data]
    assert main(["evaluate", *files, *args]) == 0, capsys.readouterr().err
    evaluated = json.loads(report.read_text())
    realigned = json.loads((out / "realign_surgery" / "metrics.json").read_text())
    assert list(evaluated["rows"]) == ["Individual", "task_arithmetic", "task_arithmetic+surgery"]
    for name in realigned["rows"]:
        assert rows_accuracy(evaluated["rows"], name) == pytest.approx(rows_accuracy(realigned["rows"], name))
    assert evaluated["data"] == {t: {"dataset": t, "root": str(roots[t]), "split": "test"} for t in TASKS}
    assert "| task_arithmetic+surgery |" in capsys.readouterr().out

    # affinity: measured transfer and interference on each task's own data set
    args = ["transfer_lambdas=[0.0,1.0]", "select_lambdas=[0.5,1.0]", *data, f"output_dir={out / 'affinity'}"]
    assert main(["affinity", f"pool.dir={pool_dir}", *args]) == 0, capsys.readouterr().err
    got = json.loads((out / "affinity" / "affinity.json").read_text())

    def evaluator(sets):
        return lambda state, tasks=None: {
            t: {"accuracy": a}
            for t, a in accuracy(
                state_model(make_encoder, pool, state, list(tasks or TASKS)), sets, list(tasks or TASKS)
            ).items()
        }

    enc = make_encoder()
    mine = run_affinity(
        pool,
        block_of=enc.block_of_key,
        evaluate_state=evaluator(test_sets),
        evaluate_val=evaluator(val_sets),
        baselines={t: {"accuracy": individual[t]} for t in TASKS},
        val_baselines={t: evaluator(val_sets)(pool.experts[t], [t])[t] for t in TASKS},
        transfer_lambdas=[0.0, 1.0],
        select_lambdas=[0.5, 1.0],
        progress=False,
    )
    assert got["tasks"] == TASKS
    assert np.allclose(got["cosine"]["global"]["cosine"], mine["cosine"]["global"]["cosine"])
    assert np.allclose(got["interference"]["matrix"], mine["interference"]["matrix"], equal_nan=True)
