"""λ chosen on val by the protocol's criterion (issue 24 item 2): the default protocol by val NormPerf
against the val Individual row, protocol=simo by val ΔMTL (primary metrics) against the SIMO code's
single-task constants, as d23845jg/simo_merging @ 2fcaa49a does: ``training/utils.py`` lines 282-303
(``TaskMetric.compute_metric``'s "all" score) and ``model_merging/eval_utils.py`` lines 245-266
(``find_optimal_coef``, called on the val metrics at line 300), transcribed below. The demo's sweep
runs with merging and evaluation replaced by a table of val results (no training)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from simo_merge.metrics.selection import criterion
from simo_merge.metrics.summary import normalized_performance
from simo_merge.protocols import PROTOCOLS


def their_all(metric: dict[str, float], stl: dict[str, float]) -> float:
    """``training/utils.py`` lines 282-303: the "all" score of one evaluation (their task names)."""
    delta = 0
    for task_id in metric:
        if task_id in ["seg", "part_seg", "segment_semantic"] or "class" in task_id:  # higher better
            delta += (metric[task_id] - stl[task_id]) / stl[task_id]
        elif task_id in ["depth", "normal", "disp", "depth_zbuffer", "keypoints2d", "edge_texture"]:
            delta -= (metric[task_id] - stl[task_id]) / stl[task_id]
    return delta / len(stl)


def their_find_optimal_coef(results, metric_name="all", metric_index=0, minimize=False):
    """``model_merging/eval_utils.py`` lines 245-266 (``find_optimal_coef``, no control metric)."""
    best_metric = float("inf") if minimize else float("-inf")
    best_coef = None
    for scaling_coef, metrics in results.items():
        current_metric = metrics.get(metric_name)[metric_index]
        if current_metric is None:
            continue
        if (minimize and current_metric < best_metric) or (not minimize and current_metric > best_metric):
            best_metric = current_metric
            best_coef = scaling_coef
    return best_coef


NYU_STL = {"seg": 0.6823, "depth": 0.2708, "normal": 24.73}  # training/utils.py line 270
VAL_INDIVIDUAL = {
    "semseg": {"miou": 40.0, "pixel_acc": 60.0},
    "depth": {"abs_err": 0.6, "rel_err": 0.2},
    "normal": {"mean_angle": 30.0},
}
# val results per λ: 0.2 is best by NormPerf against the val Individual row (all metrics), 0.4 by
# primary-metric ΔMTL against SIMO's constants; 0.6 ties 0.4 there (the first best is kept)
VAL = {
    0.2: {
        "semseg": {"miou": 36.0, "pixel_acc": 66.0},
        "depth": {"abs_err": 0.60, "rel_err": 0.15},
        "normal": {"mean_angle": 30.0},
    },
    0.4: {
        "semseg": {"miou": 40.0, "pixel_acc": 50.0},
        "depth": {"abs_err": 0.55, "rel_err": 0.30},
        "normal": {"mean_angle": 30.0},
    },
    0.6: {
        "semseg": {"miou": 40.0, "pixel_acc": 50.0},
        "depth": {"abs_err": 0.55, "rel_err": 0.30},
        "normal": {"mean_angle": 30.0},
    },
}


def _choose(monkeypatch, name: str) -> dict:
    """The demo's sweep (``merge_with_selection``) with merging and evaluation replaced by the table VAL."""
    import simo_merge.jobs.demo as demo_job
    import simo_merge.taskpool.selection as sweep
    from simo_merge.merging.spec import MethodSpec

    monkeypatch.setattr(sweep, "merge", lambda val, spec, **scale: scale["lam"])
    demo = SimpleNamespace(cfg=SimpleNamespace(merge=SimpleNamespace(lam_grid=list(VAL))))
    val = SimpleNamespace(evaluate=lambda state, desc: VAL[state])
    individual = VAL_INDIVIDUAL if name == "normperf" else None  # simo: the constants suffice
    select = criterion(name, "nyuv2", list(VAL_INDIVIDUAL), individual)
    state, chosen = demo_job.merge_with_selection(demo, val, MethodSpec("task_arithmetic"), select)
    assert state == chosen["lam"]
    return chosen


def test_simo_selection_picks_the_lambda_the_authors_code_picks(monkeypatch) -> None:
    names = {"semseg": "seg", "depth": "depth", "normal": "normal"}
    primary = {"semseg": "miou", "depth": "abs_err", "normal": "mean_angle"}
    val_metrics = {}
    for lam, results in VAL.items():
        metric = {names[t]: results[t][primary[t]] / (100 if t == "semseg" else 1) for t in results}
        val_metrics[lam] = {"all": np.array([their_all(metric, NYU_STL)])}
    expected = their_find_optimal_coef(val_metrics, metric_name="all", metric_index=0, minimize=False)
    chosen = _choose(monkeypatch, PROTOCOLS["simo"].selection)
    assert expected == 0.4 and chosen["lam"] == expected
    assert chosen["val_delta_mtl"] == round(100 * val_metrics[0.4]["all"][0], 2)
    assert "val_norm_perf" not in chosen


def test_default_selection_is_val_normperf_against_the_val_individual_row(monkeypatch) -> None:
    scores = {lam: normalized_performance(r, VAL_INDIVIDUAL)["mean"] for lam, r in VAL.items()}
    chosen = _choose(monkeypatch, PROTOCOLS["default"].selection)
    assert chosen["lam"] == max(scores, key=scores.get) == 0.2
    assert chosen["val_norm_perf"] == round(scores[0.2], 2)


def test_demo_config_check_refuses_simo_selection_without_constants() -> None:
    from simo_merge.config import ConfigError
    from simo_merge.data import DataConfig
    from simo_merge.jobs._checks import check_selection

    check_selection(DataConfig(name="synthetic_scenes"))  # the default protocol needs no constants
    check_selection(DataConfig(name="nyuv2", protocol="simo", tasks=["semseg", "depth"]))
    with pytest.raises(ConfigError, match="data.protocol=simo: selection 'delta_mtl'"):
        check_selection(DataConfig(name="synthetic_scenes", protocol="simo"))
