"""The task pool: the data and frozen heads a merged encoder is judged on (FusionBench's split of a run into
method / model pool / task pool): ``TaskPool(pool, splits).evaluate(state) -> {task: {metric: value}}``,
the Individual row, the results table, and the probe data of data-dependent merges and realigners."""

from simo_merge.taskpool.probes import merge, merge_data, realigned
from simo_merge.taskpool.selection import Selection, select_scale
from simo_merge.taskpool.table import INDIVIDUAL, ResultsTable, accuracy_rows
from simo_merge.taskpool.taskpool import TaskPool

__all__ = [
    "INDIVIDUAL",
    "ResultsTable",
    "Selection",
    "TaskPool",
    "accuracy_rows",
    "merge",
    "merge_data",
    "realigned",
    "select_scale",
]
