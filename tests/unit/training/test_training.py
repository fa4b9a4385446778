"""Losses, the one-pass multi-task model, the fit loop and evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from simo_merge.heads import build_head
from simo_merge.model import MultiTaskModel
from simo_merge.tasks import normals, regression, segmentation
from simo_merge.training.evaluate import evaluate
from simo_merge.training.loop import fit, warmup_cosine
from simo_merge.training.losses import task_loss


def test_losses_by_hand():
    seg = segmentation("semseg", 2)
    logits = torch.tensor([[[[0.0]], [[math.log(3.0)]]]])  # p(class 1) = 0.75
    target = torch.tensor([[[1]]])
    torch.testing.assert_close(task_loss(seg, logits, target), torch.tensor(-math.log(0.75)))
    assert task_loss(seg, logits, target, mask=torch.zeros(1, 1, 1, dtype=torch.bool)).item() == 0.0
    depth = regression("depth")
    pred = torch.tensor([[[[1.0, 2.0]]]])
    gt = torch.tensor([[[[2.0, 9.0]]]])
    torch.testing.assert_close(task_loss(depth, pred, gt, torch.tensor([[[True, False]]])), torch.tensor(1.0))
    nrm = normals()
    p = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    q = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(task_loss(nrm, p, q, torch.ones(1, 1, 1, dtype=torch.bool)), torch.tensor(1.0))


def test_warmup_cosine_schedule():
    f = warmup_cosine(10, 0.2)
    assert [round(f(s), 3) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert f(9) < 0.05 and f(6) < f(3)


def _toy_batches(n=16):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, 32, 32, generator=g)
    depth = images.mean(1, keepdim=True) * 3 + 0.5
    return images, depth


def test_fit_lowers_the_loss(tiny_timm):
    images, depth = _toy_batches()
    loader = DataLoader(TensorDataset(images, depth), batch_size=8, shuffle=True)
    head = build_head("linear", regression("depth"), tiny_timm, (32, 32))
    model = MultiTaskModel(tiny_timm, {"depth": head}).train()

    def step(batch):
        x, y = batch
        loss = task_loss(head.task, model(x)["depth"], y)
        return loss, {}

    curve = fit(step, [{"params": list(model.parameters()), "lr": 3e-3}], loader, 40, progress=False)
    assert len(curve) == 40
    assert sum(curve[-5:]) / 5 < 0.8 * sum(curve[:5]) / 5


def test_evaluation_runs_the_encoder_once_per_batch_for_all_heads(tiny_timm):
    specs = {"semseg": segmentation("semseg", 3), "depth": regression("depth"), "normal": normals()}
    heads = {
        t: build_head("linear", s, tiny_timm, (32, 32), taps=[i, 3]) for i, (t, s) in enumerate(specs.items())
    }
    model = MultiTaskModel(tiny_timm, heads)
    calls = []
    tiny_timm.model.register_forward_hook(lambda *a: calls.append(1))
    images, depth = _toy_batches(10)
    batches = []
    for i in range(0, 10, 4):
        x = images[i : i + 4]
        b = x.shape[0]
        batches.append(
            {
                "image": x,
                "semseg": torch.zeros(b, 32, 32, dtype=torch.long),
                "semseg_mask": torch.ones(b, 32, 32, dtype=torch.bool),
                "depth": depth[i : i + 4],
                "depth_mask": torch.ones(b, 32, 32, dtype=torch.bool),
                "normal": torch.nn.functional.normalize(torch.rand(b, 3, 32, 32), dim=1),
                "normal_mask": torch.ones(b, 32, 32, dtype=torch.bool),
            }
        )
    results = evaluate(model, batches, specs, progress=False)
    assert len(calls) == len(batches) == 3
    assert set(results) == set(specs)
    assert 0 <= results["semseg"]["pixel_acc"] <= 100 and results["depth"]["abs_err"] > 0
    assert model.taps() == [0, 1, 2, 3]


def test_recipe_defaults_live_with_their_config_and_each_phase_has_its_lr(tiny_timm, monkeypatch):
    from simo_merge.config import ConfigError, load_config
    from simo_merge.configs import builtin_config
    from simo_merge.jobs.demo import DemoConfig
    from simo_merge.training import finetune as experts
    from simo_merge.training.finetune import FinetuneRecipe, finetune
    from simo_merge.training.recipes import describe_recipe, resolved_recipe

    real = FinetuneRecipe()  # a real pretrained ViT: a small encoder lr
    assert (real.lr_encoder, real.lr_head, real.probe_lr) == (3e-5, 1e-3, 1e-3)
    demo = load_config(DemoConfig, builtin_config("demo"))  # θ0 pretrained here: the scratch recipe
    for section in ("expert", "mtl"):
        recipe = resolved_recipe(demo, section)
        assert (recipe.probe_steps, recipe.finetune_steps) == (50, 250)
        assert (recipe.probe_lr, recipe.lr_head, recipe.lr_encoder) == (3e-3, 3e-3, 5e-4)
    # θ0 from a checkpoint, the demo config otherwise (as `train-experts encoder.checkpoint=...` loads it):
    # the real-backbone recipe, and one key set changes that key alone
    given = load_config(
        DemoConfig, builtin_config("demo"), ["encoder.checkpoint=theta0.pt", "expert.finetune_steps=7"]
    )
    assert resolved_recipe(given, "mtl") == real
    assert resolved_recipe(given, "expert") == FinetuneRecipe(finetune_steps=7)
    line = describe_recipe(given, "expert")
    assert "encoder lr 3e-05" in line and "real-backbone recipe (θ0 from encoder.checkpoint)" in line
    assert "expert.{finetune_steps: 7} set" in line
    with pytest.raises(ConfigError, match=r"expert\.lr_encoder=0\.0: must be > 0"):
        load_config(DemoConfig, None, ["expert.lr_encoder=0"])
    with pytest.raises(ValueError, match="lr_encoder"):
        FinetuneRecipe(lr_encoder=0.0)

    seen = []
    monkeypatch.setattr(
        experts,
        "fit",
        lambda step, groups, *a, desc, **k: seen.append((desc, [g["lr"] for g in groups])) or [],
    )
    head = build_head("linear", regression("depth"), tiny_timm, (32, 32))
    recipe = FinetuneRecipe(
        probe_steps=1, finetune_steps=1, probe_lr_head=1e-2, lr_head=2e-3, lr_encoder=4e-5
    )
    finetune(tiny_timm, {"depth": head}, [], recipe, desc="x", progress=False)
    assert seen == [("x: probe", [1e-2]), ("x: fine-tune", [4e-5, 2e-3])]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_evaluation_refuses_non_finite_images_naming_the_sample(tiny_timm, value):
    specs = {"depth": regression("depth")}
    model = MultiTaskModel(tiny_timm, {"depth": build_head("linear", specs["depth"], tiny_timm, (32, 32))})
    images, depth = _toy_batches(10)
    samples = [
        {"image": images[i], "depth": depth[i], "depth_mask": torch.ones(32, 32, dtype=torch.bool)}
        for i in range(10)
    ]
    samples[6]["image"] = samples[6]["image"].clone()
    samples[6]["image"][1, 2, 3] = value
    with pytest.raises(ValueError, match=r"test: the image of data set index 6 holds 1 NaN/Inf pixel value"):
        evaluate(model, DataLoader(samples, batch_size=4), specs, desc="test", progress=False)
    batches = list(DataLoader(samples, batch_size=4))  # a plain iterable: the batch and position
    with pytest.raises(ValueError, match=r"eval: the image of sample 2 of batch 1 holds 1 NaN/Inf"):
        evaluate(model, batches, specs, progress=False)
