"""A classification (SISO) user's whole chain from the CLI alone, on two generated ``idx`` data sets with
different label counts and image sizes: ``train-experts`` (one θ0 file given as ``encoder.checkpoint``,
``data.per_task``) -> ``merge`` task_arithmetic and ties with ``method.grid`` on val -> ``realign`` with
every realigner -> ``evaluate`` (both merges in one call) -> ``affinity``; each step's numbers are
recomputed here with the Python API for the same seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from simo_merge.affinity import run_affinity
from simo_merge.cli import main
from simo_merge.data import DataConfig, build_split
from simo_merge.encoders import build_encoder
from simo_merge.features.inputs import RealignInputs
from simo_merge.io.checkpoint import load_state, read_sidecar
from simo_merge.merging import merge
from simo_merge.metrics.summary import normalized_performance
from simo_merge.pool.folder import load_pool_dir
from simo_merge.realign import REALIGNERS
from simo_merge.realign.train import RealignConfig, realign
from tests.helpers.idx_files import write_idx_classification
from tests.helpers.siso_checks import accuracy, rows_accuracy, state_model

pytestmark = pytest.mark.slow  # train-experts, merge, realign, evaluate and affinity end to end

KWARGS = {"img_size": 16, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
ARCH = "vit_tiny_patch16_224"
# task -> (classes, native image side, RGB): both resized to data.size=[16,16]
SETS = {"digits": (3, 12, False), "stripes": (2, 20, True)}
TASKS = ["digits", "stripes"]  # the pool folder's order (sorted head files)
GRID = [0.3, 0.6, 1.0]
METHODS = {"task_arithmetic": [], "ties": ["method.params.k=20"]}


def make_encoder():
    return build_encoder("timm", ARCH, **KWARGS)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Two idx data roots, one θ0 file and the ``train-experts`` run on them."""
    base = tmp_path_factory.mktemp("chain")
    roots = {t: base / "data" / t for t in TASKS}
    for i, (task, (classes, side, rgb)) in enumerate(SETS.items()):
        counts = {"train": 24, "val": 3 * classes, "test": 3 * classes}
        write_idx_classification(roots[task], classes, side, counts, seed=i, rgb=rgb)
    torch.manual_seed(0)
    theta0 = base / "theta0.safetensors"
    save_file({k: v.contiguous() for k, v in make_encoder().model_state().items()}, str(theta0))
    data = [
        "data.name=idx",
        "data.size=[16,16]",
        *(f"data.per_task.{t}={{root: {roots[t]}}}" for t in TASKS),
        "progress=false",
    ]
    recipe = ["expert.probe_steps=10", "expert.finetune_steps=10", "expert.probe_lr_head=0.03"]
    recipe += ["expert.lr_head=0.01", "expert.lr_encoder=0.002"]
    args = [
        "train-experts",
        f"encoder.arch={ARCH}",
        f"encoder.kwargs={{{', '.join(f'{k}: {v}' for k, v in KWARGS.items())}}}",
        f"encoder.checkpoint={theta0}",
        f"data.tasks=[{','.join(TASKS)}]",
        "data.batch_size=8",
        *recipe,
        *data,
        f"output_dir={base / 'train'}",
    ]
    return base, roots, theta0, data, args


def task_sets(roots: dict[str, Path], split: str) -> dict:
    """Each task's own data set of ``split``, as the Python API builds it."""
    return {
        t: build_split(DataConfig(name="idx", root=str(roots[t]), tasks=[t], size=[16, 16]), split, 0)
        for t in TASKS
    }


def individual(pool, sets: dict) -> dict[str, float]:
    return {t: accuracy(state_model(make_encoder, pool, pool.experts[t], [t]), sets, [t])[t] for t in TASKS}


def test_classification_chain_from_the_cli(chain, capsys):
    base, roots, theta0, data, train_args = chain
    out = base / "runs"

    # train-experts: one θ0 (the given file), one expert per task on its own data set and label space
    assert main(train_args) == 0, capsys.readouterr().err
    log = capsys.readouterr().out
    assert "expert recipe: probe 10 steps (head lr 0.03), fine-tune 10 steps (encoder lr 0.002" in log
    assert "the real-backbone recipe (θ0 from encoder.checkpoint)" in log
    assert "digits: training augmentation none (task-kind policy)" in log
    pool_dir = base / "train" / "experts"
    pool = load_pool_dir(pool_dir)
    assert pool.tasks == TASKS
    given = make_encoder()
    given.load_model_state(load_state(theta0))
    assert all(torch.equal(pool.base[k], v) for k, v in given.model_state().items())
    heads = pool.frozen_heads()
    assert {t: heads[t].task.channels for t in TASKS} == {"digits": 3, "stripes": 2}
    for t in TASKS:
        trained_on = read_sidecar(pool_dir / f"{t}.safetensors")["trained_on"]
        assert trained_on == {
            "dataset": "idx",
            "root": str(roots[t]),
            "split": "train",
            "augmentation": "none (task-kind policy)",
        }
        assert any(not torch.equal(pool.experts[t][k], pool.base[k]) for k in pool.base)

    val_sets, test_sets = task_sets(roots, "val"), task_sets(roots, "test")
    val_individual, test_individual = individual(pool, val_sets), individual(pool, test_sets)
    assert val_individual["digits"] > 50  # the digits expert learned its bands (chance: 33 %)

    # merge with λ chosen on val: the written λ is the best val candidate recomputed here
    merged_paths = {}
    for method, params in METHODS.items():
        run = out / method
        args = ["merge", f"pool.dir={pool_dir}", f"method.name={method}", *params]
        args += [f"method.grid=[{','.join(map(str, GRID))}]", "split=val", *data, f"output_dir={run}"]
        assert main(args) == 0, capsys.readouterr().err
        kwargs = {"k": 20} if method == "ties" else {}
        scores = []
        for lam in GRID:
            acc = accuracy(
                state_model(make_encoder, pool, merge(pool, method, lam=lam, **kwargs), TASKS),
                val_sets,
                TASKS,
            )
            baseline = {t: {"accuracy": a} for t, a in val_individual.items()}
            scores.append(
                normalized_performance({t: {"accuracy": a} for t, a in acc.items()}, baseline)["mean"]
            )
        best = GRID[int(np.argmax(scores))]  # the first best
        meta = read_sidecar(run / "merged.safetensors")
        assert meta["selection"]["chosen"]["lam"] == best and meta["hyperparameters"]["lam"] == best
        assert [c["score"] for c in meta["selection"]["candidates"]] == pytest.approx(scores)
        assert meta["data"] == {t: {"dataset": "idx", "root": str(roots[t]), "split": "val"} for t in TASKS}
        sweep = json.loads((run / "metrics.json").read_text())
        assert [c["lam"] for c in sweep["candidates"]] == GRID and sweep["chosen"]["lam"] == best
        assert (run / "sweep.png").stat().st_size > 0
        got, expected = load_state(run / "merged.safetensors"), merge(pool, method, lam=best, **kwargs)
        assert all(torch.equal(got[k], expected[k]) for k in expected), method
        assert f"chose lam={best:g} on val" in capsys.readouterr().out
        merged_paths[method] = run / "merged.safetensors"

    # realign the λ-chosen TA merge with every realigner on each task's unlabelled val inputs
    merged = load_state(merged_paths["task_arithmetic"])
    val_images = {t: torch.stack([s[i]["image"] for i in range(len(s))]) for t, s in val_sets.items()}
    realigners = REALIGNERS.names()
    assert {"surgery", "deep", "shared-deep", "taps", "heads"} <= set(realigners)
    for r in realigners:
        run = out / f"realign_{r}"
        args = [f"pool.dir={pool_dir}", f"checkpoint={merged_paths['task_arithmetic']}"]
        args += [f"realign.realigners=[{r}]", "realign.params={steps: 2, rank: 4, batch_size: 4}"]
        assert main(["realign", *args, *data, f"output_dir={run}"]) == 0, capsys.readouterr().err
        log = capsys.readouterr().out
        assert f"realign: training {r} (steps=2) done in" in log
        assert not (run / "bias.png").exists() and not (run / "tsne.png").exists()  # diagnostics: asked
        result = json.loads((run / "metrics.json").read_text())
        cfg = RealignConfig(realigner=r, steps=2, rank=4, batch_size=4, progress=False)
        model, curve = realign(
            make_encoder,
            merged,
            pool.experts,
            pool.frozen_heads(),
            RealignInputs(val_images, name="val"),
            cfg,
        )
        assert result["loss_curve"] == pytest.approx(curve, rel=1e-5), r
        assert rows_accuracy(result["rows"], f"task_arithmetic+{r}") == pytest.approx(
            accuracy(model.eval(), test_sets, TASKS), abs=1e-6
        ), r
        assert rows_accuracy(result["rows"], "Individual") == pytest.approx(test_individual, abs=1e-6)
        read = result["trained_on"]["per_task"]
        assert read == {
            t: {"dataset": "idx", "root": str(roots[t]), "split": "val", "num_inputs": len(val_sets[t])}
            for t in TASKS
        }

    # without checkpoint= realign merges with task arithmetic's one default (merge's too) and says so
    run = out / "realign_default"
    args = [f"pool.dir={pool_dir}", "realign.realigners=[surgery]", "realign.params={steps: 1, rank: 4}"]
    assert main(["realign", *args, *data, f"output_dir={run}"]) == 0, capsys.readouterr().err
    assert "realign: merging the pool with task_arithmetic {'lam': 0.3} (no checkpoint= given)" in (
        capsys.readouterr().out
    )
    assert read_sidecar(run / "adapters.safetensors")["merged"] == "task_arithmetic {'lam': 0.3}"
    result = json.loads((run / "metrics.json").read_text())
    default_ta = merge(pool, "task_arithmetic")  # λ = the function's default, as `merge` uses it
    want = accuracy(state_model(make_encoder, pool, default_ta, TASKS), test_sets, TASKS)
    assert rows_accuracy(result["rows"], "task_arithmetic") == pytest.approx(want, abs=1e-6)
    assert {"training surgery (steps=1)"} <= set(result["phase_seconds"])

    # evaluate both merges in one call: one row each, the Python API's accuracies
    report = out / "eval.json"
    files = ",".join(str(merged_paths[m]) for m in METHODS)
    assert main(["evaluate", f"pool.dir={pool_dir}", f"checkpoint=[{files}]", f"output={report}", *data]) == 0
    evaluated = json.loads(report.read_text())
    assert list(evaluated["rows"]) == ["Individual", "task_arithmetic", "ties"]
    for method, path in merged_paths.items():
        want = accuracy(state_model(make_encoder, pool, load_state(path), TASKS), test_sets, TASKS)
        assert rows_accuracy(evaluated["rows"], method) == pytest.approx(want, abs=1e-6), method
    assert evaluated["rows_of"] == {m: str(p) for m, p in merged_paths.items()}
    assert evaluated["data"]["digits"] == {"dataset": "idx", "root": str(roots["digits"]), "split": "test"}

    # affinity: task vectors and measured interference, each task on its own data set
    args = ["transfer_lambdas=[0.0,1.0]", "select_lambdas=[0.5,1.0]", *data, f"output_dir={out / 'affinity'}"]
    assert main(["affinity", f"pool.dir={pool_dir}", *args]) == 0, capsys.readouterr().err
    got = json.loads((out / "affinity" / "affinity.json").read_text())

    def evaluator(sets):
        def evaluate_state(state, tasks=None):
            names = list(tasks or TASKS)
            return {
                t: {"accuracy": a}
                for t, a in accuracy(state_model(make_encoder, pool, state, names), sets, names).items()
            }

        return evaluate_state

    mine = run_affinity(
        pool,
        block_of=make_encoder().block_of_key,
        evaluate_state=evaluator(test_sets),
        evaluate_val=evaluator(val_sets),
        baselines={t: {"accuracy": test_individual[t]} for t in TASKS},
        val_baselines={t: {"accuracy": val_individual[t]} for t in TASKS},
        transfer_lambdas=[0.0, 1.0],
        select_lambdas=[0.5, 1.0],
        progress=False,
    )
    assert got["tasks"] == TASKS
    assert got["data"]["stripes"]["val"] == {"dataset": "idx", "root": str(roots["stripes"]), "split": "val"}
    assert np.allclose(got["cosine"]["global"]["cosine"], mine["cosine"]["global"]["cosine"])
    assert np.allclose(got["interference"]["matrix"], mine["interference"]["matrix"], equal_nan=True)
