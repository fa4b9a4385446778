"""Tests for simo_merge.metrics: hand-computed values, accumulation, state merging, bounded memory."""

from __future__ import annotations

import math

import pytest
import torch

from simo_merge import tasks
from simo_merge.metrics import (
    HIGHER_IS_BETTER,
    DepthMetric,
    MultiTaskMetrics,
    NormalMetric,
    RegressionL1Metric,
    SegmentationMetric,
    build_task_metric,
    delta_mtl,
    normalized_performance,
)


def _vals(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()}


def _assert_same(a: dict, b: dict, tol: float = 1e-12) -> None:
    a, b = _vals(a), _vals(b)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=tol, rel=tol), k


# ----------------------------------------------------------------------------- segmentation

SEG_TARGET = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
SEG_PRED = torch.tensor([[[0, 1, 1], [1, 0, 2]]])


def test_segmentation_miou_excludes_absent_class_and_ignore() -> None:
    # pairs (gt, pred) on labelled pixels: (0,0) (0,1) (1,1) (1,1) (2,0); the 255 pixel is ignored.
    # IoU: class0 = 1/(2+2-1) = 1/3, class1 = 2/(2+3-2) = 2/3, class2 = 0/1 = 0, class3 absent -> excluded.
    m = SegmentationMetric(num_classes=4)
    m.update(SEG_PRED, SEG_TARGET)
    out = _vals(m.compute())
    assert out["miou"] == pytest.approx(100 / 3)  # in %
    assert out["pixel_acc"] == pytest.approx(60.0)
    # the ignored pixel's prediction (2) must not have entered the matrix
    assert int(m.confmat.sum()) == 5
    assert int(m.confmat[:, 2].sum()) == 0


def test_segmentation_logits_equal_labels_and_mask() -> None:
    logits = torch.nn.functional.one_hot(SEG_PRED, 4).permute(0, 3, 1, 2).float()
    a, b = SegmentationMetric(4), SegmentationMetric(4)
    a.update(logits, SEG_TARGET)
    b.update(SEG_PRED, SEG_TARGET)
    _assert_same(a.compute(), b.compute())
    # masking the (gt 0, pred 1) pixel: class0 = 1/2, class1 = 2/2, class2 = 0 -> miou 50 %; acc 75 %
    mask = torch.ones(1, 2, 3, dtype=torch.bool)
    mask[0, 0, 1] = False
    c = SegmentationMetric(4)
    c.update(SEG_PRED, SEG_TARGET, mask)
    out = _vals(c.compute())
    assert out["miou"] == pytest.approx(50.0)
    assert out["pixel_acc"] == pytest.approx(75.0)


def test_segmentation_errors_and_empty() -> None:
    m = SegmentationMetric(3)
    with pytest.raises(ValueError, match="target label 5"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 5))
    with pytest.raises(ValueError, match="channels"):
        m.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer labels"):
        m.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    assert int(m.confmat.sum()) == 0  # failed updates left the state untouched
    with pytest.warns(UserWarning):  # torchmetrics warns on compute before update
        out = _vals(SegmentationMetric(3).compute())
    out = _vals(m.compute())
    assert math.isnan(out["miou"]) and math.isnan(out["pixel_acc"])


# ----------------------------------------------------------------------------- depth / L1


def test_depth_abs_rel_with_invalid_pixel() -> None:
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gt = torch.tensor([[[[2.0, 2.0], [4.0, 8.0]]]])
    mask = torch.tensor([[[True, True], [True, False]]])
    m = DepthMetric()
    m.update(pred, gt, mask)
    out = _vals(m.compute())
    # errors 1, 0, 1 -> abs 2/3; relative 1/2, 0, 1/4 -> 0.75/3
    assert out["abs_err"] == pytest.approx(2 / 3)
    assert out["rel_err"] == pytest.approx(0.25)


def test_depth_excludes_nonpositive_gt_even_if_mask_true() -> None:
    m = DepthMetric()
    m.update(
        torch.tensor([[[[1.0, 5.0]]]]), torch.tensor([[[[2.0, 0.0]]]]), torch.ones(1, 1, 2, dtype=torch.bool)
    )
    out = _vals(m.compute())
    assert out == {"abs_err": pytest.approx(1.0), "rel_err": pytest.approx(0.5)}
    assert int(m.weight) == 1  # pooled: the weight is the valid-pixel count


def test_regression_l1_over_pixels_and_channels() -> None:
    pred = torch.zeros(1, 2, 1, 3)
    gt = torch.tensor([[[[1.0, 2.0, 30.0]], [[3.0, 4.0, 50.0]]]])
    mask = torch.tensor([[[True, True, False]]])
    m = RegressionL1Metric()
    m.update(pred, gt, mask)
    assert float(m.compute()["l1"]) == pytest.approx((1 + 2 + 3 + 4) / 4)
    with pytest.raises(ValueError, match="does not match"):
        m.update(torch.zeros(1, 1, 1, 3), gt)


# ----------------------------------------------------------------------------- normals


def _vec(deg: float) -> list[float]:
    r = math.radians(deg)
    return [math.sin(r), 0.0, math.cos(r)]


def test_normal_known_angles() -> None:
    # pixels at 0, 90, 180, 45 (unnormalised prediction), 20 degrees from +z, plus one masked-out pixel
    preds = [[0, 0, 1], [1, 0, 0], [0, 0, -1], [2, 0, 2], _vec(20), [0, 0, -1]]
    p = torch.tensor(preds, dtype=torch.float32).T.reshape(1, 3, 2, 3)
    t = torch.tensor([[0.0, 0.0, 1.0]] * 6).T.reshape(1, 3, 2, 3)
    mask = torch.tensor([[[True, True, True], [True, True, False]]])
    m = NormalMetric()
    m.update(p, t, mask)
    out = _vals(m.compute())
    # angles 0, 90, 180, 45, 20 -> mean 67, median 45; < 11.25: 1/5, < 22.5: 2/5, < 30: 2/5
    assert out["mean_angle"] == pytest.approx(67.0, abs=1e-4)
    assert abs(out["median_angle"] - 45.0) <= 0.01
    assert out["within_11.25"] == pytest.approx(20.0)
    assert out["within_22.5"] == pytest.approx(40.0)
    assert out["within_30"] == pytest.approx(40.0)


def test_normal_four_vectors_mean_and_median() -> None:
    p = torch.tensor([[0, 0, 1], [1, 0, 0], [0, 0, -1], [1, 0, 1]], dtype=torch.float32).T.reshape(1, 3, 1, 4)
    t = torch.tensor([[0.0, 0.0, 1.0]] * 4).T.reshape(1, 3, 1, 4)
    m = NormalMetric()
    m.update(p, t)
    out = _vals(m.compute())
    assert out["mean_angle"] == pytest.approx((0 + 90 + 180 + 45) / 4, abs=1e-4)
    # torch.median (lower median) of [0, 45, 90, 180] is 45
    assert abs(out["median_angle"] - 45.0) <= 0.01
    assert out["within_11.25"] == pytest.approx(25.0)


def test_normal_zero_target_is_invalid() -> None:
    p = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]).reshape(1, 3, 1, 2)
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]).reshape(1, 3, 1, 2)
    m = NormalMetric()
    m.update(p, t)
    assert int(m.count) == 1
    assert float(m.compute()["mean_angle"]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("n", [10_000, 10_001])
def test_normal_histogram_median_matches_exact(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    deg = torch.rand(n, generator=g, dtype=torch.float64) * 180.0
    r = torch.deg2rad(deg)
    pred = torch.stack([torch.sin(r), torch.zeros_like(r), torch.cos(r)]).reshape(1, 3, 1, n)
    target = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 1, n)
    m = NormalMetric()
    for chunk in range(4):  # several updates
        sl = slice(chunk * n // 4, (chunk + 1) * n // 4)
        m.update(pred[..., sl], target[..., sl])
    out = _vals(m.compute())
    exact_median = float(torch.median(deg))
    assert abs(out["median_angle"] - exact_median) <= 0.01
    assert out["mean_angle"] == pytest.approx(float(deg.mean()), abs=1e-6)
    assert out["within_30"] == pytest.approx(100.0 * float((deg < 30).double().mean()), abs=1e-9)


# ----------------------------------------------------------------------------- accumulation / merge / memory


def _random_batches(kind: str, n_batches: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        mask = torch.rand(2, 5, 6, generator=g) > 0.2
        if kind == "seg":
            pred = torch.randn(2, 4, 5, 6, generator=g)
            tgt = torch.randint(0, 4, (2, 5, 6), generator=g)
            tgt[torch.rand(2, 5, 6, generator=g) < 0.1] = 255
        elif kind == "depth":
            pred = torch.rand(2, 1, 5, 6, generator=g) * 5
            tgt = torch.rand(2, 1, 5, 6, generator=g) * 5 + 0.1
        elif kind == "l1":
            pred, tgt = torch.randn(2, 3, 5, 6, generator=g), torch.randn(2, 3, 5, 6, generator=g)
        else:
            pred, tgt = torch.randn(2, 3, 5, 6, generator=g), torch.randn(2, 3, 5, 6, generator=g)
        out.append((pred, tgt, mask))
    return out


FACTORIES = {
    "seg": lambda: SegmentationMetric(4),
    "depth": DepthMetric,
    "l1": RegressionL1Metric,
    "normal": NormalMetric,
}


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_accumulation_equals_single_update(kind: str) -> None:
    batches = _random_batches(kind)
    many, one = FACTORIES[kind](), FACTORIES[kind]()
    for b in batches:
        many.update(*b)
    one.update(*(torch.cat([b[i] for b in batches]) for i in range(3)))
    _assert_same(many.compute(), one.compute(), tol=1e-9)


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_merge_state_equals_single_process(kind: str) -> None:
    batches = _random_batches(kind, n_batches=4, seed=1)
    single = FACTORIES[kind]()
    for b in batches:
        single.update(*b)
    rank0, rank1 = FACTORIES[kind](), FACTORIES[kind]()
    for b in batches[:2]:
        rank0.update(*b)
    for b in batches[2:]:
        rank1.update(*b)
    # what a dist sum-reduction produces: each state summed over the two "processes"
    summed = FACTORIES[kind]()
    for name in rank0.metric_state:
        setattr(summed, name, getattr(rank0, name) + getattr(rank1, name))
    summed._update_count = 1  # avoid the compute-before-update warning
    rank0.merge_state(rank1)
    ref = single.compute()
    _assert_same(rank0.compute(), ref, tol=1e-9)
    _assert_same(summed.compute(), ref, tol=1e-9)
    assert all(
        fx == "sum" or getattr(fx, "__name__", "") == "dim_zero_sum" for fx in single._reductions.values()
    )


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_state_size_independent_of_updates(kind: str) -> None:
    m = FACTORIES[kind]()

    def numel() -> int:
        return sum(v.numel() for v in m.metric_state.values())

    before = numel()
    for b in _random_batches(kind, n_batches=1):
        m.update(*b)
    after_one = numel()
    for b in _random_batches(kind, n_batches=10, seed=3):
        m.update(*b)
    assert before == after_one == numel()
    assert all(isinstance(v, torch.Tensor) for v in m.metric_state.values())
    m.reset()
    assert all(int(v.abs().sum()) == 0 for v in m.metric_state.values())


# ----------------------------------------------------------------------------- factory / multi-task


def test_build_task_metric() -> None:
    assert isinstance(build_task_metric(tasks.segmentation("semseg", 13)), SegmentationMetric)
    assert build_task_metric(tasks.segmentation("semseg", 13)).num_classes == 13
    assert isinstance(build_task_metric(tasks.regression("depth")), DepthMetric)
    assert isinstance(build_task_metric(tasks.regression("disparity")), DepthMetric)
    assert isinstance(build_task_metric(tasks.regression("edge")), RegressionL1Metric)
    assert isinstance(build_task_metric(tasks.regression("autoencoding", 3)), RegressionL1Metric)
    assert isinstance(build_task_metric(tasks.normals()), NormalMetric)
    with pytest.raises(TypeError):
        build_task_metric("depth")  # type: ignore[arg-type]


def test_multitask_metrics_update_compute_reset() -> None:
    specs = {
        "semseg": tasks.segmentation("semseg", 4),
        "depth": tasks.regression("depth"),
        "normal": tasks.normals(),
        "edge": tasks.regression("edge"),
    }
    mt = MultiTaskMetrics(specs)
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gt = torch.tensor([[[[2.0, 2.0], [4.0, 8.0]]]])
    batch = {
        "semseg": SEG_TARGET,
        "depth": gt,
        "depth_mask": torch.tensor([[[True, True], [True, False]]]),
        "normal": torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2),
        "normal_mask": torch.ones(1, 2, 2, dtype=torch.bool),
        "edge": torch.ones(1, 1, 2, 2),
        "edge_mask": torch.tensor([[[True, False], [False, False]]]),
    }
    outputs = {
        "semseg": SEG_PRED,
        "depth": pred,
        "normal": torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2),
        "edge": torch.full((1, 1, 2, 2), 0.25),
    }
    mt.update(outputs, batch)
    res = mt.compute()
    assert set(res) == set(specs)
    assert res["semseg"]["miou"] == pytest.approx(100 / 3)  # every rate in %
    assert res["depth"] == {"abs_err": pytest.approx(2 / 3), "rel_err": pytest.approx(0.25)}
    assert res["normal"]["mean_angle"] == pytest.approx(90.0)
    assert res["normal"]["within_30"] == 0.0
    assert res["edge"] == {"l1": pytest.approx(0.75)}
    assert all(isinstance(v, float) for d in res.values() for v in d.values())
    assert set(HIGHER_IS_BETTER) >= {k for d in res.values() for k in d}
    mt.reset()
    assert int(mt.metrics["semseg"].confmat.sum()) == 0
    with pytest.raises(KeyError, match="'depth'"):
        mt.update({k: v for k, v in outputs.items() if k != "depth"}, batch)
    with pytest.raises(ValueError, match="task 'edge'"):
        mt.update({**outputs, "edge": torch.zeros(1, 1, 3, 3)}, batch)


# ----------------------------------------------------------------------------- summaries

RESULTS = {
    "semseg": {"miou": 0.44, "pixel_acc": 0.66},
    "depth": {"abs_err": 0.5, "rel_err": 0.2},
    "normal": {"mean_angle": 20.0},
}
BASELINES = {
    "semseg": {"miou": 0.40, "pixel_acc": 0.60},
    "depth": {"abs_err": 0.4, "rel_err": 0.25},
    "normal": {"mean_angle": 25.0, "median_angle": 19.0},
}


def test_delta_mtl_hand_example() -> None:
    # semseg: +10%, +10% -> +0.10; depth: -(0.1/0.4) = -0.25, +(0.05/0.25) = +0.20 -> -0.025;
    # normal: +(5/25) = +0.20. Per-task mean then task mean: (0.10 - 0.025 + 0.20)/3 * 100 = 9.1667
    # (a flat mean over the 5 metrics would give 7.0).
    assert delta_mtl(RESULTS, BASELINES) == pytest.approx(27.5 / 3)
    assert delta_mtl(BASELINES, BASELINES) == pytest.approx(0.0)


def test_normalized_performance_hand_example() -> None:
    out = normalized_performance(RESULTS, BASELINES)
    # semseg: (1.1 + 1.1)/2; depth: (0.4/0.5 + 0.25/0.2)/2 = 1.025; normal: 25/20 = 1.25
    assert out["semseg"] == pytest.approx(110.0)
    assert out["depth"] == pytest.approx(102.5)
    assert out["normal"] == pytest.approx(125.0)
    assert out["mean"] == pytest.approx((110.0 + 102.5 + 125.0) / 3)


def test_summary_errors() -> None:
    with pytest.raises(KeyError, match="'depth'"):
        delta_mtl(RESULTS, {k: v for k, v in BASELINES.items() if k != "depth"})
    with pytest.raises(KeyError, match="'rel_err'.*'depth'"):
        normalized_performance(RESULTS, {**BASELINES, "depth": {"abs_err": 0.4}})
    with pytest.raises(KeyError, match="'foo'"):
        delta_mtl({"semseg": {"foo": 1.0}}, {"semseg": {"foo": 1.0}})
    assert delta_mtl({"semseg": {"foo": 2.0}}, {"semseg": {"foo": 1.0}}, {"foo": False}) == pytest.approx(
        -100.0
    )
    with pytest.raises(ValueError, match="non-zero"):
        delta_mtl({"semseg": {"miou": 0.5}}, {"semseg": {"miou": 0.0}})
    with pytest.raises(ValueError, match="empty"):
        delta_mtl({}, BASELINES)


def test_every_rate_is_in_percent_and_has_a_unit() -> None:
    from simo_merge.metrics import METRIC_UNITS
    from simo_merge.report import markdown_table, result_units, summarize

    specs = {
        "semseg": tasks.segmentation("semseg", 3),
        "normal": tasks.normals(),
        "digits": tasks.classification("digits", 3),
    }
    mt = MultiTaskMetrics(specs)
    target_seg = torch.tensor([[[0, 1], [2, 1]]])
    normal = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    mt.update(
        {"semseg": target_seg, "normal": normal, "digits": torch.tensor([0, 1, 2])},
        {"semseg": target_seg, "normal": normal, "digits": torch.tensor([0, 1, 2])},
    )
    res = mt.compute()
    rates = [(t, m) for t, d in res.items() for m in d if METRIC_UNITS[m] == "%"]
    assert len(rates) == 6  # miou, pixel_acc, 3 x within, accuracy: all perfect = 100 %
    assert all(res[t][m] == pytest.approx(100.0) for t, m in rates)
    base = {"semseg": res["semseg"], "digits": res["digits"]}
    rows = {"Individual": base, "half": {**base, "digits": {"accuracy": 50.0}}}
    table = markdown_table(rows, summarize(rows, "Individual"))
    assert "digits accuracy % ↑" in table and "| 50.00 |" in table and "| 100.00 |" in table
    units = result_units(rows)
    assert units["accuracy"] == units["miou"] == units["pixel_acc"] == units["norm_perf"] == "%"
    assert result_units({"r": res})["within_30"] == "%"
