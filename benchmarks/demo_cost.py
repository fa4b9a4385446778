"""What the default demo costs: wall seconds and CPU seconds (user + sys of the whole run, children included).

Runs ``simo-merge demo`` (extra ``key=value`` overrides pass through) in a child process into a scratch
output folder, then prints wall time, user, sys and their sum, and the demo's own phase timings from its
``metrics.json``. The issue-28 budget is 600 CPU-seconds on the 2-core development machine.

    python benchmarks/demo_cost.py                # the default demo
    python benchmarks/demo_cost.py full=true      # any override
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_CPU_SECONDS = 600.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides for the demo")
    parser.add_argument("--keep", type=Path, default=None, help="output folder to keep (default: scratch)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.keep or Path(scratch) / "demo"
        cmd = [sys.executable, "-m", "simo_merge.cli", "demo", "progress=false", f"output_dir={out}"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        start = time.perf_counter()
        proc = subprocess.run([*cmd, *args.overrides], env=env, check=False)
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            print(f"demo failed with exit code {proc.returncode}", file=sys.stderr)
            return proc.returncode
        timings = json.loads((out / "metrics.json").read_text()).get("timings", {})
    cpu = usage.ru_utime + usage.ru_stime
    print(f"\nwall {wall:.0f} s | user {usage.ru_utime:.0f} s | sys {usage.ru_stime:.0f} s | CPU {cpu:.0f} s")
    print(f"CPU budget {BUDGET_CPU_SECONDS:.0f} s: {'within' if cpu <= BUDGET_CPU_SECONDS else 'OVER'}")
    print("| phase | wall s |\n|---|---:|")
    for phase, seconds in timings.items():
        print(f"| {phase} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
