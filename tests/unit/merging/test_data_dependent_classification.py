"""Data-dependent merges on a classification (SISO, CLIP-style) pool: open_clip tower + zero-shot heads."""

from __future__ import annotations

import pytest
import torch

from simo_merge.encoders import build_encoder
from simo_merge.heads.zeroshot import zeroshot_head_from_weights
from simo_merge.merging import merge
from simo_merge.merging.data import MergeData
from simo_merge.model import MultiTaskModel
from simo_merge.pool.expert_pool import ExpertPool
from simo_merge.training.evaluate import evaluate


def make_clip():
    torch.manual_seed(0)
    return build_encoder("open_clip", "ViT-Tiny-8")


@pytest.fixture(scope="module")
def clip_pool():
    base = make_clip().model_state()
    gen = torch.Generator().manual_seed(1)
    experts = {
        t: {
            k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in base.items()
        }
        for t in ("mnist", "svhn")
    }
    heads = {
        t: zeroshot_head_from_weights(10 * torch.randn(c, 32, generator=gen), task_name=t).eval()
        for t, c in (("mnist", 10), ("svhn", 4))
    }
    images = {t: torch.rand(12, 3, 32, 32, generator=gen) for t in heads}  # each task its own inputs (SISO)
    merge_data = MergeData(make_clip, heads, experts, images, batch_size=4, progress=False)
    return ExpertPool(base, experts), heads, images, merge_data


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("adamerging", {"steps": 3, "progress": False}),
        ("adamerging_layerwise", {"steps": 3, "progress": False}),
        ("fisher", {"num_batches": 1}),
        ("regmean", {"num_batches": 1}),
    ],
)
def test_data_dependent_merges_run_on_a_classification_pool(clip_pool, method, params):
    pool, heads, images, merge_data = clip_pool
    record: dict = {}
    if method.startswith("adamerging"):
        params = {**params, "record": record}
    merged = merge(pool, method, merge_data=merge_data, **params)
    assert set(merged) == set(pool.base)
    if record:
        assert record["objectives"] == {"mnist": "entropy", "svhn": "entropy"}
    keys = [k for k, v in pool.base.items() if v.is_floating_point()]
    if method == "fisher":
        # a Fisher-weighted mean with non-negative weights lies, entry by entry, between the experts
        for k in keys:
            stacked = torch.stack([e[k] for e in pool.experts.values()])
            assert (merged[k] >= stacked.amin(0) - 1e-5).all() and (
                merged[k] <= stacked.amax(0) + 1e-5
            ).all(), k
        for task, expert in pool.experts.items():  # ... and is neither expert
            assert any(not torch.allclose(merged[k], expert[k]) for k in keys), task
    else:
        # the merge moves θ0 towards both experts: each expert is nearer the merged state than θ0 (L2 over all
        # float entries); a merge that returned θ0 or one expert fails this
        for task, expert in pool.experts.items():
            to_merged = torch.sqrt(sum(((merged[k] - expert[k]) ** 2).sum() for k in keys))
            to_base = torch.sqrt(sum(((pool.base[k] - expert[k]) ** 2).sum() for k in keys))
            assert to_merged < 0.95 * to_base, (task, float(to_merged / to_base))
    encoder = make_clip()
    encoder.load_model_state(merged)
    model = MultiTaskModel(encoder, heads)
    model.eval()
    for task, head in heads.items():
        with torch.no_grad():  # the merged model's own predictions, as the labels of the first 8 inputs
            predicted = model(images[task], tasks=[task])[task].argmax(1)
        wrong = (predicted[8:] + 1) % head.task.channels  # ... and a wrong label for the last 4
        batches = [{"image": images[task], task: torch.cat([predicted[:8], wrong])}]
        accuracy = evaluate(model, batches, {task: head.task}, progress=False)[task]["accuracy"]
        assert accuracy == pytest.approx(100 * 8 / 12), task
