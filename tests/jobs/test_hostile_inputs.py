"""Hostile and broken inputs (issue 13): malicious pickles, non-finite values, interrupted and
concurrent runs, bad configs and output paths."""

from __future__ import annotations

import io
import json
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

from simo_merge.config import PoolConfig
from simo_merge.io.checkpoint import CheckpointError, load_state
from tests.helpers.pickle_payloads import call, global_ref, protocol4, torch_zip, value

# ------------------------------------------------------------------- a tiny protocol-4 pickle writer


def _code_args(code: types.CodeType) -> tuple:
    names = ["co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_nlocals", "co_stacksize"]
    names += ["co_flags", "co_code", "co_consts", "co_names", "co_varnames", "co_filename", "co_name"]
    names += ["co_qualname"] if sys.version_info >= (3, 11) else []
    names += ["co_firstlineno", "co_linetable" if sys.version_info >= (3, 10) else "co_lnotab"]
    names += ["co_exceptiontable"] if sys.version_info >= (3, 11) else []
    names += ["co_freevars", "co_cellvars"]
    return tuple(getattr(code, n) for n in names)


def payloads(marker: Path) -> dict[str, bytes]:
    """Pickles whose stock unpickling creates ``marker`` (the red team's families, and plain ones)."""
    py = f"open({str(marker)!r}, 'w').close()"
    sh = f"touch {marker}"
    func = eval(f"lambda: {py}")  # noqa: S307 -- builds the code object the payload smuggles in
    code_args = _code_args(func.__code__)

    def via_function(code_type: bytes) -> bytes:
        code = call(code_type, *code_args)
        function = global_ref("types", "FunctionType") + pickle.MARK + code + value({}) + pickle.TUPLE
        return protocol4(function + pickle.REDUCE + value(()) + pickle.REDUCE)

    return {
        "os.system": protocol4(call(global_ref("os", "system"), sh)),
        "builtins.eval": protocol4(call(global_ref("builtins", "eval"), py)),
        "functional->torch.os.system": protocol4(
            call(global_ref("torch.nn.functional", "torch.os.system"), sh)
        ),
        "dataclasses->builtins.eval": protocol4(call(global_ref("dataclasses", "builtins.eval"), py)),
        "torch->_classes...CodeType": via_function(global_ref("torch", "_classes.types.CodeType")),
        "types.CodeType": via_function(global_ref("types", "CodeType")),
        "torch.load->eval": protocol4(call(global_ref("torch.serialization", "pickle.loads"), b"")),
    }


@pytest.fixture(scope="module")
def payload_files(tmp_path_factory):
    """Every payload as a raw pickle and inside a torch zip; checks first that stock unpickling runs it."""
    root = tmp_path_factory.mktemp("payloads")
    marker = root / "PWNED"
    files = {}
    for name, data in payloads(marker).items():
        if name != "torch.load->eval":  # needs a nested payload; the others prove the marker mechanism
            try:
                pickle.loads(data)
            except Exception:  # noqa: BLE001 -- the stock unpickler may fail *after* running the payload
                pass
            assert marker.exists(), f"payload {name} does not run under stock pickle: the test proves nothing"
            marker.unlink()
        for kind in ("raw", "zip"):
            path = root / f"{name.replace('>', '_')}.{kind}.pt"
            if kind == "raw":
                path.write_bytes(data)
            else:
                torch_zip(data, path)
            files[(name, kind)] = path
    return marker, files


def _load_pool(path, allow):
    from simo_merge.pool.expert_pool import ExpertPool

    ExpertPool.from_files(path, {"a": path}, allow_pickle=allow)


def _load_task_vectors_encoder(path, allow):
    from simo_merge.pool.clip_layout import load_task_vectors_encoder

    load_task_vectors_encoder(path, allow_pickle=allow)


def _load_task_vectors_head(path, allow):
    from simo_merge.pool.clip_layout import load_task_vectors_head

    load_task_vectors_head(path, allow_pickle=allow)


def _load_text(path, allow):
    from simo_merge.heads.zeroshot import zeroshot_heads

    zeroshot_heads({"mnist": None}, {"mnist": ["0", "1"]}, str(path), "ViT-Tiny-8", allow_pickle=allow)


LOADERS = {
    "pool": _load_pool,
    "task_vectors_encoder": _load_task_vectors_encoder,
    "task_vectors_head": _load_task_vectors_head,
    "text_checkpoint": _load_text,
}


# torch.load notes that these hand-written payloads use pickle protocol 4 before it refuses them
@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4 in the checkpoint:UserWarning")
@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("family", list(LOADERS))
def test_no_pickle_payload_runs(payload_files, family, allow):
    marker, files = payload_files
    marker.unlink(missing_ok=True)
    for (name, kind), path in files.items():
        with pytest.raises(CheckpointError, match=path.name.replace("+", r"\+")):
            LOADERS[family](path, allow)
        assert not marker.exists(), f"{name} ({kind}) ran through the {family} loader (allow_pickle={allow})"


def test_unpickler_refuses_dotted_names_and_returns_only_listed_callables():
    from simo_merge.io.unpickler import ALLOWED, RestrictedUnpickler, StandIn

    def find(module, name):
        return RestrictedUnpickler(io.BytesIO(b"")).find_class(module, name)

    for module, name in [("torch.nn.functional", "torch.os.system"), ("dataclasses", "builtins.eval")]:
        with pytest.raises(pickle.UnpicklingError, match="dotted"):
            find(module, name)
    for module, name in [("os", "system"), ("builtins", "eval"), ("torch", "load"), ("types", "CodeType")]:
        got = find(module, name)
        assert issubclass(got, StandIn) and got.pickled_class == f"{module}.{name}"
    assert issubclass(find("torch.nn.modules.linear", "Linear"), StandIn)  # modules become stand-ins
    assert find("torch._utils", "_rebuild_tensor_v2") is torch._utils._rebuild_tensor_v2
    assert find("__builtin__", "set")([1, 1]) == {1}
    assert find("collections", "OrderedDict").__name__ == "OrderedDict"
    callables = {k for k, v in ALLOWED.items() if callable(v)}
    assert all(k[0] in ("builtins", "collections", "_codecs", "torch._utils", "torch") for k in callables)
    assert ("torch", "load") not in ALLOWED and ("builtins", "getattr") not in ALLOWED


def test_real_pickled_modules_still_load(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    torch.save(model, tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_state(tmp_path / "module.pt")
    state = load_state(tmp_path / "module.pt", allow_pickle=True)
    expected = model.state_dict()
    assert list(state) == list(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    torch.save({"model": model, "epoch": 3}, tmp_path / "wrapped.pt")
    assert set(load_state(tmp_path / "wrapped.pt", allow_pickle=True)) == set(expected)


# torch deprecates the TorchScript writers; this test needs a real archive to refuse
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:FutureWarning")
@pytest.mark.parametrize("allow_pickle", [False, True])
def test_torchscript_archives_are_refused_before_torch_load(tmp_path, allow_pickle):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "script.pt")
    with pytest.raises(CheckpointError, match=r"script.pt: a TorchScript archive \(holds code\); not loaded"):
        load_state(tmp_path / "script.pt", allow_pickle=allow_pickle)


# ------------------------------------------------------------------------------ non-finite values


def _tiny_pool_files(tmp_path, poison=None):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    base = {"w": torch.randn(4, 3), "b": torch.zeros(3), "step": torch.tensor(3)}
    experts = {
        t: {k: v + 0.1 * (i + 1) if v.is_floating_point() else v for k, v in base.items()}
        for i, t in enumerate(("seg", "depth"))
    }
    if poison:
        which, key, value = poison
        target = base if which == "base" else experts[which]
        target[key] = target[key].clone()
        target[key][0, 0] = value
    save_file(base, str(tmp_path / "theta0.safetensors"))
    for t, s in experts.items():
        save_file(s, str(tmp_path / f"{t}.safetensors"))
    return tmp_path / "theta0.safetensors", {t: tmp_path / f"{t}.safetensors" for t in experts}


@pytest.mark.parametrize(
    "which,value", [("base", float("nan")), ("depth", float("inf")), ("seg", -float("inf"))]
)
def test_non_finite_experts_are_refused_naming_file_and_key(tmp_path, which, value):
    from simo_merge.finite import NonFiniteError
    from simo_merge.pool.expert_pool import ExpertPool

    base, experts = _tiny_pool_files(tmp_path, (which, "w", value))
    name = "theta0.safetensors" if which == "base" else f"{which}.safetensors"
    with pytest.raises(NonFiniteError, match=rf"{name}\): key 'w' has"):
        ExpertPool.from_files(base, experts)


@pytest.mark.parametrize(
    "method,params,transforms,message",
    [
        ("task_arithmetic", {"lam": float("nan")}, None, "lam=nan must be finite"),
        ("task_arithmetic", {"lam": float("inf")}, None, "lam=inf must be finite"),
        ("task_arithmetic", {"lam": "abc"}, None, "lam='abc' must be a number"),
        ("task_arithmetic", {"lam": [1, 2]}, None, r"lam=\[1, 2\] must be a number"),
        ("task_arithmetic", {"lam": True}, None, "lam=True must be a number"),
        ("ties", {"k": float("nan")}, None, "k=nan must be finite"),
        ("ties", {"k": 0}, None, r"k must be in \(0, 100\]"),
        ("ties", {"k": 150}, None, r"k must be in \(0, 100\]"),
        ("task_arithmetic", {}, {"dare": {"p": float("nan")}}, "p=nan must be finite"),
        ("task_arithmetic", {}, {"dare": {"p": 1.0}}, r"p must be in \[0, 1\)"),
        ("task_arithmetic", {}, {"dare": {"seed": 1.5}}, "seed=1.5 must be an integer"),
    ],
)
def test_bad_hyperparameters_are_refused_before_merging(tmp_path, method, params, transforms, message):
    from simo_merge.merging import merge
    from simo_merge.pool.expert_pool import ExpertPool

    pool = ExpertPool.from_files(*_tiny_pool_files(tmp_path))
    with pytest.raises(ValueError, match=message):
        merge(pool, method, transforms=transforms, **params)
    defaults = {name: {} for name in transforms or {}}
    merged = merge(pool, method, transforms=defaults)  # the defaults still merge
    assert all(torch.isfinite(v).all() for v in merged.values() if v.is_floating_point())


def test_overflowing_merge_is_an_error_not_an_inf_checkpoint():
    from simo_merge.merging import merge
    from simo_merge.pool.expert_pool import ExpertPool

    base = {"w": torch.zeros(2, 2)}
    pool = ExpertPool(base, {"a": {"w": torch.full((2, 2), 1e30)}, "b": {"w": torch.full((2, 2), 2e30)}})
    assert torch.allclose(merge(pool, "task_arithmetic", lam=1.0)["w"], torch.full((2, 2), 3e30))
    with pytest.raises(ValueError, match=r"produced a merged state that: key 'w' has 0 NaN and 4 Inf"):
        merge(pool, "task_arithmetic", lam=1e9)


def test_cli_merge_with_nan_lambda_fails_and_writes_nothing(tmp_path, capsys):
    from simo_merge.cli import main

    base, experts = _tiny_pool_files(tmp_path)
    args = [
        "merge",
        "pool.kind=files",
        f"pool.base={base}",
        f"pool.experts={{seg: {experts['seg']}, depth: {experts['depth']}}}",
        "method.name=task_arithmetic",
        "method.params.lam=.nan",
        f"output_dir={tmp_path / 'out'}",
    ]
    assert main(args) == 2
    assert "method.params.lam=nan: must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "out" / "merged.safetensors").exists()
    assert main(args[:-2] + ["method.params.lam=abc", args[-1]]) == 2
    assert "lam='abc' must be a number" in capsys.readouterr().err


# -------------------------------------------------------- file modes, stale temporaries, locks, paths


TOY_MERGE = [
    "merge",
    "pool.kind=toy",
    "method.name=task_arithmetic",
    "encoder.kwargs={img_size: 32, patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}",
]


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_umask_mode(tmp_path, umask, mode):
    import os

    from simo_merge.io.atomic import write_json
    from simo_merge.io.checkpoint import save_state

    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        save_state(tmp_path / "s.safetensors", {"w": torch.ones(2)}, {"k": 1})
    finally:
        os.umask(old)
    for name in ("a.json", "s.safetensors", "s.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_stale_temporaries_of_dead_writers_are_removed_on_the_next_write(tmp_path):
    import os

    from simo_merge.io.atomic import write_json

    dead = tmp_path / f".m.json.{_dead_pid()}.x1y2.tmp"
    legacy = tmp_path / ".m.json.k3j4h5.tmp"  # the pre-pid naming
    live = tmp_path / f".m.json.{os.getppid()}.a1b2.tmp"  # a running process may still be writing
    other = tmp_path / f".n.json.{_dead_pid()}.zz.tmp"  # another target: not this write's business
    for p in (dead, legacy, live, other):
        p.write_text("partial")
    write_json(tmp_path / "m.json", {"ok": True})
    assert not dead.exists() and not legacy.exists()
    assert live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "m.json"])


def test_kill_9_mid_write_leaves_no_target_and_the_next_write_cleans_up(tmp_path):
    import signal
    import subprocess
    import time

    from simo_merge.io.atomic import write_json

    target = tmp_path / "big.json"
    script = (
        "import sys, time\nfrom simo_merge.io.atomic import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_text('half')\n    print('writing', flush=True)\n    time.sleep(60)\n"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
    temps = list(tmp_path.glob(".big.json.*.tmp"))
    assert len(temps) == 1 and not target.exists()
    time.sleep(0.01)
    write_json(target, [1, 2])
    assert list(tmp_path.glob(".*.tmp")) == [] and target.read_text() == "[\n  1,\n  2\n]\n"


def _hold_lock(folder: Path):
    """A child process holding ``folder``'s run lock (a ``Popen``: leave it with ``with``)."""
    import subprocess

    script = (
        "import sys, time\nfrom simo_merge.io.lock import output_lock\n"
        f"with output_lock({str(folder)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_into_a_locked_folder_is_refused(tmp_path, capsys):
    from simo_merge.cli import main
    from simo_merge.io.lock import OutputLockedError, output_lock

    out = tmp_path / "run"
    with _hold_lock(out) as holder:
        try:
            with pytest.raises(
                OutputLockedError, match=rf"{out}: another simo-merge run \(pid {holder.pid}\)"
            ):
                with output_lock(out):
                    pass
            assert main([*TOY_MERGE, f"output_dir={out}"]) == 2
            assert f"another simo-merge run (pid {holder.pid})" in capsys.readouterr().err
            assert not (out / "merged.safetensors").exists()
        finally:
            holder.kill()  # kill -9: the OS drops the lock, nothing to clean by hand
    with output_lock(out), output_lock(out):  # free again, and re-entrant within a process
        pass
    assert main([*TOY_MERGE, f"output_dir={out}"]) == 0
    assert (out / "merged.safetensors").is_file()


def test_output_paths_that_cannot_work_fail_at_start(tmp_path, capsys):
    from simo_merge.cli import main
    from simo_merge.io.outputs import OutputPathError
    from simo_merge.jobs.evaluate import EvaluateConfig
    from simo_merge.jobs.evaluate import run as run_evaluate

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main([*TOY_MERGE, f"output_dir={a_file}"]) == 2
    assert f"output_dir={a_file}: exists and is not a folder" in capsys.readouterr().err
    assert main([*TOY_MERGE, f"output_dir={a_file}/sub"]) == 2
    assert f"output_dir={a_file}/sub: cannot write there" in capsys.readouterr().err
    # evaluate checks its output before anything else (the pool folder does not even exist)
    with pytest.raises(OutputPathError, match=rf"output={tmp_path}: is a folder"):
        run_evaluate(EvaluateConfig(pool=PoolConfig(dir=str(tmp_path / "nope")), output=str(tmp_path)))
    assert main(["evaluate", f"pool.dir={tmp_path / 'nope'}", f"output={a_file}/m.json"]) == 2
    assert f"the folder of output={a_file}: exists and is not a folder" in capsys.readouterr().err


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_fails_at_start(tmp_path, capsys):
    from simo_merge.cli import main

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main([*TOY_MERGE, f"output_dir={ro}"]) == 2
        assert f"output_dir={ro}: cannot write there" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


# ------------------------------------------------------- resume: provenance in the file, stage seeds

TINY_DEMO = [
    "encoder.kwargs={img_size: 32, patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}",
    "data.size=[32,32]",
    "data.tasks=[semseg,depth]",
    "data.num_samples={train: 24, val: 8, test: 8}",
    "data.batch_size=8",
    "pretrain.steps=2",
    "expert.probe_steps=1",
    "expert.finetune_steps=2",
    "progress=false",
]


def _demo(out: Path, *extra: str):
    from simo_merge.config import load_config
    from simo_merge.jobs.demo import Demo, DemoConfig

    return Demo(load_config(DemoConfig, None, [*TINY_DEMO, f"output_dir={out}", *extra]))


def _pool_states(folder: Path) -> dict[str, dict]:
    return {p.name: load_state(p) for p in sorted(folder.glob("*.safetensors"))}


def _same_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        for x, y in zip(a.values(), b.values(), strict=True)
    )


def _crash_after_first_file(monkeypatch, module) -> None:
    """Make the next ``save_state`` through ``module`` raise right after its file is on disk (a kill)."""
    real = module.save_state

    def crashing(path, *args, **kwargs):
        real(path, *args, **kwargs)
        monkeypatch.setattr(module, "save_state", real)
        raise KeyboardInterrupt(f"killed after writing {path}")

    monkeypatch.setattr(module, "save_state", crashing)


@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory):
    """Uninterrupted runs of configs A (defaults) and B (another expert recipe), for reference."""
    root = tmp_path_factory.mktemp("clean")
    _demo(root / "A").experts()
    _demo(root / "B", "expert.lr_encoder=0.002").experts()
    return {
        "A": _pool_states(root / "A" / "experts"),
        "B": _pool_states(root / "B" / "experts"),
        "root": root,
    }


@pytest.mark.slow
def test_crash_between_an_experts_files_then_changed_config_never_mixes_runs(
    tmp_path, monkeypatch, clean_runs
):
    import simo_merge.pool.folder as pool_io

    out = tmp_path / "run"
    _demo(out).experts()
    assert _same_states(_pool_states(out / "experts"), clean_runs["A"])
    _crash_after_first_file(monkeypatch, pool_io)
    with pytest.raises(KeyboardInterrupt):
        _demo(out, "expert.lr_encoder=0.002").experts()
    _demo(out, "expert.lr_encoder=0.002").experts()  # resume with config B
    assert _same_states(_pool_states(out / "experts"), clean_runs["B"])


@pytest.mark.slow
def test_crash_in_a_fresh_folder_does_not_leave_the_pool_stuck(tmp_path, monkeypatch, clean_runs):
    import simo_merge.pool.folder as pool_io

    out = tmp_path / "run"
    _crash_after_first_file(monkeypatch, pool_io)
    with pytest.raises(KeyboardInterrupt):
        _demo(out).experts()
    pool = _demo(out).experts()  # no file deleted by hand
    assert pool.tasks == ["semseg", "depth"]
    assert _same_states(_pool_states(out / "experts"), clean_runs["A"])


@pytest.mark.slow
def test_an_expert_swapped_with_its_head_is_recomputed(tmp_path, clean_runs):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(clean_runs["root"] / "A", out)
    pool = out / "experts"
    (pool / "semseg.safetensors").rename(pool / "swap.tmp")
    (pool / "semseg_head.safetensors").rename(pool / "semseg.safetensors")
    (pool / "swap.tmp").rename(pool / "semseg_head.safetensors")
    assert _demo(out).experts().tasks == ["semseg", "depth"]  # same key, wrong role: retrained
    assert _same_states(_pool_states(pool), clean_runs["A"])


@pytest.mark.slow
def test_crash_between_tensors_and_sidecar_or_a_swapped_file_is_recomputed(tmp_path, monkeypatch, clean_runs):
    from safetensors.torch import save_file

    import simo_merge.io.checkpoint as checkpoint
    from simo_merge.io.checkpoint import HEADER_KEY, header_meta

    out = tmp_path / "run"
    theta0_a = _demo(out).theta0()
    path = out / "experts" / "theta0.safetensors"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the sidecar")

    monkeypatch.setattr(checkpoint, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        _demo(out, "pretrain.steps=3").theta0()  # θ0 of B on disk, A's sidecar beside it
    monkeypatch.undo()
    assert not torch.equal(load_state(path)["cls_token"], theta0_a["cls_token"])
    again = _demo(out).theta0()  # config A again: B's tensors must not pass for A's
    assert _same_states({"t": again}, {"t": theta0_a})
    # tensors swapped under a copied header (content hash no longer matches): recomputed too
    meta = header_meta(path)
    save_file(
        {k: v + 1 for k, v in theta0_a.items()},
        str(path),
        metadata={HEADER_KEY: json.dumps(meta)},
    )
    assert _same_states({"t": _demo(out).theta0()}, {"t": theta0_a})
    assert _same_states({"t": load_state(path)}, {"t": theta0_a})


@pytest.mark.slow
def test_skipping_a_cached_stage_does_not_change_the_next(tmp_path, clean_runs):
    import shutil

    # θ0 cached (copied from the clean run), experts trained: identical to the uninterrupted run
    out = tmp_path / "run"
    (out / "experts").mkdir(parents=True)
    for name in ("theta0.safetensors", "theta0.json"):
        shutil.copy(clean_runs["root"] / "A" / "experts" / name, out / "experts" / name)
    _demo(out).experts()
    assert _same_states(_pool_states(out / "experts"), clean_runs["A"])
    # the first expert cached, the second deleted: the retrained second expert is identical too
    for name in ("depth.safetensors", "depth_head.safetensors"):
        (out / "experts" / name).unlink()
    _demo(out).experts()
    assert _same_states(_pool_states(out / "experts"), clean_runs["A"])


# ------------------------------------------------------------- configs: errors at start, not tracebacks


def test_yaml_syntax_errors_and_non_mappings_name_the_file(tmp_path, capsys):
    from simo_merge.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("method:\n  name: ties\n  params: {k: [1, 2\n")
    assert main(["merge", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: not valid YAML at line" in err and "Traceback" not in err
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    assert main(["merge", "--config", str(listed)]) == 2
    assert f"{listed}: the top level must be a mapping" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override,message",
    [
        ("merge.methods=[task_arithmetic,tiez]", "merge.methods: unknown merge method 'tiez'"),
        ("merge.lam_grid=[]", "merge.lam_grid: empty"),
        ("merge.lam_grid=[0.3,.nan]", r"merge.lam_grid\[1\]=nan: must be a finite number"),
        (
            "merge.methods=[{name: ties, params: {k: abc}}]",
            r"merge.methods\[0\].params.ties: k='abc' must be a",
        ),
        ("merge.methods=[{name: ties, params: {kk: 3}}]", r"ties: unknown hyper-parameter\(s\) \['kk'\]"),
        ("realign.realigners=[surgery,deeep]", "realign.realigners: unknown realigner 'deeep'"),
        ("realign.apply_to=[TA,WAT]", r"realign.apply_to names \['WAT'\]"),
        ("realign.params.objective=supervisd", "objective must be one of"),
        ("realign.params.rank=0", "realign.params.rank=0: must be >= 1"),
        ("data.num_samples={train: 4, val: 8, test: 8}", "data.num_samples.train=4 < data.batch_size=8"),
        ("full=true", None),  # valid: the full demo's preset passes
    ],
)
def test_demo_settings_that_cannot_work_fail_before_any_training(tmp_path, capsys, override, message):
    from simo_merge.cli import main
    from simo_merge.config import ConfigError, load_config
    from simo_merge.jobs.demo import DemoConfig

    overrides = [*TINY_DEMO, f"output_dir={tmp_path / 'out'}", override]
    if message is None:
        load_config(DemoConfig, None, overrides)
        return
    with pytest.raises(ConfigError, match=message):
        load_config(DemoConfig, None, overrides)
    assert main(["train-experts", *overrides]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "out" / "experts").exists()  # nothing trained, nothing written


def test_demo_checks_its_data_dependent_names(tmp_path):
    from simo_merge.config import ConfigError, load_config
    from simo_merge.jobs.demo import DemoConfig

    with pytest.raises(ConfigError, match="merge.methods: unknown merge method 'fishr'"):
        load_config(DemoConfig, None, [*TINY_DEMO, "merge.methods=[adamerging,fishr]"])
    with pytest.raises(
        ConfigError, match=r"merge.methods\[0\].params.fisher: num_batches=1.5 must be an integer"
    ):
        load_config(
            DemoConfig, None, [*TINY_DEMO, "merge.methods=[{name: fisher, params: {num_batches: 1.5}}]"]
        )


def test_realign_and_bench_names_and_values_fail_at_load(tmp_path):
    from simo_merge.config import ConfigError, load_config
    from simo_merge.jobs.clip import ClipConfig
    from simo_merge.jobs.realign import RealignJobConfig

    with pytest.raises(ConfigError, match="realign.realigners: unknown realigner 'deeep'"):
        load_config(RealignJobConfig, None, ["realign.realigners=[deeep]"])
    with pytest.raises(ConfigError, match="method.params.lam=nan: must be a finite number"):
        load_config(RealignJobConfig, None, ["method.params.lam=.nan"])
    with pytest.raises(ConfigError, match="method.name: unknown merge method 'tsk'"):
        load_config(RealignJobConfig, None, ["method.name=tsk"])
    # with a checkpoint nothing is merged, so the method name is not checked
    load_config(RealignJobConfig, None, ["method.name=tsk", "checkpoint=m.safetensors", "pool.dir=p"])
    with pytest.raises(ConfigError, match=r"methods\[0\].params.ties: lam=\[1, 2\] must be a number"):
        load_config(ClipConfig, None, ["methods=[{name: ties, params: {lam: [1, 2]}}]"])


def test_an_empty_training_loader_is_an_error_not_a_hang():
    from simo_merge.training.loop import forever

    batches = forever([])
    with pytest.raises(ValueError, match="yields no batch"):
        next(batches)
    assert [next(b) for b in [forever([1, 2])] for _ in range(3)] == [1, 2, 1]


# ----------------------------------------------------------------- adapters tied to their merged model


def test_adapters_trained_on_another_checkpoint_are_refused(tmp_path):
    from simo_merge.io.checkpoint import save_state, state_hash
    from simo_merge.jobs.evaluate import EvaluateConfig
    from simo_merge.jobs.evaluate import run as run_evaluate

    merged_a, merged_b = {"w": torch.ones(3)}, {"w": torch.full((3,), 2.0)}
    save_state(tmp_path / "a.safetensors", merged_a, {"method": "ties"})
    save_state(tmp_path / "b.safetensors", merged_b, {"method": "task_arithmetic"})
    meta = {"realigner": "surgery", "rank": 4, "merged_hash": state_hash(merged_a)}
    save_state(tmp_path / "adapters.safetensors", {"adapters.x": torch.zeros(1)}, meta)
    save_state(
        tmp_path / "old.safetensors", {"adapters.x": torch.zeros(1)}, {"realigner": "surgery", "rank": 4}
    )

    def run(checkpoint, adapters):
        cfg = EvaluateConfig(
            pool=PoolConfig(dir=str(tmp_path / "no_pool")),
            checkpoint=str(tmp_path / checkpoint),
            adapters=str(tmp_path / adapters),
            output=str(tmp_path / "m.json"),
        )
        run_evaluate(cfg)

    with pytest.raises(ValueError, match=rf"trained on a merged model with hash {state_hash(merged_a)}, but"):
        run("b.safetensors", "adapters.safetensors")
    with pytest.raises(ValueError, match="records no merged_hash"):
        run("a.safetensors", "old.safetensors")
    with pytest.raises(FileNotFoundError, match="no_pool"):  # the right checkpoint passes the check
        run("a.safetensors", "adapters.safetensors")
