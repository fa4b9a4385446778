"""Check merge hyper-parameters before anything is merged: known names, right types, finite numbers.

Every caller (``merge()``, the CLI, the demo's start-up checks) goes through :func:`check_values`, so
``lam=nan`` or ``lam=abc`` is an error naming the method, the key and the value instead of an all-NaN
checkpoint or a traceback deep inside a method. The expected type is the default's type in the
method's signature (``k: float = 20.0`` takes ints and floats, ``steps: int = 500`` only ints).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _non_finite(value: Any) -> bool:
    """True for a non-finite float, also inside lists/tuples/dicts (e.g. per-task λ lists)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, Mapping):
        return any(_non_finite(v) for v in value.values())
    return False


def _type_error(default: Any, value: Any) -> str | None:
    """Why ``value`` cannot stand where ``default`` is the declared default (None: it can)."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if isinstance(default, float):
        if isinstance(value, Mapping):  # per-task values (e.g. consensus' tall_lambda={task: λ})
            ok = all(_is_number(v) for v in value.values())
            return None if ok else "must be a number or a mapping of task -> number"
        return None if _is_number(value) else "must be a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "must be a string"
    return None


def check_values(fn: Callable, given: Mapping[str, Any], what: str) -> None:
    """Raise ValueError naming ``what``, the key and the value for an unknown, mistyped or non-finite one."""
    params = {n: p for n, p in inspect.signature(fn).parameters.items() if p.kind == p.KEYWORD_ONLY}
    unknown = [k for k in given if k not in params]
    if unknown:
        raise ValueError(f"{what}: unknown hyper-parameter(s) {unknown}; accepted: {list(params)}")
    for key, value in given.items():
        default = params[key].default
        problem = _type_error(default, value) if default is not inspect.Parameter.empty else None
        if problem is None and _non_finite(value):
            problem = "must be finite"
        if problem:
            raise ValueError(f"{what}: {key}={value!r} {problem}")
