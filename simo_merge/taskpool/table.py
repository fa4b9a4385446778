"""The results table of a run: rows of per-task metrics (the ``Individual`` row first among the baselines),
summarised against the Individual row as normalised performance and ΔMTL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simo_merge.report import accuracy_summary, markdown_table, result_units, summarize

#: the row of each expert on its own task: the 100 % every other row is normalised by
INDIVIDUAL = "Individual"

Results = Mapping[str, Mapping[str, float]]  # task -> metric -> value


@dataclass
class ResultsTable:
    """``rows`` (row name -> task -> metric -> value, with an ``Individual`` row) and ``info`` (row name ->
    extra column -> text); ``summary`` (row -> NormPerf, per-task normalised scores, ΔMTL over
    ``delta_metrics``: each task's ``"all"`` metrics or its ``"primary"`` one) is computed."""

    rows: Mapping[str, Results]
    info: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    delta_metrics: str = "all"
    summary: dict[str, dict[str, float]] = field(init=False)

    def __post_init__(self) -> None:
        self.summary = summarize(self.rows, INDIVIDUAL, self.delta_metrics)

    def markdown(self) -> str:
        """The table as markdown: one line per row, metric columns, NormPerf, ΔMTL, then ``info``."""
        return markdown_table(self.rows, self.summary, self.info, self.delta_metrics)

    def results(self) -> dict[str, Any]:
        """The ``rows``, ``summary`` (with the ``delta_metrics`` its ΔMTL used) and ``units`` entries every
        metrics JSON starts with."""
        return {
            "rows": self.rows,
            "summary": self.summary,
            "delta_metrics": self.delta_metrics,
            "units": result_units(self.rows),
        }


def accuracy_rows(
    accuracy: Mapping[str, Mapping[str, float]], tasks: Sequence[str], names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Classification rows ``names`` of ``accuracy`` (row -> task -> top-1 %) as
    :func:`~simo_merge.report.accuracy_summary` rows, normalised by the Individual row."""
    return {n: accuracy_summary(accuracy[n], accuracy[INDIVIDUAL], tasks) for n in names}
