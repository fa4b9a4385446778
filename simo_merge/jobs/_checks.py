"""Start-up checks of job configs: every name, value and combination that cannot work fails before any
training, with the key and value named (a typo in the last realigner must not cost an hour of training).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from simo_merge.config import ConfigError


def check_names(key: str, names: Iterable[str], registry: Any) -> None:
    """Raise ConfigError for the first of ``names`` that ``registry`` does not know."""
    for name in names:
        if name not in registry:
            raise ConfigError(
                f"{key}: unknown {registry.family} {name!r}; known: {', '.join(registry.names())}"
            )


def check_method_list(key: str, entries: list[Any]) -> list[Any]:
    """The checked :class:`MethodSpec` list of a job's ``key``."""
    from simo_merge.merging.spec import check_specs, method_specs

    try:
        specs = method_specs(entries, key)
        check_specs(specs, key)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return specs


def check_demo_realign(rc: Any, full: bool) -> list[tuple[str, Any]]:
    """The demo's realignment settings and the (row, settings) each ``realign.apply_to`` entry names."""
    try:
        rc.settings().check("realign")
        targets = rc.targets(full)
        for i, (_, settings) in enumerate(targets):
            settings.check(f"realign.apply_to[{i}]", params_key="realign.params")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return targets


def check_data(cfg: Any, roles: Iterable[str]) -> None:
    """The data set and its options exist (:func:`~simo_merge.data.check_data_config`), the splits the job
    reads exist, a training split holds at least one batch."""
    from simo_merge.data import check_data_config

    check_data_config(cfg)
    for role in roles:
        if role not in cfg.splits:
            raise ConfigError(f"data.splits has no {role!r} entry: {dict(cfg.splits)}")
    train = cfg.num_samples.get("train") if cfg.name == "synthetic_scenes" else None
    if train is not None and train < cfg.batch_size:
        raise ConfigError(
            f"data.num_samples.train={train} < data.batch_size={cfg.batch_size}: "
            "training drops incomplete batches, so not one batch would be drawn"
        )


def check_selection(data: Any) -> None:
    """A protocol choosing λ by ΔMTL against the SIMO code's constants (protocol ``simo``) has them for
    ``data``'s dataset and (when listed) tasks."""
    from simo_merge.metrics.selection import simo_single_task
    from simo_merge.protocols import get_protocol

    if get_protocol(data.protocol).selection != "delta_mtl":
        return
    try:
        simo_single_task(data.name, list(data.tasks or []))
    except ValueError as err:
        raise ConfigError(f"data.protocol={data.protocol}: {err}") from err


def check_demo_config(cfg: Any) -> set[str]:
    """Every check :class:`simo_merge.jobs.demo.DemoConfig` needs before its run starts; the objectives
    of the realigners it trains (whose inputs the caller checks)."""
    from simo_merge.data import check_image_size
    from simo_merge.merging import MERGE_METHODS

    rc, sweep = cfg.realign, cfg.merge
    specs = check_method_list("merge.methods", sweep.entries(cfg.full))
    if not sweep.lam_grid:  # its values are checked at load (config.check_numbers)
        raise ConfigError("merge.lam_grid: empty; λ is chosen on val from this grid")
    targets = check_demo_realign(rc, cfg.full)
    facts = [MERGE_METHODS.facts(spec.name) for spec in specs]
    rows = [f["label"] for f in facts if not f.get("per_task")]  # the rows with one merged encoder
    missing = [row for row, settings in targets if settings.names() and row not in rows]
    if missing:
        given = "" if rc.apply_to is not None else f" (null: the preset of full={cfg.full})"
        raise ConfigError(
            f"realign.apply_to{given} names {missing}, which are not rows of one merged encoder: {rows}"
        )
    probe = {sweep.split} if any(f["needs_data"] for f in facts) else set()
    check_data(cfg.data, {"train", "val", "test", rc.split, rc.label_split} | probe)
    check_selection(cfg.data)
    check_image_size(cfg.data, {"kwargs": cfg.encoder.kwargs}, "encoder.kwargs")
    trained = [rc.settings()] + [settings for _, settings in targets]
    return {settings.config(r).objective for settings in trained for r in settings.names()}
