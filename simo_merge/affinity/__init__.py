"""Offline task-affinity analysis of an expert pool.

Data-free (task vectors only, streamed key by key): :func:`cosine_matrices` (whole encoder, per block,
per attention/MLP/other group), :func:`sign_conflict`, :func:`cluster_tasks`. Measured (needs an
``evaluate_state(state) -> {task: {metric: value}}`` callable and the experts' metrics as baselines):
:func:`transfer_curves` (θ0 + λ·τs) and :func:`pairwise_interference` (task arithmetic on every pair).
:func:`agreement` relates the two with Spearman's ρ; :func:`run_affinity` runs everything and
:func:`write_affinity_report` writes JSON, markdown and PNGs. Definitions are in each module's docstring.
"""

from simo_merge.affinity.agreement import agreement
from simo_merge.affinity.analysis import run_affinity
from simo_merge.affinity.clustering import cluster_tasks
from simo_merge.affinity.interference import DEFAULT_SELECT_LAMBDAS, pairwise_interference
from simo_merge.affinity.keys import PARAM_GROUPS, default_block_of, param_group
from simo_merge.affinity.report import affinity_markdown, to_jsonable, write_affinity_report
from simo_merge.affinity.transfer import DEFAULT_LAMBDAS, SIMO_LAMBDAS, scaled_state, transfer_curves
from simo_merge.affinity.vectors import block_parts, cosine_matrices, recombine_cosine, sign_conflict

__all__ = [
    "DEFAULT_LAMBDAS",
    "DEFAULT_SELECT_LAMBDAS",
    "PARAM_GROUPS",
    "SIMO_LAMBDAS",
    "affinity_markdown",
    "agreement",
    "block_parts",
    "cluster_tasks",
    "cosine_matrices",
    "default_block_of",
    "pairwise_interference",
    "param_group",
    "recombine_cosine",
    "run_affinity",
    "scaled_state",
    "sign_conflict",
    "to_jsonable",
    "transfer_curves",
    "write_affinity_report",
]
