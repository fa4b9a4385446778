"""Realignment schedules and recipes against the reference loops, written out independently here.

- ``schedule="reference"`` (RepresentationSurgery / SurgeryV2 ``main_*`` scripts): per iteration, per
  task, two batches from that task's own shuffled inputs, each with an Adam step on that task's loss.
- ``recipe="simo"``: the authors' notebook (d23845jg/simo_merging @2fcaa49, notebooks/simo_merging.ipynb;
  cells counted from 0 over all cells): AdamW, weight decay 0, lr 1e-5, OneCycle (10% warm-up), gradient
  clipping at 35, one epoch, only the block adapters trained on labels (heads frozen).
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from simo_merge.encoders import build_encoder
from simo_merge.features.inputs import RealignInputs
from simo_merge.features.sampling import IndexSampler
from simo_merge.heads import build_head
from simo_merge.realign.config import DEFAULT_STEPS, RealignSettings
from simo_merge.realign.io import load_realigned, save_realigned
from simo_merge.realign.train import RealignConfig, Realignment, realign
from simo_merge.tasks import normals, regression, segmentation
from tests.helpers.toy_states import perturbed

SPECS = {"semseg": segmentation("semseg", 4), "depth": regression("depth"), "normal": normals()}
ENC = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)


def make_encoder():
    torch.manual_seed(0)
    return build_encoder("timm", "vit_tiny_patch16_224", **ENC)


def setup(num_inputs=12):
    encoder = make_encoder()
    torch.manual_seed(1)
    heads = {t: build_head("linear", s, encoder, (32, 32)).eval() for t, s in SPECS.items()}
    base = encoder.model_state()
    experts = {t: perturbed(base, i + 1, 0.2) for i, t in enumerate(SPECS)}
    images = torch.rand(num_inputs, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    return base, experts, heads, RealignInputs({t: images for t in SPECS}, name="t")


def test_reference_schedule_counts_steps_per_adapter_and_matches_the_reference_loop():
    base, experts, heads, inputs = setup()
    steps, per_task, batch = 3, 2, 4
    cfg = RealignConfig(
        realigner="surgery", schedule="reference", steps=steps, batch_size=batch, seed=7, progress=False
    ).resolved()
    run = Realignment(make_encoder, base, experts, heads, inputs, cfg)
    curve = run.train()
    assert run.schedule == "reference" and len(curve) == steps
    # every per-task adapter tensor got 2 Adam updates per iteration (one per batch), no more
    for task in SPECS:
        for p in run.model.adapters[task].parameters():
            assert int(run.optimizer.state[p]["step"]) == steps * per_task

    # the reference loop, written out: merged and expert last-block tokens recomputed for every batch,
    # one Adam per task's adapter (the same tensors a shared Adam with set_to_none would move)
    last = ENC["depth"] - 1
    merged = make_encoder()
    merged.load_model_state(base)
    torch.manual_seed(cfg.seed)  # the adapters' initialisation, as Realignment seeds it
    from simo_merge.realign.adapter import Adapter

    adapters = {t: Adapter(ENC["embed_dim"], cfg.rank) for t in SPECS}
    for t in SPECS:  # same initial W_down as ours (W_up = 0 in both)
        torch.testing.assert_close(
            adapters[t].down.weight, run_initial_down(cfg, base, experts, heads, inputs, t)
        )
    optimizers = {t: torch.optim.Adam(adapters[t].parameters(), lr=cfg.lr) for t in SPECS}
    samplers = {t: iter(IndexSampler(inputs.num_inputs(t), batch, cfg.seed + i)) for i, t in enumerate(SPECS)}
    expert_encoders = {}
    for t in SPECS:
        expert_encoders[t] = make_encoder()
        expert_encoders[t].load_model_state(experts[t])
    want_curve = []
    for _ in range(steps):
        total = 0.0
        for t in SPECS:
            for _ in range(per_task):
                x = inputs.sources[t].images(next(samplers[t]))
                with torch.no_grad():
                    z_merged = merged(x, taps=[last]).taps[last]
                    z_expert = expert_encoders[t](x, taps=[last]).taps[last]
                loss = (adapters[t](z_merged) - z_expert).abs().mean()
                optimizers[t].zero_grad()
                loss.backward()
                optimizers[t].step()
                total += loss.item() / per_task
        want_curve.append(total)
    assert curve == pytest.approx(want_curve, rel=1e-4, abs=1e-6)
    for t in SPECS:
        ours = run.model.adapters[t]["block1"]
        torch.testing.assert_close(ours.up.weight, adapters[t].up.weight, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ours.down.weight, adapters[t].down.weight, rtol=1e-4, atol=1e-6)


def run_initial_down(cfg, base, experts, heads, inputs, task):
    """W_down of a freshly built run's adapter for ``task`` (no training)."""
    return (
        Realignment(make_encoder, base, experts, heads, inputs, cfg)
        .model.adapters[task]["block1"]
        .down.weight
    )


def test_joint_schedule_takes_one_step_per_iteration():
    base, experts, heads, inputs = setup()
    cfg = RealignConfig(realigner="deep", schedule="joint", steps=2, batch_size=4, progress=False)
    run = Realignment(make_encoder, base, experts, heads, inputs, cfg)
    run.train()
    for task in SPECS:
        for p in run.model.adapters[task].parameters():
            assert int(run.optimizer.state[p]["step"]) == 2


def test_default_schedule_is_reference_for_surgery_and_deep_on_classification_pools():
    classify = {t: SimpleNamespace(task=SimpleNamespace(kind="classification")) for t in ("a", "b")}
    dense = {"a": SimpleNamespace(task=SPECS["semseg"])}
    pick = Realignment.default_schedule
    assert pick(RealignConfig(realigner="surgery"), classify) == "reference"
    assert pick(RealignConfig(realigner="deep"), classify) == "reference"
    assert pick(RealignConfig(realigner="taps"), classify) == "joint"
    assert pick(RealignConfig(realigner="surgery"), dense) == "joint"
    assert pick(RealignConfig(realigner="surgery", online=True), classify) == "joint"
    with pytest.raises(ValueError, match="schedule"):
        RealignConfig(schedule="interleaved").validate()


def labelled(inputs, n):
    labels = {
        "semseg": {"semseg": torch.randint(0, 4, (n, 32, 32), generator=torch.Generator().manual_seed(0))},
        "depth": {
            "depth": torch.rand(n, 1, 32, 32) + 1,
            "depth_mask": torch.ones(n, 32, 32, dtype=torch.bool),
        },
        "normal": {"normal": torch.nn.functional.normalize(torch.randn(n, 3, 32, 32), dim=1)},
    }
    images = inputs.sources["semseg"].images(torch.arange(n))  # every input, read once
    return RealignInputs({t: images for t in SPECS}, labels, "t")


# the notebook's lines, transcribed (notebooks/simo_merging.ipynb @2fcaa49):
#   cell 24 l.5:      mm_config["training_params"]["total_epochs"] = 1
#   cell 24 l.23-29:  lr = 1e-5; optimizer = optim.AdamW(simo_model.collect_trainable_params(), lr=lr,
#                         betas=(0.9, 0.999), weight_decay=0.0)
#   cell 24 l.31-37:  optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, steps_per_epoch=len(train_loader),
#                         epochs=total_epochs, pct_start=0.1)
#   cell 25 l.16-18:  torch.nn.utils.clip_grad_norm_(simo_model.collect_trainable_params(), max_norm=35.0)
#   cell 19 l.51-52:  add_lora_to_model_blocks(pt_model, rank=16)
#                     # add_lora_to_model_decoders(pt_model, rank=16)
#   cell 21 l.20-38:  collect_trainable_params: the blocks' (and decoders', none) LoRA weights, plus
#                     lambdas only when learnable (cell 22 passes a fixed list)
NOTEBOOK = dict(
    epochs=1.0, lr=1e-5, optimizer="adamw", weight_decay=0.0, lr_schedule="onecycle", warmup=0.1,
    clip_grad=35.0, train_heads=False, rank=16,
)  # fmt: skip


def test_simo_recipe_is_the_notebooks():
    cfg = RealignConfig(realigner="shared-deep", recipe="simo", batch_size=4).resolved()
    assert {k: getattr(cfg, k) for k in NOTEBOOK} == NOTEBOOK
    assert cfg.objective == "supervised" and cfg.schedule == "joint"
    assert cfg.resolved() == cfg  # idempotent
    surgery = RealignConfig(realigner="deep").resolved()
    assert (surgery.optimizer, surgery.lr, surgery.weight_decay, surgery.objective) == (
        "adam",
        1e-3,
        0.0,
        "unsupervised",
    )
    assert (surgery.clip_grad, surgery.epochs, surgery.schedule, surgery.train_heads) == (
        None,
        None,
        None,
        False,
    )
    assert (
        RealignConfig(realigner="heads").resolved().objective == "unsupervised"
    )  # a job's give the registered
    with pytest.raises(ValueError, match="recipe"):
        RealignConfig(recipe="fast").resolved()
    with pytest.raises(ValueError, match=r"\['optimizer'\] unset"):
        dataclasses.replace(RealignConfig().resolved(), optimizer=None).validate()


@pytest.mark.parametrize(
    "given",
    [
        {"lr": 1e-3},  # the surgery recipe's lr: was taken for "unset" and replaced by 1e-5
        {"weight_decay": 0.01},
        {"weight_decay": 0.0, "recipe": "surgery", "optimizer": "adamw"},
        {"train_heads": True},
        {"objective": "unsupervised"},  # was replaced by the recipe's "supervised"
        {"clip_grad": 1.0, "epochs": 2.0, "warmup": 0.3, "lr_schedule": "constant", "schedule": "reference"},
    ],
)
def test_resolved_never_replaces_a_value_the_user_set(given):
    want = {"recipe": "simo", **given}
    cfg = RealignConfig(**want).resolved()
    assert {k: getattr(cfg, k) for k in want} == want


def test_a_length_the_user_gives_in_steps_is_not_replaced_by_the_recipes_epochs():
    mine = RealignSettings(["surgery"], {"recipe": "simo", "steps": 3}).config("surgery")
    assert (mine.steps, mine.epochs) == (3, None)  # counted in steps, as asked
    theirs = RealignSettings(["surgery"], {"recipe": "simo"}).config("surgery")
    assert theirs.epochs == 1.0  # the notebook's one epoch
    assert RealignConfig().resolved().steps == DEFAULT_STEPS  # surgery counts steps
    both = RealignConfig(recipe="simo", steps=3, epochs=2.0).resolved()
    assert (both.steps, both.epochs) == (3, 2.0)  # both given: epochs decides, as documented


def test_job_defaults_sit_below_the_recipe_and_the_user():
    settings = RealignSettings(["surgery"], {"recipe": "simo", "lr": None})
    cfg = settings.config("surgery", {"objective": "unsupervised", "steps": 7})
    assert (cfg.objective, cfg.lr) == ("supervised", 1e-5)  # None given: unset
    assert cfg.epochs == 1.0  # a job's default length yields to the recipe's one epoch
    mine = RealignSettings(["surgery"], {"recipe": "simo", "objective": "unsupervised"})
    assert mine.config("surgery", {"objective": "supervised"}).objective == "unsupervised"
    assert RealignSettings(["heads"]).config("heads").objective == "supervised"
    assert (
        RealignSettings(["heads"]).config("heads", {"objective": "unsupervised"}).objective == "unsupervised"
    )
    with pytest.raises(ValueError, match=r"realign.params.lr='fast': must be a float"):
        RealignSettings(["surgery"], {"lr": "fast"}).check("realign")
    with pytest.raises(ValueError, match=r"realign.params.train_heads=1: must be a bool"):
        RealignSettings(["surgery"], {"train_heads": 1}).check("realign")


def run_simo(monkeypatch, **given):
    """A simo-recipe run of shared-deep on 10 labelled inputs (batches of 4), its clip calls recorded."""
    base, experts, heads, inputs = setup(num_inputs=10)
    sup = labelled(inputs, 10)
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        clipped.append(max_norm)
        return real_clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    cfg = RealignConfig(realigner="shared-deep", recipe="simo", batch_size=4, seed=1, progress=False, **given)
    run = Realignment(make_encoder, base, experts, heads, sup, cfg)
    return run, heads, clipped


def test_simo_recipe_trains_the_block_adapters_only(monkeypatch):
    run, heads, clipped = run_simo(monkeypatch, lr=1e-3)
    pool_heads_before = {t: {k: v.clone() for k, v in h.state_dict().items()} for t, h in heads.items()}
    head_before = [p.detach().clone() for p in run.model.heads.parameters()]
    curve = run.train()
    # one epoch of 10 inputs in batches of 4: ceil(10 / 4) = 3 steps, each clipped at 35
    assert len(curve) == math.ceil(10 / 4) and clipped == [35.0] * 3
    assert isinstance(run.optimizer, torch.optim.AdamW) and run.optimizer.defaults["weight_decay"] == 0.0
    assert run.optimizer.defaults["betas"] == (0.9, 0.999)
    # the notebook's OneCycle (cell 24 l.31-37) over one epoch of 3 batches, max_lr the user's 1e-3 (kept)
    probe = torch.optim.AdamW(
        [torch.zeros(1, requires_grad=True)], lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        probe, max_lr=1e-3, steps_per_epoch=3, epochs=1, pct_start=0.1
    )
    for _ in range(3):
        probe.step()
        sched.step()
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(probe.param_groups[0]["lr"], rel=1e-12)
    trained = {id(p) for p in run.model.trainable_parameters()}
    assert trained == {id(p) for p in run.model.adapters.parameters()}
    assert all(int(run.optimizer.state[p]["step"]) == 3 for p in run.model.adapters.parameters())
    assert all(torch.equal(a, b) for a, b in zip(run.model.heads.parameters(), head_before, strict=True))
    for task, head in heads.items():
        for name, value in head.state_dict().items():
            assert torch.equal(value, pool_heads_before[task][name]), (task, name)
    base, experts, heads, inputs = setup()
    with pytest.raises(KeyError, match="recipe=surgery"):
        Realignment(make_encoder, base, experts, heads, inputs, RealignConfig(recipe="simo", progress=False))


def test_simo_recipe_with_train_heads_trains_copies_of_the_heads(monkeypatch):
    run, heads, _ = run_simo(monkeypatch, lr=1e-3, weight_decay=0.01, train_heads=True)
    pool_heads_before = {t: {k: v.clone() for k, v in h.state_dict().items()} for t, h in heads.items()}
    head_before = [p.detach().clone() for p in run.model.heads.parameters()]
    run.train()
    assert run.optimizer.defaults["weight_decay"] == 0.01
    trained = {id(p) for p in run.model.trainable_parameters()}
    assert all(id(p) in trained for p in run.model.heads.parameters())
    assert any(int(run.optimizer.state[p]["step"]) == 3 for p in run.model.heads.parameters())
    after = list(run.model.heads.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, head_before, strict=True))
    # the pool's own heads are untouched (the run trains copies)
    for task, head in heads.items():
        for name, value in head.state_dict().items():
            assert torch.equal(value, pool_heads_before[task][name]), (task, name)


def test_adapters_and_heads_round_trip(tmp_path):
    base, experts, heads, inputs = setup(num_inputs=8)
    sup = labelled(inputs, 8)
    cfg = RealignConfig(
        realigner="shared-deep", recipe="simo", batch_size=4, lr=1e-2, train_heads=True, progress=False
    )
    model, _ = realign(make_encoder, base, experts, heads, sup, cfg)
    save_realigned(tmp_path / "a.safetensors", model, "shared-deep")
    enc = make_encoder()
    enc.load_model_state(base)
    torch.manual_seed(1)
    fresh = {t: build_head("linear", s, enc, (32, 32)).eval() for t, s in SPECS.items()}
    loaded = load_realigned(tmp_path / "a.safetensors", enc, fresh)
    x = torch.rand(2, 3, 32, 32)
    for task, value in model(x).items():
        torch.testing.assert_close(loaded(x)[task], value)
