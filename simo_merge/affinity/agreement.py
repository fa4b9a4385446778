"""Does a data-free predictor (cosine, sign conflict, transfer gain) rank pairs like measured interference?

Pairs are unordered: the interference matrix is symmetrised, Ī(s,t) = (I[s,t] + I[t,s]) / 2 (the mean
loss of the two tasks when merged), the predictor likewise ((P + Pᵀ)/2; cosine and sign conflict are
symmetric already), and the T(T−1)/2 upper-triangle pairs with finite values on both sides are compared
with Spearman's ρ.

Sign convention: ``orientation="low"`` means a *high* predictor value predicts *low* interference (cosine
similarity, transfer gain), so ρ is computed between −predictor and Ī; ``orientation="high"`` means a
high value predicts high interference (sign-conflict rate), ρ between +predictor and Ī. Either way
ρ > 0 means the predictor works as hypothesised, ρ < 0 that it ranks pairs the wrong way round.

p-values: exact (all permutations) for n_pairs ≤ 8, scipy's t approximation above. Both treat the pairs
as independent, which they are not (each task appears in T−1 pairs), so read them as descriptive.
With fewer than 3 pairs ρ is NaN (with a note): two points are always perfectly rank-correlated.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from itertools import permutations
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

ORIENTATIONS = ("low", "high")
EXACT_MAX_PAIRS = 8


def _exact_p(x: np.ndarray, y: np.ndarray, rho: float) -> float:
    """Two-sided exact permutation p-value of Spearman's ρ (ties handled through average ranks)."""
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt((rx**2).sum() * (ry**2).sum())
    perms = np.array(list(permutations(range(len(ry)))))
    rhos = (ry[perms] @ rx) / denom
    return float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))


def _checked(
    predictor: np.ndarray | Sequence[Sequence[float]],
    interference: np.ndarray | Sequence[Sequence[float]],
    names: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Both matrices as float64 T×T arrays and T names; a ValueError says which input does not fit."""
    p = np.asarray(predictor, dtype=np.float64)
    q = np.asarray(interference, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"predictor must be a square T×T matrix, got shape {p.shape}")
    if q.shape != p.shape:
        raise ValueError(f"interference has shape {q.shape}, predictor {p.shape}: they must match")
    size = p.shape[0]
    names = list(names) if names is not None else [str(i) for i in range(size)]
    if len(names) != size:
        raise ValueError(f"{len(names)} names for a {size}×{size} matrix")
    return p, q, names


def _spearman(signed: np.ndarray, y: np.ndarray, notes: list[str]) -> tuple[float, float, str | None]:
    """``(rho, p_value, p_method)`` of the finite pairs; NaNs (with a note appended) when undefined."""
    n = len(signed)
    if n < 3:
        notes.append(f"only {n} pair(s): Spearman's rho needs at least 3, reported as NaN")
        return math.nan, math.nan, None
    if np.ptp(signed) == 0 or np.ptp(y) == 0:
        notes.append("a constant input (all pairs tie): rho undefined, reported as NaN")
        return math.nan, math.nan, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr(signed, y)
    rho = float(res.statistic)
    if n < 10:
        notes.append(f"only {n} pairs: weak evidence whatever rho is")
    if n <= EXACT_MAX_PAIRS:
        return rho, _exact_p(signed, y, rho), "exact permutation"
    return rho, float(res.pvalue), "t approximation"


def agreement(
    predictor: np.ndarray | Sequence[Sequence[float]],
    interference: np.ndarray | Sequence[Sequence[float]],
    orientation: str = "low",
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Spearman ρ between an oriented pairwise predictor and symmetrised interference (see module doc).

    Returns ``{"spearman_rho", "p_value", "p_method", "n_pairs", "orientation", "note", "pairs":
    [{"a", "b", "predictor", "interference"}]}``; NaNs, not errors, when ρ is undefined (too few pairs,
    a constant input), with the reason in ``note``.
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    p, q, names = _checked(predictor, interference, names)
    p_sym, q_sym = (p + p.T) / 2, (q + q.T) / 2
    iu = np.triu_indices(p.shape[0], 1)
    x, y = p_sym[iu], q_sym[iu]
    keep = np.isfinite(x) & np.isfinite(y)
    pairs = [
        {"a": names[i], "b": names[j], "predictor": float(p_sym[i, j]), "interference": float(q_sym[i, j])}
        for i, j, k in zip(*iu, keep, strict=True)
        if k
    ]
    x, y = x[keep], y[keep]
    dropped = int((~keep).sum())
    notes = [f"{dropped} pair(s) with a non-finite value dropped"] if dropped else []
    rho, p_value, p_method = _spearman(-x if orientation == "low" else x, y, notes)
    return {
        "spearman_rho": rho,
        "p_value": p_value,
        "p_method": p_method,
        "n_pairs": int(len(x)),
        "orientation": orientation,
        "note": "; ".join(notes),
        "pairs": pairs,
    }
