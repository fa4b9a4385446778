"""The ``runtime`` section (Lightning Fabric): config checks, and multi-process evaluation on 2 CPU
processes (gloo) giving exactly the one-process metrics."""

from __future__ import annotations

import itertools
import json
import os

import pytest
import torch
from torch.utils.data import DataLoader

from simo_merge.datasets import build_dataset
from simo_merge.encoders import build_encoder
from simo_merge.heads import build_head
from simo_merge.runtime import GlobalBatchShard, RankShard, RuntimeConfig
from tests.helpers import REPO
from tests.helpers.subprocess_runs import run_cli, run_python
from tests.helpers.toy_states import write_dense_pool

ENCODER = {
    "library": "timm",
    "arch": "vit_tiny_patch16_224",
    "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2},
}
TASKS = ["semseg", "depth", "normal"]


@pytest.mark.parametrize("n, world", [(37, 2), (5, 3), (1, 2), (64, 4)])
def test_rank_shards_partition_the_set(n, world):
    shards = [list(RankShard(n, r, world)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))  # nothing twice, nothing dropped


def test_training_shards_split_each_global_batch_of_the_one_process_order():
    """Rank r gets elements r, r + world, ... of the loader's own shuffled order, drawn at the same
    moments as one process would (partial epochs included), so the ranks' per-device batches together
    are the one-process run's global batch."""
    data = list(range(30))

    def loader(batch):
        return DataLoader(
            data, batch, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(7)
        )

    one, ranks = loader(6), [loader(3) for _ in range(2)]
    for taken in (2, 5, 3):  # batches read per pass: half an epoch, a full one (5 x 6 = 30), ...
        expected = list(itertools.islice(iter(one), taken))
        shards = [
            DataLoader(
                data, 3, sampler=GlobalBatchShard(r.sampler, i, 2), drop_last=True, generator=r.generator
            )
            for i, r in enumerate(ranks)
        ]
        got = [list(itertools.islice(iter(s), taken)) for s in shards]
        for step, batch in enumerate(expected):
            assert (
                batch[0::2].tolist() == got[0][step].tolist()
                and batch[1::2].tolist() == got[1][step].tolist()
            )
    assert len(GlobalBatchShard(range(31), 1, 2)) == 15  # the odd one out is left out on every rank


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("accelerator", "tpu", "runtime.accelerator='tpu'"),
        ("strategy", "deepspeed", "runtime.strategy='deepspeed'"),
        # Fabric's spawn launcher needs a function to launch; a job is a command line (ddp re-runs it)
        ("strategy", "ddp_spawn", "runtime.strategy='ddp_spawn': must be one of auto, ddp, fsdp"),
        ("precision", "8-bit", "runtime.precision='8-bit'"),
        ("devices", 0, "runtime.devices=0"),
        ("num_nodes", 0, "runtime.num_nodes=0"),
    ],
)
def test_bad_runtime_values_are_named(key, value, needle):
    with pytest.raises(ValueError) as err:
        RuntimeConfig(**{key: value}).validate()
    assert needle in str(err.value)


def test_defaults_resolve_for_this_machine():
    cfg = RuntimeConfig().resolved()
    if not torch.cuda.is_available():
        assert (cfg.accelerator, cfg.precision, cfg.num_workers) == ("cpu", "32-true", 0)
    assert RuntimeConfig(devices=2, accelerator="cpu").resolved().num_workers == min(4, os.cpu_count() or 1)


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    """A tiny dense pool folder: random θ0, experts θ0 + noise, random linear heads."""
    return write_dense_pool(tmp_path_factory.mktemp("pool"), ENCODER, TASKS, 0.02)


def run_evaluate(pool_dir, out, *overrides):
    args = [
        "evaluate",
        f"pool.dir={pool_dir}",
        "data.size=[32,32]",
        "data.num_samples.test=37",
        "batch_size=8",
        "threads=1",
        f"output={out}",
        "progress=false",
        *overrides,
    ]
    log = run_cli(*args, timeout=300)
    return json.loads(out.read_text()), log


@pytest.mark.slow
def test_two_processes_evaluate_exactly_like_one(pool_dir, tmp_path):
    """37 test images (odd) over 2 gloo processes: the same metrics as one process (counts exactly)."""
    one, _ = run_evaluate(pool_dir, tmp_path / "one.json", "runtime.accelerator=cpu")
    two, log = run_evaluate(
        pool_dir,
        tmp_path / "two.json",
        "runtime.accelerator=cpu",
        "runtime.devices=2",
        "runtime.strategy=ddp",
    )
    assert "runtime: cpu x2" in log and log.count("wrote ") == 1  # rank 0 alone reports and writes
    assert list(one["rows"]) == list(two["rows"]) == ["Individual"]
    for task in TASKS:
        a, b = one["rows"]["Individual"][task], two["rows"]["Individual"][task]
        assert set(a) == set(b)
        for metric, value in a.items():
            assert b[metric] == pytest.approx(value, rel=1e-6, abs=1e-9), (task, metric)
    assert not list(tmp_path.glob(".*.tmp"))


def test_single_process_commands_refuse_several_processes_before_spawning(capsys, monkeypatch):
    """Every command runs on several processes now; a job whose table entry says ``multi_process=False``
    (here the demo, switched off) is refused before a second process is launched, and the message lists
    the commands that do run on several."""
    from dataclasses import replace

    from simo_merge import cli

    assert all(job.multi_process for job in [*cli.JOBS.values(), *cli.BENCHES.values()])
    monkeypatch.setitem(cli.JOBS, "demo", replace(cli.JOBS["demo"], multi_process=False))
    code = cli.main(["demo", "runtime.accelerator=cpu", "runtime.devices=2", "output_dir=/nonexistent/x"])
    err = capsys.readouterr().err
    assert code == 2 and "runtime.devices=2" in err and "demo runs in one process" in err
    others = "merge, train-experts, realign, affinity, evaluate, bench clip"
    assert err.rstrip().endswith(f"supported by: {others}")
    assert err.count("error") == 1  # refused before a second process was launched


def evaluate_expert(pool_dir, task: str, runtime_cfg: RuntimeConfig | None = None):
    """``task``'s expert with every head, evaluated on 16 test scenes (on ``runtime_cfg`` if given);
    returns (metrics, model)."""
    from torch.utils.data import DataLoader

    from simo_merge.pool.folder import load_pool_dir
    from simo_merge.runtime import started
    from simo_merge.taskpool import TaskPool
    from simo_merge.training.evaluate import evaluate

    pool = load_pool_dir(pool_dir)
    data = build_dataset("synthetic_scenes", split="test", size=(32, 32), num_samples=16)
    specs = {t: data.task_specs[t] for t in TASKS}
    model = TaskPool(pool, [(data, TASKS)]).model(pool.experts[task])
    if runtime_cfg is None:
        return evaluate(model, DataLoader(data, 8), specs, progress=False), model
    with started(runtime_cfg) as runtime:
        assert (runtime.cfg.accelerator, runtime.cfg.precision) == (
            runtime_cfg.accelerator,
            runtime_cfg.precision,
        )
        return evaluate(model, DataLoader(data, 8), specs, progress=False), model


def test_bf16_mixed_on_cpu_stays_near_fp32(pool_dir):
    """Evaluation under bf16 autocast: every metric within 5% (relative) or 0.05 (absolute, rates in %)
    of fp32 on this random pool (measured: at most 1.4% relative, 0.055 absolute, on metrics from 0.76
    to 99); the metrics themselves accumulate in fp32. (An absolute 0.5 let the small ones, a depth
    rel_err of 0.76 or a within_11.25 of 0.85%, move by 60%.)"""
    fp32, _ = evaluate_expert(pool_dir, "depth")
    bf16, _ = evaluate_expert(pool_dir, "depth", RuntimeConfig(accelerator="cpu", precision="bf16-mixed"))
    pairs = [(fp32[t][m], bf16[t][m]) for t in TASKS for m in fp32[t]]
    for a, b in pairs:
        assert b == pytest.approx(a, rel=0.05, abs=0.05)
    assert any(a != b for a, b in pairs)  # autocast did run the model in bf16


@pytest.mark.device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")
def test_evaluate_on_cuda_matches_cpu(pool_dir):
    """Device placement: the model, batches and metric states move to the GPU and back; fp32 on CUDA gives
    the CPU's metrics (TF32 off) within 1e-4 relative, and the model comes back on the CPU."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu, _ = evaluate_expert(pool_dir, "semseg")
    gpu, model = evaluate_expert(pool_dir, "semseg", RuntimeConfig(accelerator="cuda", precision="32-true"))
    assert next(model.parameters()).device.type == "cpu"
    for task in TASKS:
        for metric, value in cpu[task].items():
            assert gpu[task][metric] == pytest.approx(value, rel=1e-4, abs=1e-4), (task, metric)


def _train_stages(seed: int = 0) -> tuple[list[float], list[float], dict]:
    """θ0 pretraining + a depth expert's fine-tuning, a few steps each, on the current runtime."""
    from torch.utils.data import DataLoader

    from simo_merge.training.finetune import FinetuneRecipe, finetune
    from simo_merge.training.pretrain import pretrain_masked_reconstruction

    data = build_dataset("synthetic_scenes", split="train", size=(32, 32), num_samples=32)
    torch.manual_seed(seed)
    encoder = build_encoder(ENCODER["library"], ENCODER["arch"], **ENCODER["kwargs"])
    pre = pretrain_masked_reconstruction(encoder, DataLoader(data, 8), 6, progress=False)
    head = build_head("linear", data.task_specs["depth"], encoder, (32, 32))
    recipe = FinetuneRecipe(probe_steps=3, finetune_steps=6, lr_encoder=5e-4)
    model, curve = finetune(encoder, {"depth": head}, DataLoader(data, 8), recipe, "depth", progress=False)
    return pre, curve, model.encoder.model_state()


def test_bf16_mixed_training_on_cpu_follows_fp32():
    """θ0 pretraining and fine-tuning under bf16-mixed on CPU: each loss within 1% of the fp32 run's
    (6 + 9 steps, same seed and batches), and the models come back on the CPU in fp32."""
    from simo_merge.runtime import started

    pre32, ft32, state32 = _train_stages()
    with started(RuntimeConfig(accelerator="cpu", precision="bf16-mixed")):
        pre16, ft16, state16 = _train_stages()
    assert pre16 == pytest.approx(pre32, rel=0.01) and ft16 == pytest.approx(ft32, rel=0.01)
    assert pre16 != pre32  # bf16 autocast did run
    assert all(v.device.type == "cpu" and v.dtype == state32[k].dtype for k, v in state16.items())


# Lightning notes that 16-mixed runs as bf16-mixed on the CPU; the refusal is tested on the CPU all the same
@pytest.mark.filterwarnings(
    "ignore:You passed `Fabric\\(accelerator='cpu', precision='16-mixed'\\)`:UserWarning"
)
def test_16_mixed_training_is_refused_naming_the_key():
    from simo_merge.runtime import started

    with started(RuntimeConfig(accelerator="cpu", precision="16-mixed")), pytest.raises(ValueError) as err:
        _train_stages()
    assert "runtime.precision=16-mixed" in str(err.value)


@pytest.mark.slow
def test_two_process_finetuning_follows_one_process_and_writes_one_set_of_files(tmp_path):
    """θ0 pretraining (3 steps) + a depth expert's probe (2) and fine-tuning (4) on 2 gloo processes with
    4 images each follow one process with batch 8 (same shuffled global batches): every loss within 1e-5
    relative (measured ~1e-7) and every weight within 1e-4 (measured ~1e-6). Rank 0 alone writes.

    The head's BatchNorm is replaced by an identity here: torch's SyncBatchNorm refuses CPU tensors, so
    on gloo each rank would normalise with its 4 images' statistics instead of the global batch's 8 (that
    run drifts ~7% from one process); under DDP on CUDA, BatchNorm becomes SyncBatchNorm (next test)."""
    from safetensors.torch import load_file

    from tests.helpers.ddp_finetune import train

    pre1, curve1, state1 = train(8, norm="none")
    script = REPO / "tests" / "helpers" / "ddp_finetune.py"
    log = run_python(str(script), str(tmp_path), "2", "4", "none", "32-true", timeout=300)
    for phase in ("pretrain θ0", "depth: probe", "depth: fine-tune"):  # printed once, by rank 0
        assert log.count(f"{phase}: global batch 8 = 4 per device x 2 processes") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.json", "expert.json", "expert.safetensors"]
    two = json.loads((tmp_path / "curve.json").read_text())
    assert two["world"] == 2 and len(two["finetune"]) == len(curve1) == 6
    assert two["pretrain"] == pytest.approx(pre1, rel=1e-5)
    assert two["finetune"] == pytest.approx(curve1, rel=1e-5)
    state2 = load_file(tmp_path / "expert.safetensors")
    assert state2.keys() == state1.keys()
    for key, value in state1.items():
        torch.testing.assert_close(state2[key], value, rtol=0, atol=1e-4)


def test_ddp_on_accelerators_syncs_batchnorm(monkeypatch):
    """Under several processes on a device torch can sync BatchNorm on (CUDA), the objective's BatchNorm
    layers become SyncBatchNorm over the same parameters before Fabric wraps it; on CPU they stay."""
    from simo_merge import runtime as rt

    objective = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    weight = objective[1].weight
    optimizer = torch.optim.SGD(objective.parameters(), lr=0.1)
    fake = rt.Runtime.__new__(rt.Runtime)
    fake.fabric = type("FakeFabric", (), {"setup": staticmethod(lambda m, o: (m, o)), "world_size": 2})()
    for device, synced in (("cpu", False), ("cuda", True)):
        monkeypatch.setattr(rt.Runtime, "device", property(lambda self, d=device: torch.device(d)))
        module, _ = fake.setup_training(objective, optimizer)
        assert isinstance(module[1], torch.nn.SyncBatchNorm) == synced
    assert module[1].weight is weight  # the optimizer still holds the trained parameters


@pytest.mark.slow
def test_train_experts_on_two_processes_writes_one_pool(tmp_path):
    """``simo-merge train-experts`` on 2 gloo processes: θ0 and one expert per task trained as DDP with
    a global batch of 2 x 4, rank 0 alone reporting and writing the pool folder (rank 1 waits for it)."""
    from simo_merge.pool.folder import load_pool_dir

    tiny = [
        "encoder.kwargs={img_size: 32, patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}",
        "data.size=[32,32]",
        "data.tasks=[semseg,depth]",
        "data.num_samples={train: 16, val: 4, test: 4}",
        "data.batch_size=4",
        "pretrain.steps=2",
        "expert.probe_steps=1",
        "expert.finetune_steps=2",
        "threads=1",
        "progress=false",
    ]
    runtime = ["runtime.accelerator=cpu", "runtime.devices=2", "runtime.strategy=ddp"]
    log = run_cli("train-experts", *tiny, *runtime, f"output_dir={tmp_path}", timeout=300)
    assert log.count("runtime: cpu x2") == 1 and log.count("pretrained θ0") == 1
    assert log.count("global batch 8 = 4 per device x 2 processes") == 5  # θ0, then probe + tune per expert
    for task in ("semseg", "depth"):
        assert log.count(f"fine-tuned the {task} expert") == 1
    pool = tmp_path / "experts"
    stems = ["theta0", "semseg", "semseg_head", "depth", "depth_head"]
    assert sorted(p.name for p in pool.iterdir()) == sorted(
        f"{s}.{x}" for s in stems for x in ("json", "safetensors")
    )
    assert sorted(load_pool_dir(pool).tasks) == ["depth", "semseg"]


def test_gpu_demo_config_is_the_demo_at_224_pixels_on_cuda_in_bf16(tmp_path):
    """``configs/demo_gpu.yaml`` (run by benchmarks/gpu_check.sh): the demo's recipe at 224×224 with a
    ViT-S/16 on cuda in bf16; its data section makes 224×224 samples that a patch-16 encoder and the
    linear heads read back at full resolution."""
    from simo_merge.config import load_config
    from simo_merge.configs import builtin_config
    from simo_merge.data import build_split
    from simo_merge.encoders import build_encoder
    from simo_merge.heads import build_head
    from simo_merge.jobs.demo import DemoConfig

    cfg = load_config(DemoConfig, builtin_config("demo_gpu"), [])
    demo = load_config(DemoConfig, builtin_config("demo"), [])
    assert (cfg.encoder.arch, cfg.encoder.kwargs) == (
        "vit_small_patch16_224",
        {"img_size": 224, "patch_size": 16},
    )
    assert cfg.data.size == [224, 224] and cfg.data.tasks == demo.data.tasks
    assert (cfg.runtime.accelerator, cfg.runtime.precision) == ("cuda", "bf16-mixed")
    assert cfg.realign.test_time and cfg.merge.lam_grid == demo.merge.lam_grid
    small = ["data.num_samples={train: 2, val: 2, test: 2}", "data.batch_size=2", f"output_dir={tmp_path}"]
    cfg = load_config(DemoConfig, builtin_config("demo_gpu"), small)
    data = build_split(cfg.data, "test", seed=0, cache_dir=tmp_path / "cache")
    batch = torch.utils.data.default_collate([data[0], data[1]])
    assert batch["image"].shape == (2, 3, 224, 224)
    encoder = build_encoder(
        "timm", "vit_small_patch16_224", depth=2, embed_dim=24, num_heads=2, **cfg.encoder.kwargs
    )
    assert encoder.grid_size == (14, 14)
    taps = encoder(batch["image"], taps=encoder.default_taps()).taps
    for task in cfg.data.tasks:
        head = build_head(cfg.head.kind, data.task_specs[task], encoder, (224, 224))
        assert head(taps).shape[-2:] == (224, 224), task
