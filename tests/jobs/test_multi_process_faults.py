"""Several processes that do not add up: a launcher starting another number of processes than the
runtime section says, a second run on a locked folder, machines that do not share the output folder.
Each must stop every rank at start with one clear error line, before any work.

Ranks are started as torchrun starts them (its environment variables, :func:`run_ranks`), each rank a
separate process with its own output, so a test sees what every rank printed and returned."""

from __future__ import annotations

import pytest

from simo_merge.cli import main
from simo_merge.io.lock import output_lock
from tests.helpers.subprocess_runs import run_ranks

TINY = ["encoder.kwargs={img_size: 32, patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}"]
MERGE = ["-m", "simo_merge.cli", "merge", "--config", "merge_toy", *TINY, "runtime.accelerator=cpu"]


def error_line(done) -> str:
    """The last line of a rank that stopped with exit code 2 and one error line (after Fabric's start-up
    banner), no traceback."""
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stderr.count("error:") == 1, done.stderr[-2000:]
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "launcher, env",
    [
        ("torchrun", {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}),
        ("srun", {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "job", "SLURM_PROCID": "0"}),
    ],
)
def test_a_launcher_starting_another_number_of_processes_is_refused(
    launcher, env, monkeypatch, tmp_path, capsys
):
    """``torchrun --nproc_per_node=2 ... runtime.devices=1`` (or srun with 2 tasks) would run two whole
    jobs side by side, each writing the folder: refused before anything starts."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(
        ["merge", "--config", "merge_toy", *TINY, "runtime.accelerator=cpu", f"output_dir={tmp_path / 'o'}"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"runtime.devices=1 x runtime.num_nodes=1 = 1 process(es), but {launcher} started 2" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_torchrun_with_more_processes_than_devices_stops_every_rank(tmp_path):
    """The real thing: 2 ranks started the torchrun way with ``runtime.devices=1``: both stop, nothing
    written."""
    ranks = run_ranks([*MERGE, f"output_dir={tmp_path / 'o'}"], [tmp_path, tmp_path])
    for done in ranks:
        assert "but torchrun started 2" in error_line(done)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_locked_folder_stops_every_rank_before_any_work(tmp_path):
    """Another run holds the folder's lock: rank 0 cannot take it, and rank 1 stops too (it used to work
    unlocked until it missed rank 0); nothing is written."""
    out = tmp_path / "o"
    args = [*MERGE, f"output_dir={out}", "runtime.devices=1", "runtime.num_nodes=2", "runtime.strategy=ddp"]
    with output_lock(out):
        ranks = run_ranks(args, [tmp_path, tmp_path])
    for done in ranks:
        assert (
            error_line(done).startswith("simo-merge merge: error: ")
            and "another simo-merge run" in done.stderr
        )
    assert sorted(p.name for p in out.iterdir()) == [".simo_merge.lock"]


@pytest.mark.slow
def test_machines_that_do_not_share_the_output_folder_stop_at_start(tmp_path):
    """Two "machines" (ranks in different working folders, the output folder given relative): rank 1
    does not see what rank 0 writes there, so both stop at start naming the rank, its node and the need
    for a shared file system (rank 1 used to finish silently while rank 0 wrote alone)."""
    (tmp_path / "node0").mkdir()
    (tmp_path / "node1").mkdir()
    args = [*MERGE, "output_dir=out", "runtime.devices=1", "runtime.num_nodes=2", "runtime.strategy=ddp"]
    ranks = run_ranks(args, [tmp_path / "node0", tmp_path / "node1"])
    for done in ranks:
        line = error_line(done)
        assert "output_dir=out: rank(s) 1 (node 1) do not see the file rank 0 wrote there" in line
        assert "file system every machine mounts" in line
    assert sorted(p.name for p in (tmp_path / "node0" / "out").iterdir()) == [".simo_merge.lock"]
    assert not (tmp_path / "node1" / "out").exists()
