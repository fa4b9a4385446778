"""The accuracy tables of ``bench clip`` (simo_merge.report), pinned to the text the bench has always
written, and the shared markdown rows of the metric tables."""

from __future__ import annotations

import math

from simo_merge.report import accuracy_summary, accuracy_tables, json_safe, markdown_lines

TASKS = ["mnist", "dtd"]
RAW = {
    "Pretrained": {"mnist": 48.25, "dtd": 44.0},
    "Individual": {"mnist": 99.5, "dtd": 0.0},
    "ties+surgery": {"mnist": 97.0, "dtd": 12.5},
}

MARKDOWN = """\
### Accuracy (%)

| Method | MNIST | DTD | Avg. |
|---|---:|---:|---:|
| Pretrained | 48.2 | 44.0 | 46.1 |
| Individual | 99.5 | 0.0 | 49.8 |
| ties+surgery | 97.0 | 12.5 | 54.8 |

### Normalised accuracy (%)

| Method | MNIST | DTD | Avg. |
|---|---:|---:|---:|
| Pretrained | 48.5 | – | – |
| Individual | 100.0 | – | – |
| ties+surgery | 97.5 | – | – |
"""

CSV = """\
row,metric,unit,MNIST,DTD,Avg.
Pretrained,accuracy,%,48.2500,44.0000,46.1250
Individual,accuracy,%,99.5000,0.0000,49.7500
ties+surgery,accuracy,%,97.0000,12.5000,54.7500
Pretrained,normalized,%,48.4925,nan,nan
Individual,normalized,%,100.0000,nan,nan
ties+surgery,normalized,%,97.4874,nan,nan
"""


def test_accuracy_tables_are_pinned() -> None:
    rows = {n: accuracy_summary(acc, RAW["Individual"], TASKS) for n, acc in RAW.items()}
    assert math.isnan(rows["Pretrained"]["normalized"]["dtd"])  # the reference scored 0 there
    md, table = accuracy_tables(rows, TASKS, ["MNIST", "DTD"])
    assert md == MARKDOWN
    assert table == CSV
    assert json_safe(rows["Individual"])["normalized"] == {"mnist": 100.0, "dtd": None}
    assert json_safe({"a": (1.0, math.nan)}) == {"a": [1.0, None]}


def test_markdown_lines_align_numbers_right_only_when_asked() -> None:
    assert markdown_lines(["a", "b"], [["x", "1"]]) == ["| a | b |", "|---|---|", "| x | 1 |"]
    assert markdown_lines(["a", "b", "c"], [], numbers_right=True)[1] == "|---|---:|---:|"
