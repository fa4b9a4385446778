"""The ``simo-merge`` command line: a thin layer over the library functions."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from simo_merge import __version__


def _config_path(value: str | None, default: str | None) -> Path | None:
    """``--config``'s file: a path when it has a folder part or a ``.yaml``/``.yml`` suffix, else the built-in
    config of that name; without ``--config``, the job's built-in default (None: none). A file in the working
    directory never stands in for a built-in name (``./demo`` names that file)."""
    from simo_merge.configs import builtin_config

    if value is None:
        return builtin_config(default) if default else None
    path = Path(value)
    if path.suffix in (".yaml", ".yml") or os.sep in value:
        return path
    try:
        return builtin_config(value)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"--config {value}: {err}; a file is named with a path (./{value})") from None


def _claim(args: argparse.Namespace, folder: str, key: str = "output_dir") -> None:
    """Check that ``folder`` is writable and hold its run lock until the command returns."""
    from simo_merge.io.outputs import claim_output_dir

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


@dataclass(frozen=True)
class Job:
    """A command's job module (``Config``, ``DEFAULT_CONFIG``, ``output_folder(cfg)``, ``run(cfg)``:
    simo_merge/jobs/__init__.py), its help texts, and whether it runs on several processes
    (``runtime.devices``/``num_nodes`` > 1; a job that does not is refused before any spawn)."""

    module: str
    help: str
    config_help: str
    overrides_help: str
    multi_process: bool


JOBS: dict[str, Job] = {
    "merge": Job(
        "simo_merge.jobs.merge",
        "merge an expert pool into one encoder checkpoint",
        "YAML file or built-in config name (e.g. merge_toy: a generated pool)",
        "key=value overrides, e.g. method.name=ties method.params.k=20",
        # AdaMerging splits batches over ranks (gradients summed); other merges run alike
        multi_process=True,
    ),
    "demo": Job(
        "simo_merge.jobs.demo",
        "dense SIMO demo: train experts, merge, evaluate, report",
        "YAML file or built-in config name (default: demo)",
        "key=value overrides, e.g. expert.finetune_steps=200",
        # DDP training, sharded evaluation, shared feature tables; reuse decided by all ranks
        multi_process=True,
    ),
    "train-experts": Job(
        "simo_merge.jobs.train_experts",
        "θ0 (pretrained here or from encoder.checkpoint/pretrained) + one expert per task",
        "YAML file or built-in config name (default: demo)",
        "key=value overrides",
        # θ0 pretraining and expert fine-tuning run as DDP (training/loop.py); rank 0 writes
        multi_process=True,
    ),
    "realign": Job(
        "simo_merge.jobs.realign",
        "realign a merged encoder to each task's frozen head (adapters)",
        "YAML file with a RealignJobConfig (optional)",
        "e.g. pool.dir=runs/demo/experts realign.realigners=[deep] realign.params.rank=16",
        # feature-cache batches split over ranks, the same training on each; rank 0 writes
        multi_process=True,
    ),
    "affinity": Job(
        "simo_merge.jobs.affinity",
        "task affinity from task vectors, checked against measured interference",
        "YAML file with an AffinityJobConfig (optional)",
        "e.g. pool.dir=runs/demo/experts measured=false k=20",
        # every evaluation reads rank shards and sums metric states; nothing reused from disk
        multi_process=True,
    ),
    "evaluate": Job(
        "simo_merge.jobs.evaluate",
        "evaluate a pool folder and optionally a merged encoder checkpoint",
        "YAML file with an EvaluateConfig (optional)",
        "e.g. pool.dir=runs/demo/experts checkpoint=merged.safetensors",
        # each rank evaluates a shard; metrics are summed over ranks (training/evaluate.py)
        multi_process=True,
    ),
}
BENCHES: dict[str, Job] = {  # ``bench <suite>``
    "clip": Job(
        "simo_merge.jobs.clip",
        "8/14/20-task CLIP classification (tasks=8|14|20 or a list), papers' tables",
        "YAML file or built-in config name (e.g. clip, clip_standin)",
        "e.g. methods=[task_arithmetic,ties,adamerging] realign.realigners=[surgery,deep]",
        # rows evaluated on rank shards, realigners' tables shared; rank 0 decides reuse, writes
        multi_process=True,
    ),
}


def _multi_process_commands() -> list[str]:
    """The commands that run on several processes (for the refusal message)."""
    commands = {**JOBS, **{f"bench {name}": job for name, job in BENCHES.items()}}
    return [command for command, job in commands.items() if job.multi_process]


def run_job(spec: Job, args: argparse.Namespace) -> int:
    """Load the job's config (file or built-in name, + flags and key=value overrides), claim its output
    folder for the duration of the run, run it."""
    import importlib

    from simo_merge.config import ConfigError, load_config

    job = importlib.import_module(spec.module)
    flags = [
        f"{key}={getattr(args, flag[2:])}"
        for flag, (key, _) in getattr(job, "FLAGS", {}).items()
        if getattr(args, flag[2:], None) is not None
    ]
    cfg = load_config(job.Config, _config_path(args.config, job.DEFAULT_CONFIG), flags + args.overrides)
    from simo_merge.peers import check_shared_folder, decided_on_rank_zero, watching_peers
    from simo_merge.runtime import started

    if cfg.runtime.processes() > 1 and not spec.multi_process:  # before any spawn
        raise ConfigError(
            f"runtime.devices={cfg.runtime.devices} runtime.num_nodes={cfg.runtime.num_nodes}: "
            f"{args.command} runs in one process for now; multi-process runs are supported by: "
            + ", ".join(_multi_process_commands())
        )
    with started(cfg.runtime) as runtime, watching_peers(runtime, f"simo-merge {args.command}"):
        cfg.runtime = runtime.cfg  # the resolved device, precision and workers land in config.yaml

        def claim() -> tuple[str, str]:  # rank 0 locks the folder; every rank stops if it cannot
            print(f"{runtime.describe()}", flush=True)
            folder, key = job.output_folder(cfg)
            _claim(args, folder, key)
            return folder, key

        folder, key = decided_on_rank_zero(runtime, claim)
        check_shared_folder(runtime, folder, key)
        if not runtime.is_global_zero:  # rank 0 alone reports: the other ranks' prints go nowhere
            args.resources.enter_context(contextlib.redirect_stdout(open(os.devnull, "w")))  # noqa: SIM115
        job.run(cfg)
        runtime.barrier()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simo-merge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"simo-merge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("methods", help="list merge methods and transforms")
    p.set_defaults(func=cmd_methods)

    for name, job in JOBS.items():
        p = sub.add_parser(name, help=job.help)
        p.add_argument("--config", help=job.config_help)
        p.add_argument("overrides", nargs="*", help=job.overrides_help)
        p.set_defaults(func=lambda args, job=job: run_job(job, args))

    suites = "; ".join(f"{name}: {job.help}" for name, job in BENCHES.items())
    p = sub.add_parser("bench", help=f"benchmarks ({suites})")
    p.add_argument("suite", choices=sorted(BENCHES))
    p.add_argument("--config", help="; ".join(job.config_help for job in BENCHES.values()))
    from simo_merge.jobs.clip import FLAGS

    for flag, (_, flag_help) in FLAGS.items():
        p.add_argument(flag, help=flag_help)
    p.add_argument("overrides", nargs="*", help="; ".join(job.overrides_help for job in BENCHES.values()))
    p.set_defaults(func=lambda args: run_job(BENCHES[args.suite], args))
    return parser


def main(argv: list[str] | None = None) -> int:
    from simo_merge.config import ConfigError
    from simo_merge.io.checkpoint import CheckpointError
    from simo_merge.io.lock import OutputLockedError
    from simo_merge.peers import PeerLostError
    from simo_merge.pool import ExpertMismatchError

    parser = build_parser()
    # key=value overrides may follow options (``bench clip --model M methods=[...]``): collect them too
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
        PeerLostError,  # another rank's process ended mid-run
        KeyError,
        ValueError,
        OSError,  # FileNotFoundError, PermissionError, IsADirectoryError, ... (their message names the path)
    ) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"simo-merge {args.command}: error: {message}", file=sys.stderr)
        _leave_process_group()
        return 2


def _leave_process_group() -> None:
    """After an error on several processes, tear down this rank's process group so that the backend's
    threads end before the interpreter does (gloo may otherwise abort the exit: "terminate called without
    an active exception", exit code -6 instead of 2)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):  # a peer already gone: nothing left to tear down with it
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
