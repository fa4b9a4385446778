"""Result tables (markdown/CSV/JSON) and bar charts (PNG) for rows of per-task metrics."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def delta_header(delta_metrics: str) -> str:
    """The ΔMTL column's title, naming the metric set: ``"ΔMTL (primary metrics) % ↑"``."""
    return f"ΔMTL ({delta_metrics} metrics) % ↑"


def norm_header(delta_metrics: str) -> str:
    """The NormPerf column's title: ``"NormPerf % ↑"`` over all metrics, else naming the set."""
    return "NormPerf % ↑" if delta_metrics == "all" else f"NormPerf ({delta_metrics} metrics) % ↑"


def summarize(
    rows: Mapping[str, Results], baseline: str, delta_metrics: str = "all"
) -> dict[str, dict[str, float]]:
    """Per row: mean normalised performance (%) and ΔMTL (%) against the ``baseline`` row, both over
    ``delta_metrics`` (``"all"`` metrics of each task or its ``"primary"`` one, :func:`delta_mtl`)."""
    base = rows[baseline]
    out = {}
    for name, results in rows.items():
        norm = normalized_performance(results, base, metrics=delta_metrics)
        out[name] = {
            "norm_perf": norm["mean"],
            **{f"norm_{t}": norm[t] for t in results},
            "delta_mtl": delta_mtl(results, base, metrics=delta_metrics),
        }
    return out


def markdown_table(
    rows: Mapping[str, Results],
    summary: Mapping[str, Mapping[str, float]],
    extra: Mapping[str, Mapping[str, str]] | None = None,
    delta_metrics: str = "all",
) -> str:
    """One row per model; columns task/metric (% for rates, ↑ higher is better, ↓ lower), then NormPerf and
    ΔMTL (its title naming ``delta_metrics``, the metric set ``summary``'s ΔMTL was computed over)."""
    first = next(iter(rows.values()))
    columns = [(t, m) for t, metrics in first.items() for m in metrics]
    extra_cols = sorted({k for e in (extra or {}).values() for k in e})
    header = ["model"] + [metric_header(t, m) for t, m in columns]
    header += [norm_header(delta_metrics), delta_header(delta_metrics)] + extra_cols
    body = []
    for name, results in rows.items():
        cells = [name]
        cells += [format_metric(m, results[t][m]) for t, m in columns]
        cells += [f"{summary[name]['norm_perf']:.1f}", f"{summary[name]['delta_mtl']:+.2f}"]
        cells += [(extra or {}).get(name, {}).get(c, "") for c in extra_cols]
        body.append(cells)
    return "\n".join(markdown_lines(header, body)) + "\n"


def markdown_lines(
    header: Sequence[str], body: Sequence[Sequence[str]], numbers_right: bool = False
) -> list[str]:
    """A markdown table's lines: header, rule (columns after the first right-aligned if
    ``numbers_right``), one line per body row."""
    rule = "|---|" + ("---:|" if numbers_right else "---|") * (len(header) - 1)
    return [_markdown_line(header), rule, *(_markdown_line(row) for row in body)]


def _markdown_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


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


def sweep_plot(
    values: Sequence[float],
    scores: Sequence[float],
    chosen: float,
    scale: str,
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """A scale sweep: each candidate's score (mean normalised performance on val) against its value, the
    chosen one marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(list(values), list(scores), marker="o")
    ax.axvline(chosen, color="black", lw=0.8, ls="--", label=f"chosen {scale}={chosen:g}")
    ax.set_xlabel(scale)
    ax.set_ylabel("val normalised performance (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


# ----------------------------------------------------------------------------- accuracy tables
def accuracy_summary(
    acc: Mapping[str, float], reference: Mapping[str, float] | None, tasks: Sequence[str]
) -> dict[str, Any]:
    """A row of accuracies (%): per task, their mean, and where a ``reference`` row is given (the
    individual experts) the normalised accuracy ``100 acc / reference`` per task (NaN where the
    reference is 0) and its mean."""
    row: dict[str, Any] = {"accuracy": {t: acc[t] for t in tasks}, "avg": sum(acc.values()) / len(acc)}
    if reference is not None:
        norm = {t: (100.0 * acc[t] / reference[t]) if reference[t] > 0 else math.nan for t in tasks}
        row["normalized"] = norm
        row["normalized_avg"] = sum(norm.values()) / len(norm)
    return row


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN replaced by None (JSON has no NaN), through dicts, lists and tuples."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def format_percent(value: float | None) -> str:
    """One decimal, or ``–`` for a missing (None/NaN) value."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def accuracy_tables(
    rows: Mapping[str, Mapping[str, Any]], tasks: Sequence[str], columns: Sequence[str]
) -> tuple[str, str]:
    """(markdown with the accuracy and normalised-accuracy tables, CSV with both) of
    :func:`accuracy_summary` rows; ``columns`` are the tasks' column titles, then ``Avg.``."""
    cols = [*columns, "Avg."]
    md: list[str] = []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["row", "metric", "unit", *cols])
    for title, key, avg in (
        ("Accuracy (%)", "accuracy", "avg"),
        ("Normalised accuracy (%)", "normalized", "normalized_avg"),
    ):
        body = []
        for name, row in rows.items():
            vals = [row[key][t] for t in tasks] + [row[avg]]
            body.append([name, *(format_percent(v) for v in vals)])
            writer.writerow([name, key, "%", *(f"{v:.4f}" for v in vals)])
        md += [f"### {title}", "", *markdown_lines(["Method", *cols], body, numbers_right=True), ""]
    return "\n".join(md), buf.getvalue()


def average_chart(values: Mapping[str, float], path: str | os.PathLike, ylabel: str, title: str = "") -> Path:
    """One labelled bar per row (e.g. its average accuracy)."""
    plt = pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.5))
    heights = [values[n] for n in names]
    ax.bar(range(len(names)), heights, color="tab:blue")
    for i, v in enumerate(heights):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return save_png(fig, path)
