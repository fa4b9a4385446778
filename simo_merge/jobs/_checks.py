"""Start-up checks of job configs: every name, value and combination that cannot work fails before any
training, with the key and value named (a typo in the last realigner must not cost an hour of training).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from simo_merge.config import ConfigError


def check_names(key: str, names: Iterable[str], registry: Any) -> None:
    """Raise ConfigError for the first of ``names`` that ``registry`` does not know."""
    for name in names:
        if name not in registry:
            raise ConfigError(
                f"{key}: unknown {registry.family} {name!r}; known: {', '.join(registry.names())}"
            )


def check_method_params(key: str, params: Mapping[str, Mapping[str, Any]], extra: Iterable[str] = ()) -> None:
    """Each ``method: {param: value}`` entry names a registered method and valid values for it."""
    from simo_merge.merging import MERGE_METHODS
    from simo_merge.merging._hyperparams import check_values

    check_names(key, params, MERGE_METHODS)
    for method, values in params.items():
        given = {k: v for k, v in dict(values).items() if k not in extra}
        try:
            check_values(MERGE_METHODS.get(method), given, f"{key}.{method}")
        except ValueError as err:
            raise ConfigError(str(err)) from err


def check_method_list(
    key: str,
    entries: list[Any],
    old: Mapping[str, Mapping[str, Any]],
    old_key: str,
    grids: Mapping[str, list[float]] | None = None,
) -> list[Any]:
    """The checked :class:`MethodSpec` list of a job's ``key``; ``old`` (``old_key``: method -> params)
    and ``grids`` are the older shape, checked under their own keys, then folded in."""
    from simo_merge.merging.spec import check_specs, deprecated, method_specs

    if old:
        deprecated(old_key, f"{key}: [{{name: ..., params: {{...}}}}]")
        check_method_params(old_key, old)
    if grids:
        deprecated(old_key.rsplit(".", 1)[0] + ".grids", f"{key}: [{{name: ..., grid: [...]}}]")
    try:
        specs = method_specs(entries, key, old, grids)
        check_specs(specs, key)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return specs


def check_demo_realign(rc: Any, data_free_realigners: list[Any] | None) -> None:
    """The demo's realignment settings: older keys under their own names, then the one shape."""
    from simo_merge.merging.spec import deprecated
    from simo_merge.realign import REALIGNERS
    from simo_merge.realign.train import OBJECTIVES

    check_names("realign.objectives", rc.objectives, REALIGNERS)
    check_names("realign.recipes", rc.recipes, REALIGNERS)
    for realigner, objective in rc.objectives.items():
        if objective not in OBJECTIVES:
            raise ConfigError(f"realign.objectives.{realigner}={objective!r}: must be one of {OBJECTIVES}")
    old = [k for k in ("steps", "rank", "batch_size", "lr") if getattr(rc, k) is not None]
    old += [k for k in ("objectives", "recipes") if getattr(rc, k)]
    for key in old:
        deprecated(f"realign.{key}", "realign.params (shared) or realign.realigners: [{name, params}]")
    try:
        rc.current().check("realign")
        if data_free_realigners is not None:
            rc.current(data_free_realigners).check("data_free", params_key="realign.params")
    except ValueError as err:
        raise ConfigError(str(err)) from err


def check_data(cfg: Any, roles: Iterable[str]) -> None:
    """Splits the job reads exist; a training split holds at least one batch."""
    for role in roles:
        if role not in cfg.splits:
            raise ConfigError(f"data.splits has no {role!r} entry: {dict(cfg.splits)}")
    if cfg.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {cfg.batch_size}")
    train = cfg.num_samples.get("train") if cfg.name == "synthetic_scenes" else None
    if train is not None and train < cfg.batch_size:
        raise ConfigError(
            f"data.num_samples.train={train} < data.batch_size={cfg.batch_size}: "
            "training drops incomplete batches, so not one batch would be drawn"
        )


def check_demo_config(cfg: Any) -> None:
    """Every check :class:`simo_merge.jobs.demo.DemoConfig` needs before its run starts."""
    from simo_merge.merging import MERGE_METHODS

    rc, dd, df = cfg.realign, cfg.data_dependent, cfg.data_free
    merged = check_method_list("merge.methods", cfg.merge.methods, cfg.merge.params, "merge.params")
    if not cfg.merge.lam_grid:
        raise ConfigError("merge.lam_grid: empty; λ is chosen on val from this grid")
    bad = [v for v in cfg.merge.lam_grid if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"merge.lam_grid: {bad[0]} is not a finite number")
    check_demo_realign(rc, df.realigners if cfg.full else None)
    rows = [MERGE_METHODS.facts(spec.name)["label"] for spec in merged]
    apply_to = list(rc.apply_to)
    if cfg.full:
        key = "data_dependent"
        specs = check_method_list(f"{key}.methods", dd.methods, dd.params, f"{key}.params")
        rows += [MERGE_METHODS.facts(spec.name)["label"] for spec in specs]
        apply_to += list(dd.realign_on)
        check_method_list("data_free.methods", df.methods, df.params, "data_free.params", df.grids)
    missing = [name for name in apply_to if name not in rows]
    if missing and rc.realigners:
        raise ConfigError(f"realign.apply_to / realign_on name {missing}, which are not merged rows: {rows}")
    check_data(
        cfg.data, {"train", "val", "test", rc.split, rc.label_split} | ({dd.split} if cfg.full else set())
    )
