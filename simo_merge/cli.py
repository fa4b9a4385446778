"""The ``simo-merge`` command line: a thin layer over the library functions."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import sys
import time
from pathlib import Path

from simo_merge import __version__


def _config_path(value: str | None, default: str) -> Path:
    """A config given as a file path, or the name of a built-in config."""
    from simo_merge.configs import builtin_config

    if value is None:
        return builtin_config(default)
    path = Path(value)
    return path if path.suffix in (".yaml", ".yml") or path.exists() else builtin_config(value)


def _job_config(schema: type, args: argparse.Namespace, default: str | None = None):
    """``schema`` from ``--config`` (file or built-in name; ``default`` if absent) + key=value overrides."""
    from simo_merge.config import load_config

    path = _config_path(args.config, default) if (args.config or default) else None
    return load_config(schema, path, args.overrides)


def _claim(args: argparse.Namespace, folder: str, key: str = "output_dir") -> None:
    """Check that ``folder`` is writable and hold its run lock until the command returns."""
    from simo_merge.outputs import claim_output_dir

    args.resources.enter_context(claim_output_dir(folder, key))


def cmd_methods(args: argparse.Namespace) -> int:
    """List the registered merge methods and task-vector transforms with their hyper-parameters."""
    from simo_merge.merging import MERGE_METHODS, TV_TRANSFORMS

    for title, registry in (("merge methods", MERGE_METHODS), ("task-vector transforms", TV_TRANSFORMS)):
        print(f"{title}:")
        for name in registry.names():
            fn = registry.get(name)
            params = [
                f"{p.name}={p.default!r}"
                for p in inspect.signature(fn).parameters.values()
                if p.kind == p.KEYWORD_ONLY
            ]
            doc = (inspect.getmodule(fn).__doc__ or "").strip().splitlines()[0]
            print(f"  {name:<18} {', '.join(params) or '(no hyper-parameters)':<24} {doc}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """pool + method -> merged safetensors checkpoint (+ JSON sidecar and resolved config)."""
    from simo_merge.atomic import write_text
    from simo_merge.checkpoint import save_state
    from simo_merge.config import ConfigError, MergeJobConfig, to_yaml
    from simo_merge.merging import MERGE_METHODS, merge
    from simo_merge.merging.api import check_hyperparameters, resolved_merge_parameters
    from simo_merge.pool_spec import describe, resolve_pool

    cfg = _job_config(MergeJobConfig, args)
    _claim(args, cfg.output_dir)
    start = time.perf_counter()
    fn = MERGE_METHODS.get(cfg.method.name)
    check_hyperparameters(fn, cfg.method.params, f"method {cfg.method.name!r}")
    needs_data = "probe" in inspect.signature(fn).parameters
    if needs_data and cfg.data is None:
        raise ConfigError(
            f"method {cfg.method.name!r} needs unlabelled inputs: give a data section (data.name=..., "
            "data.root=..., or data.per_task.<task>={name: ..., root: ...} for one data set per task)"
        )
    pool = resolve_pool(cfg.pool, cfg.pool_dir, cfg.encoder, need_heads=needs_data, need_encoder=needs_data)
    probe_inputs = None
    if needs_data:
        from simo_merge.data import build_task_splits
        from simo_merge.realign.job import merge_with_inputs, split_inputs

        probe_inputs = split_inputs(build_task_splits(cfg.data, pool.tasks, cfg.split, cfg.seed), cfg.split)
        merged = merge_with_inputs(pool, cfg.method, probe_inputs, cfg.seed, progress=True)
    else:
        merged = merge(pool, cfg.method.name, transforms=cfg.method.transforms, **cfg.method.params)
    out_dir = Path(cfg.output_dir)
    resolved = resolved_merge_parameters(cfg.method.name, cfg.method.params, cfg.method.transforms)
    out = save_state(
        out_dir / "merged.safetensors",
        merged,
        {
            "method": cfg.method.name,
            **resolved,  # hyperparameters / transforms with every default filled in
            "given": {"hyperparameters": cfg.method.params, "transforms": cfg.method.transforms},
            "tasks": pool.tasks,
            "pool": describe(cfg.pool, cfg.pool_dir),
            "sources": pool.sources,
            "encoder": pool.encoder_config or None,  # the pool's (θ0's sidecar), not a CLI default
            **(
                {"probe_inputs": {t: [cfg.split, int(x.shape[0])] for t, x in probe_inputs.images.items()}}
                if probe_inputs
                else {}
            ),
        },
    )
    write_text(out_dir / "config.yaml", to_yaml(cfg))
    n_params = sum(v.numel() for v in merged.values())
    print(
        f"merged {len(pool.tasks)} experts ({', '.join(pool.tasks)}) with {cfg.method.name} "
        f"{resolved['hyperparameters']} -> {out} ({n_params:,} values, {time.perf_counter() - start:.1f}s)"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The dense SIMO demo on the built-in synthetic scenes (or any dataset the config names)."""
    from simo_merge.demo import run_demo

    run_demo(_config_path(args.config, "demo"), args.overrides)
    return 0


def cmd_train_experts(args: argparse.Namespace) -> int:
    """θ0 (pretrained here, or read from encoder.checkpoint / encoder.pretrained) and one fine-tuned expert
    per task (the demo's first step) into a pool folder."""
    from simo_merge.demo import Demo, DemoConfig

    cfg = _job_config(DemoConfig, args, "demo")
    _claim(args, cfg.output_dir)
    demo = Demo(cfg)
    pool = demo.experts()
    print(f"expert pool ({', '.join(pool.tasks)}) in {demo.pool_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """A pool folder (+ a merged encoder checkpoint) -> per-task metrics table and JSON."""
    from simo_merge.evaluate_job import EvaluateConfig, output_path, run_evaluate
    from simo_merge.outputs import check_output_file

    cfg = _job_config(EvaluateConfig, args)
    _claim(args, str(check_output_file(output_path(cfg), "output").parent), "the folder of output")
    run_evaluate(cfg)
    return 0


def cmd_realign(args: argparse.Namespace) -> int:
    """Train a realigner on a merged encoder; write adapters, bias diagnostics, t-SNE and metrics."""
    from simo_merge.realign.job import RealignJobConfig, run_realign_job

    cfg = _job_config(RealignJobConfig, args)
    _claim(args, cfg.output_dir)
    run_realign_job(cfg)
    return 0


def cmd_affinity(args: argparse.Namespace) -> int:
    """Task affinity of a pool: task-vector cosines / sign conflicts / clusters, transfer, interference."""
    from simo_merge.affinity_job import AffinityJobConfig, run_affinity_job

    cfg = _job_config(AffinityJobConfig, args)
    _claim(args, cfg.output_dir)
    run_affinity_job(cfg)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``bench clip8``: the eight-task CLIP classification benchmark as the Surgery papers lay it out."""
    from simo_merge.clip_bench import Clip8Config, run_clip8
    from simo_merge.config import load_config

    flags = [
        f"{key}={value}"
        for key, value in (("model", args.model), ("checkpoints", args.checkpoints), ("data", args.data))
        if value is not None
    ]
    config = _config_path(args.config, "clip8") if args.config else None
    cfg = load_config(Clip8Config, config, flags + args.overrides)
    _claim(args, cfg.output_dir)
    run_clip8(cfg)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simo-merge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"simo-merge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("methods", help="list merge methods and transforms")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("merge", help="merge an expert pool into one encoder checkpoint")
    p.add_argument("--config", help="YAML file or built-in config name (e.g. merge_toy: a generated pool)")
    p.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. method.name=ties method.params.k=20"
    )
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("demo", help="dense SIMO demo: train experts, merge, evaluate, report")
    p.add_argument("--config", help="YAML file or built-in config name (default: demo)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. expert.finetune_steps=200")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train-experts",
        help="θ0 (pretrained here or from encoder.checkpoint/pretrained) + one expert per task",
    )
    p.add_argument("--config", help="YAML file or built-in config name (default: demo)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.set_defaults(func=cmd_train_experts)

    p = sub.add_parser("realign", help="realign a merged encoder to each task's frozen head (adapters)")
    p.add_argument("--config", help="YAML file with a RealignJobConfig (optional)")
    p.add_argument(
        "overrides", nargs="*", help="e.g. realigner=deep objective=unsupervised rank=16 steps=500"
    )
    p.set_defaults(func=cmd_realign)

    p = sub.add_parser(
        "affinity", help="task affinity from task vectors, checked against measured interference"
    )
    p.add_argument("--config", help="YAML file with an AffinityJobConfig (optional)")
    p.add_argument("overrides", nargs="*", help="e.g. pool_dir=runs/demo/experts measured=false k=20")
    p.set_defaults(func=cmd_affinity)

    p = sub.add_parser("bench", help="benchmarks: clip8 (eight-task CLIP classification, papers' table)")
    p.add_argument("suite", choices=["clip8"])
    p.add_argument("--config", help="YAML file or built-in config name (e.g. clip8, clip8_standin)")
    p.add_argument("--model", help="open_clip architecture, e.g. ViT-B-32, ViT-B-16, ViT-L-14")
    p.add_argument(
        "--checkpoints",
        help="folder with <model>/zeroshot.pt and <model>/<Dataset>/finetuned.pt (or .safetensors)",
    )
    p.add_argument("--data", help="folder with the eight datasets in their on-disk layouts")
    p.add_argument(
        "overrides", nargs="*", help="e.g. methods=[task_arithmetic,ties,adamerging] realign=[surgery,deep]"
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("evaluate", help="evaluate a pool folder and optionally a merged encoder checkpoint")
    p.add_argument("--config", help="YAML file with an EvaluateConfig (optional)")
    p.add_argument(
        "overrides", nargs="*", help="e.g. pool_dir=runs/demo/experts checkpoint=merged.safetensors"
    )
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from simo_merge.checkpoint import CheckpointError
    from simo_merge.config import ConfigError
    from simo_merge.experts import ExpertMismatchError
    from simo_merge.lock import OutputLockedError

    parser = build_parser()
    # key=value overrides may follow options (``bench clip8 --model M methods=[...]``): collect them too
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if "=" not in a or a.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"{args.command} takes no key=value overrides: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        with contextlib.ExitStack() as resources:  # output locks taken by the command (_claim)
            args.resources = resources
            return args.func(args)
    except (
        ConfigError,
        CheckpointError,
        ExpertMismatchError,
        OutputLockedError,
        KeyError,
        ValueError,
        OSError,  # FileNotFoundError, PermissionError, IsADirectoryError, ... (their message names the path)
    ) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"simo-merge {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
