"""Result tables (markdown/JSON) and bar charts (PNG) for rows of per-task metrics."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from simo_merge.metrics.summary import (
    HIGHER_IS_BETTER,
    METRIC_UNITS,
    delta_mtl,
    metric_units,
    normalized_performance,
)
from simo_merge.plotting import pyplot, save_png

Results = Mapping[str, Mapping[str, float]]


def format_metric(name: str, value: float) -> str:
    """A metric as tables print it: rates (already in %) and angles with 2 decimals, errors with 4."""
    return f"{value:.4f}" if "err" in name or name == "l1" else f"{value:.2f}"


def metric_header(task: str, name: str) -> str:
    """``"semseg miou % ↑"``: task, metric, ``%`` for rates, and the better direction."""
    unit = " %" if METRIC_UNITS.get(name) == "%" else ""
    return f"{task} {name}{unit} {'↑' if HIGHER_IS_BETTER.get(name, True) else '↓'}"


def result_units(rows: Mapping[str, Results]) -> dict[str, str]:
    """The ``"units"`` entry of a metrics JSON: each metric's unit, and the summary scores' (all %)."""
    return {**metric_units(rows), "norm_perf": "%", "norm_<task>": "%", "delta_mtl": "%"}


def summarize(rows: Mapping[str, Results], baseline: str) -> dict[str, dict[str, float]]:
    """Per row: mean normalised performance (%) and ΔMTL (%) against the ``baseline`` row."""
    base = rows[baseline]
    out = {}
    for name, results in rows.items():
        norm = normalized_performance(results, base)
        out[name] = {
            "norm_perf": norm["mean"],
            **{f"norm_{t}": norm[t] for t in results},
            "delta_mtl": delta_mtl(results, base),
        }
    return out


def markdown_table(
    rows: Mapping[str, Results],
    summary: Mapping[str, Mapping[str, float]],
    extra: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """One row per model; columns task/metric (% for rates, ↑ higher is better, ↓ lower), then NormPerf and
    ΔMTL."""
    first = next(iter(rows.values()))
    columns = [(t, m) for t, metrics in first.items() for m in metrics]
    extra_cols = sorted({k for e in (extra or {}).values() for k in e})
    header = ["model"] + [metric_header(t, m) for t, m in columns]
    header += ["NormPerf % ↑", "ΔMTL % ↑"] + extra_cols
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, results in rows.items():
        cells = [name]
        cells += [format_metric(m, results[t][m]) for t, m in columns]
        cells += [f"{summary[name]['norm_perf']:.1f}", f"{summary[name]['delta_mtl']:+.2f}"]
        cells += [(extra or {}).get(name, {}).get(c, "") for c in extra_cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(
    summary: Mapping[str, Mapping[str, float]], tasks: list[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Grouped bars: normalised performance per task for every row (100 = the baseline)."""
    plt = pyplot()
    names = list(summary)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) + 2), 4))
    width = 0.8 / (len(tasks) + 1)
    for j, key in enumerate([f"norm_{t}" for t in tasks] + ["norm_perf"]):
        xs = [i + (j - len(tasks) / 2) * width for i in range(len(names))]
        label = key[5:] if key != "norm_perf" else "mean"
        ax.bar(xs, [summary[n][key] for n in names], width, label=label)
    ax.axhline(100, color="black", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("normalised performance (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)
