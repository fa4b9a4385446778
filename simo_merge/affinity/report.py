"""Write an affinity analysis to ``affinity.json``, ``affinity.md`` and PNG figures (all atomic)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from simo_merge.affinity import plots
from simo_merge.io.atomic import write_json, write_text
from simo_merge.runtime import on_rank_zero


def to_jsonable(obj: Any) -> Any:
    """numpy arrays/scalars -> lists/floats, non-finite floats -> None (strict JSON), keys -> str."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _cell(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(v)):
        return "—"
    return fmt.format(v)


def matrix_table(
    matrix: Any,
    rows: Sequence[str],
    cols: Sequence[str] | None = None,
    fmt: str = "{:.3f}",
    corner: str = "row \\ col",
) -> str:
    """A markdown table of ``matrix`` with row and column names (NaN shown as —)."""
    cols = list(cols) if cols is not None else list(rows)
    m = np.asarray(matrix, dtype=np.float64)
    lines = ["| " + " | ".join([corner, *cols]) + " |", "|" + "---|" * (len(cols) + 1)]
    for i, name in enumerate(rows):
        lines.append("| " + " | ".join([name, *[_cell(m[i, j], fmt) for j in range(len(cols))]]) + " |")
    return "\n".join(lines) + "\n"


def _pair_table(cosine: dict[str, Any], parts: list[tuple[str, dict[str, Any]]]) -> str:
    names = cosine["tasks"]
    header = ["pair", *[p for p, _ in parts], "whole"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, j in combinations(range(len(names)), 2):
        cells = [
            f"{names[i]}–{names[j]}",
            *[_cell(part["cosine"][i][j], "{:.3f}") for _, part in parts],
            _cell(cosine["global"]["cosine"][i][j], "{:.3f}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _norm_table(cosine: dict[str, Any]) -> str:
    groups = list(cosine["groups"].items())
    header = ["task", "‖τ‖ whole", *[f"‖τ‖ {g}" for g, _ in groups]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, t in enumerate(cosine["tasks"]):
        cells = [t, f"{cosine['global']['norm'][i]:.4g}", *[f"{part['norm'][i]:.4g}" for _, part in groups]]
        lines.append("| " + " | ".join(cells) + " |")
    counts = ", ".join(f"{g}: {part['numel']:,} entries in {part['keys']} tensors" for g, part in groups)
    return "\n".join(lines) + f"\n\nParameter groups: {counts}.\n"


def _cosine_section(cosine: Any, tasks: Sequence[str]) -> list[str]:
    """Task-vector cosines: whole encoder, norms, per parameter group and per block."""
    out: list[str] = []
    out.append("## Task-vector cosine similarity (data-free)")
    out.append(
        "cos(s,t) = <τs, τt> / (‖τs‖‖τt‖) over all float parameters, τt = θt − θ0. Per block b and per "
        "parameter group the same over that subset of keys. Exactly, cos(s,t) = Σ_b ‖τs_b‖‖τt_b‖ "
        "cos_b(s,t) / (‖τs‖‖τt‖): the whole-encoder cosine is the norm-weighted sum of the block "
        "cosines. — = undefined (a zero task vector on those keys)."
    )
    out += ["### Whole encoder", matrix_table(cosine["global"]["cosine"], tasks)]
    out += ["### Task-vector norms", _norm_table(cosine)]
    if len(tasks) > 1:
        out += [
            "### Per parameter group (attention / MLP / other)",
            _pair_table(cosine, list(cosine["groups"].items())),
        ]
        block_parts = [(f"block {b}", part) for b, part in cosine["blocks"].items()]
        if cosine.get("non_block") is not None:
            block_parts.append(("non-block", cosine["non_block"]))
        if block_parts:
            out += ["### Per block", _pair_table(cosine, block_parts)]
    return out


def _sign_conflict_section(conflict: Any, tasks: Sequence[str]) -> list[str]:
    """The top-k% sign-conflict matrix."""
    out: list[str] = []
    out.append(f"## Sign conflict (data-free, top-{conflict['k']:g}%)")
    out.append(
        "C[s,t] = percentage of the entries in the union of both tasks' top-k% magnitude sets (TIES "
        "thresholds, one per task) where both task vectors are non-zero with opposite signs."
    )
    out.append(matrix_table(conflict["rate"], tasks, fmt="{:.1f}"))
    return out


def _clusters_section(clusters: Any) -> list[str]:
    """The task groups at the threshold cut and at the largest gap."""
    out: list[str] = []
    out.append("## Task clusters (average linkage on 1 − cosine)")
    cut = clusters["cut"]
    bullets = [
        f"- cut at distance {cut['threshold']:g} (average cosine between groups ≥ "
        f"{1 - cut['threshold']:g}): {_groups(clusters['groups']['threshold'])}"
    ]
    if clusters["groups"].get("largest_gap") is not None:
        bullets.append(
            f"- cut at the largest gap between merges ({cut['largest_gap']:.3f}): "
            f"{_groups(clusters['groups']['largest_gap'])}"
        )
    if clusters.get("note"):
        bullets.append(f"- note: {clusters['note']}")
    out.append("\n".join(bullets))
    return out


def _transfer_section(transfer: Any) -> list[str]:
    """Transfer along single task vectors: gain, slope at θ0, best λ."""
    out: list[str] = []
    src, tgt = transfer["sources"], transfer["targets"]
    out.append("## Transfer along single task vectors (θ0 + λ·τs)")
    ref = ", ".join(f"{t}: {transfer['reference']['norm'][t]:.1f}%" for t in tgt)
    out.append(f"Normalised performance at θ0 (every head on the pretrained encoder): {ref}.")
    out.append("### Gain A[s→t] = max_λ P_t(θ0 + λτs) − P_t(θ0) (percentage points; rows = source s)")
    out.append(matrix_table(transfer["gain"], src, tgt, "{:.2f}", "source \\ target"))
    lam1 = transfer.get("slope_lambda")
    lam1_text = f"{lam1:g}" if lam1 is not None else "—"
    out.append(f"### Slope at θ0, (P_t(λ1) − P_t(θ0)) / λ1 with λ1 = {lam1_text}")
    out.append(matrix_table(transfer["slope0"], src, tgt, "{:+.2f}", "source \\ target"))
    out.append("### Best λ per (source, target)")
    out.append(matrix_table(transfer["best_lambda"], src, tgt, "{:.2f}", "source \\ target"))
    return out


def _interference_section(interference: Any, tasks: Sequence[str]) -> list[str]:
    """Measured pairwise interference and the λ chosen per pair."""
    out: list[str] = []
    out.append("## Measured pairwise interference (task arithmetic on every pair)")
    out.append(
        "I[s,t] = 100 − normalised performance of t when merged with s (percentage points lost against "
        f"t's expert; negative = better than the expert). λ per pair from {interference['lambdas']} "
        f"chosen on the {interference['selection']}."
    )
    out.append(matrix_table(interference["matrix"], tasks, fmt="{:.2f}", corner="merged with s \\ task t"))
    out.append("### Selected λ per pair")
    out.append(matrix_table(interference["selected_lambda"], tasks, fmt="{:.2f}"))
    return out


def _agreement_section(agreement: Any) -> list[str]:
    """Spearman ρ of every data-free predictor against measured interference."""
    out: list[str] = []
    out.append("## Do the data-free predictors agree with measured interference?")
    out.append(
        "Spearman ρ over unordered pairs, interference symmetrised ((I[s,t] + I[t,s])/2). "
        "Oriented so that ρ > 0 = the predictor works as hypothesised: high cosine / high "
        "transfer gain → low interference, high sign conflict → high interference. p-values treat "
        "pairs as independent (they share tasks): read them as descriptive."
    )
    rows = [
        "| predictor | hypothesis | ρ | p | p method | pairs | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, a in agreement.items():
        hyp = "high → low interference" if a["orientation"] == "low" else "high → high interference"
        rows.append(
            f"| {name} | {hyp} | {_cell(a['spearman_rho'], '{:+.3f}')} | {_cell(a['p_value'], '{:.3g}')} "
            f"| {a['p_method'] or '—'} | {a['n_pairs']} | {a['note'] or ''} |"
        )
    out.append("\n".join(rows))
    return out


def _figures_section(figures: Any) -> list[str]:
    """Links to the PNG figures."""
    out: list[str] = []
    out.append("## Figures")
    out.append("\n".join(f"![{name}]({Path(p).name})" for name, p in figures.items()))
    return out


def affinity_markdown(results: Mapping[str, Any]) -> str:
    """The human-readable report: definitions, matrices as tables, groupings, agreement."""
    tasks = results["tasks"]
    out = ["# Task affinity", f"Tasks: {', '.join(tasks)}."]
    cosine = results.get("cosine")
    if cosine is not None:
        out += _cosine_section(cosine, tasks)
    conflict = results.get("sign_conflict")
    if conflict is not None:
        out += _sign_conflict_section(conflict, tasks)
    clusters = results.get("clusters")
    if clusters is not None:
        out += _clusters_section(clusters)
    transfer = results.get("transfer")
    if transfer is not None:
        out += _transfer_section(transfer)
    interference = results.get("interference")
    if interference is not None:
        out += _interference_section(interference, tasks)
    agreement = results.get("agreement")
    if agreement:
        out += _agreement_section(agreement)
    figures = results.get("figures")
    if figures:
        out += _figures_section(figures)
    return "\n\n".join(block.strip("\n") for block in out) + "\n"


def _groups(groups: Sequence[Sequence[str]]) -> str:
    return " | ".join("{" + ", ".join(g) + "}" for g in groups)


def write_affinity_report(out_dir: str | os.PathLike, results: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``affinity.json``, ``affinity.md`` and the PNGs for whichever parts ``results`` holds.

    ``results`` is what :func:`simo_merge.affinity.run_affinity` returns (keys ``tasks`` and any of
    ``cosine``, ``sign_conflict``, ``clusters``, ``transfer``, ``interference``, ``agreement``).
    Returns {name: path} of every file written.
    """
    if "tasks" not in results:
        raise KeyError(f"affinity results for {out_dir} need a 'tasks' entry; got keys {sorted(results)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = results["tasks"]
    figures: dict[str, Path] = {}
    if results.get("cosine") is not None:
        figures["cosine"] = plots.plot_cosine(results["cosine"], out / "cosine.png")
        figures["cosine_blocks"] = plots.plot_cosine_blocks(results["cosine"], out / "cosine_blocks.png")
    if results.get("sign_conflict") is not None:
        sc = results["sign_conflict"]
        figures["sign_conflict"] = plots.plot_matrix(
            sc["rate"], tasks, out / "sign_conflict.png", f"sign conflict rate (top-{sc['k']:g}%)", "%"
        )
    if results.get("clusters") is not None:
        figures["dendrogram"] = plots.plot_dendrogram(results["clusters"], out / "dendrogram.png")
    if results.get("interference") is not None:
        figures["interference"] = plots.plot_matrix(
            results["interference"]["matrix"],
            tasks,
            out / "interference.png",
            "interference I[s,t]: loss of t (col) merged with s (row)",
            "percentage points lost",
            diverging=True,
            fmt="{:.1f}",
        )
    if results.get("transfer") is not None:
        figures["transfer_curves"] = plots.plot_transfer_curves(
            results["transfer"], out / "transfer_curves.png"
        )
    full = {
        **results,
        "units": {
            "sign_conflict.rate": "%",
            "interference": "percentage points",
            "transfer": "% of the expert (gain: percentage points)",
        },
        "figures": {k: p.name for k, p in figures.items()},
    }
    written = {
        "json": write_json(out / "affinity.json", to_jsonable(full), on_rank_zero()),
        "markdown": write_text(out / "affinity.md", affinity_markdown(full), on_rank_zero()),
    }
    return {**written, **figures}
