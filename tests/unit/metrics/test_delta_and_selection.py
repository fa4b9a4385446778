"""ΔMTL over all or primary metrics (issue 24 item 1), SIMO's single-task constants for λ selection
(item 2; the sweep itself is tested in tests/jobs/test_demo_selection.py), and the tables naming the
metric set. SIMO reference: d23845jg/simo_merging @ 2fcaa49a ``training/utils.py`` lines 268-280."""

from __future__ import annotations

import pytest

from simo_merge.metrics.selection import SIMO_SINGLE_TASK, Criterion, criterion, simo_single_task
from simo_merge.metrics.summary import delta_mtl
from simo_merge.report import markdown_table, summarize

BASE = {
    "semseg": {"miou": 50.0, "pixel_acc": 80.0},
    "depth": {"abs_err": 0.5, "rel_err": 0.2},
    "normal": {"mean_angle": 20.0, "median_angle": 15.0, "within_11.25": 30.0},
}
ROW = {
    "semseg": {"miou": 55.0, "pixel_acc": 76.0},
    "depth": {"abs_err": 0.4, "rel_err": 0.25},
    "normal": {"mean_angle": 22.0, "median_angle": 15.0, "within_11.25": 33.0},
}


def test_delta_mtl_primary_uses_one_metric_per_task_all_averages_them() -> None:
    primary = (0.1 + 0.2 - 0.1) / 3 * 100  # miou +10 %, abs_err -20 % (better), mean_angle +10 % (worse)
    assert delta_mtl(ROW, BASE, metrics="primary") == pytest.approx(primary)
    every = ((0.1 - 0.05) / 2 + (0.2 - 0.25) / 2 + (-0.1 + 0.0 + 0.1) / 3) / 3 * 100
    assert delta_mtl(ROW, BASE) == pytest.approx(every) == pytest.approx(delta_mtl(ROW, BASE, metrics="all"))
    assert primary != pytest.approx(every)


def test_delta_mtl_refuses_an_unknown_set_or_a_task_without_a_primary_metric() -> None:
    with pytest.raises(ValueError, match="metrics must be one of"):
        delta_mtl(ROW, BASE, metrics="main")
    with pytest.raises(KeyError, match="'x' has no primary metric"):
        delta_mtl({"x": {"pixel_acc": 1.0}}, {"x": {"pixel_acc": 2.0}}, metrics="primary")


def test_primary_metric_of_every_dense_kind_and_classification() -> None:
    results = {
        "edge": {"l1": 0.02},
        "disparity": {"abs_err": 0.01, "rel_err": 0.3},
        "MNIST": {"accuracy": 90.0},
    }
    base = {"edge": {"l1": 0.01}, "disparity": {"abs_err": 0.01}, "MNIST": {"accuracy": 100.0}}
    assert delta_mtl(results, base, metrics="primary") == pytest.approx((-1.0 + 0.0 - 0.1) / 3 * 100)


def test_simo_constants_are_the_authors_in_our_units() -> None:
    """``training/utils.py`` lines 269-280, mIoU as % and our task / metric names."""
    assert SIMO_SINGLE_TASK["nyuv2"] == {
        "semseg": {"miou": 68.23},
        "depth": {"abs_err": 0.2708},
        "normal": {"mean_angle": 24.73},
    }
    city = SIMO_SINGLE_TASK["cityscapes_npy"]
    assert [city[t] for t in ("semseg", "part_seg", "disparity")] == [
        {"miou": 58.76},
        {"miou": 50.88},
        {"abs_err": 0.0102},
    ]
    tasko = SIMO_SINGLE_TASK["taskonomy"]
    assert tasko["semseg"] == {"miou": 51.39} and tasko["normal"] == {"mean_angle": 18.4414}
    assert tasko["depth"] == {"abs_err": 0.0146}
    assert tasko["keypoints2d"] == {"l1": 0.0062} and tasko["edge"] == {"l1": 0.0126}


def test_delta_mtl_selection_needs_the_constants_of_the_dataset_and_tasks() -> None:
    with pytest.raises(ValueError, match="'synthetic_scenes' has none"):
        simo_single_task("synthetic_scenes", ["semseg"])
    with pytest.raises(ValueError, match=r"no single-task constant for any of the tasks \['autoencoding'\]"):
        simo_single_task("taskonomy", ["autoencoding"])
    # a task without a constant (their code has no branch for the autoencoder) is left out of the score
    select = criterion("delta_mtl", "taskonomy", ["autoencoding", "depth"])
    assert dict(select.baselines) == {"depth": {"abs_err": 0.0146}}
    val = {"autoencoding": {"l1": 5.0}, "depth": {"abs_err": 0.0073, "rel_err": 9.0}}
    assert select.score(val) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="selection must be one of"):
        Criterion("best", {})
    with pytest.raises(ValueError, match="'normperf' needs the val Individual row"):
        criterion("normperf", "nyuv2", ["semseg"])


# ------------------------------------------------------------------------------------ tables
def test_tables_name_the_delta_metric_set() -> None:
    rows = {"Individual": BASE, "TA": ROW}
    primary = summarize(rows, "Individual", "primary")
    assert primary["TA"]["delta_mtl"] == pytest.approx(delta_mtl(ROW, BASE, metrics="primary"))
    assert "ΔMTL (primary metrics) % ↑" in markdown_table(rows, primary, delta_metrics="primary")
    default = markdown_table(rows, summarize(rows, "Individual"))
    assert "ΔMTL (all metrics) % ↑" in default
    assert summarize(rows, "Individual")["TA"]["delta_mtl"] == pytest.approx(delta_mtl(ROW, BASE))


def test_normperf_over_primary_metrics_ignores_a_zero_secondary_baseline() -> None:
    """NormPerf follows the protocol's metric set like ΔMTL: over primary metrics a secondary metric whose
    baseline is 0 (``within_11.25`` of a weak expert) neither divides by zero nor counts."""
    from simo_merge.metrics.summary import normalized_performance
    from simo_merge.report import summarize

    base = {"normal": {"mean_angle": 40.0, "within_11.25": 0.0}, "semseg": {"miou": 20.0, "pixel_acc": 50.0}}
    run = {"normal": {"mean_angle": 50.0, "within_11.25": 3.0}, "semseg": {"miou": 30.0, "pixel_acc": 40.0}}
    primary = normalized_performance(run, base, metrics="primary")
    assert primary == pytest.approx({"normal": 80.0, "semseg": 150.0, "mean": 115.0})
    with pytest.raises(ValueError, match=r"\['within_11.25'\] must be finite and non-zero"):
        normalized_performance(run, base)  # every metric: the zero baseline is refused
    table = summarize({"Individual": base, "TA": run}, "Individual", "primary")
    assert table["TA"]["norm_perf"] == pytest.approx(115.0)
    assert table["TA"]["delta_mtl"] == pytest.approx(100 * ((40 - 50) / 40 + (30 - 20) / 20) / 2)
