"""Several processes that do not add up: a launcher starting another number of processes than the
runtime section says, a second run on a locked folder, machines that do not share the output folder.
Each must stop every rank at start with one clear error line, before any work.

Ranks are started as torchrun starts them (its environment variables, :func:`run_ranks`), each rank a
separate process with its own output, so a test sees what every rank printed and returned."""

from __future__ import annotations

import pytest

from simo_merge.cli import main
from simo_merge.io.lock import output_lock
from tests.helpers import REPO
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


# ---------------------------------------------------------------------------------- a lost peer
@pytest.fixture(scope="module")
def realign_args(tmp_path_factory):
    """A realign run on 2 torchrun-style ranks of a tiny dense pool: 2000 iterations (the fault comes at
    the 3rd), no plots; the output folder is added per test."""
    from tests.helpers.toy_states import write_dense_pool

    encoder = {
        "library": "timm",
        "arch": "vit_tiny_patch16_224",
        "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
    }
    pool = write_dense_pool(tmp_path_factory.mktemp("pool"), encoder, ["semseg", "depth"], 0.02)
    return [
        "realign",
        f"pool.dir={pool}",
        "realign.realigners=[deep]",
        "realign.params={steps: 2000, batch_size: 4, rank: 2}",
        "data.size=[32,32]",
        "data.num_samples={val: 8, test: 8}",
        "tsne=false",
        "threads=1",
        "progress=false",
        "runtime.accelerator=cpu",
        "runtime.devices=1",
        "runtime.num_nodes=2",
        "runtime.strategy=ddp",
    ]


@pytest.mark.slow
def test_a_peer_lost_during_realignment_stops_the_other_rank_at_once_writing_nothing(realign_args, tmp_path):
    """Rank 1's process vanishes before realignment iteration 3 (exit code 0, no message, as a lost
    machine): rank 0 stops right after its own iteration 3 with one line naming rank 1, the iteration
    and what was left unwritten, and writes no adapters (it used to train all 2000 iterations alone,
    then write adapters, then fail in a gloo traceback)."""
    out = tmp_path / "out"
    script = str(REPO / "tests" / "helpers" / "peer_fault.py")
    zero, one = run_ranks([script, "1", "3", "exit", *realign_args, f"output_dir={out}"], [tmp_path] * 2)
    assert one.returncode == 0 and one.stderr.count("error") == 0
    line = error_line(zero)
    assert line.startswith("simo-merge realign: error: rank 0 lost rank 1 (its process ended")
    assert "during realign deep (joint), iteration 3 of 2000; stopped there" in line
    assert "not written: the deep adapters and the run's later outputs" in line
    assert not (out / "adapters.safetensors").exists() and not (out / "metrics.json").exists()


@pytest.mark.slow
def test_rank_zero_failing_during_realignment_stops_rank_one_with_one_line(realign_args, tmp_path):
    """Rank 0 raises in realignment iteration 3 (its own one-line error); rank 1 stops at its next
    iteration's check naming rank 0, not after 2000 lonely iterations nor in a gloo traceback."""
    out = tmp_path / "out"
    script = str(REPO / "tests" / "helpers" / "peer_fault.py")
    zero, one = run_ranks([script, "0", "3", "raise", *realign_args, f"output_dir={out}"], [tmp_path] * 2)
    assert error_line(zero).endswith("error: injected failure on rank 0 at iteration 3")
    line = error_line(one)
    assert line.startswith("simo-merge realign: error: rank 1 lost rank 0 (its process ended")
    assert "during realign deep (joint), iteration 3 of 2000; stopped there" in line
    assert not (out / "adapters.safetensors").exists() and not (out / "metrics.json").exists()
