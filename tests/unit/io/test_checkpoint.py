"""Checkpoint I/O: safetensors + sidecar, atomic writes, safe loading of pickles."""

from __future__ import annotations

import errno

import pytest
import torch

from simo_merge.io import checkpoint
from simo_merge.io.checkpoint import CheckpointError, load_state, read_sidecar, save_state, state_hash


def test_round_trip_with_sidecar(tmp_path):
    state = {"a": torch.randn(3, 4), "b": torch.arange(5), "half": torch.randn(2, dtype=torch.bfloat16)}
    state["view"] = state["a"][:, 1]  # non-contiguous view sharing storage
    path = save_state(tmp_path / "m.safetensors", state, {"method": "ties", "tasks": ["seg"]})
    loaded = load_state(path)
    for key, value in state.items():
        assert torch.equal(loaded[key], value) and loaded[key].dtype == value.dtype
    meta = read_sidecar(path)
    assert meta["method"] == "ties" and meta["tasks"] == ["seg"] and meta["package_version"]
    assert state_hash(loaded) == state_hash(state)
    assert state_hash({"a": torch.zeros(1)}) != state_hash({"a": torch.ones(1)})


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def exploding_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt("simulated crash mid-save")

    monkeypatch.setattr(checkpoint, "save_file", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        save_state(tmp_path / "m.safetensors", {"a": torch.ones(2)})
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_state(tmp_path / "m.safetensors", {"a": torch.ones(2)})
    monkeypatch.setattr(checkpoint, "save_file", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        save_state(path, {"a": torch.zeros(2)})
    assert torch.equal(load_state(path)["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_pt_state_dict_loads_weights_only(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "m.pt")
    assert torch.equal(load_state(tmp_path / "m.pt")["w"], torch.ones(2))


def test_pickled_module_needs_opt_in(tmp_path):
    torch.save(torch.nn.Linear(2, 3), tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="allow_pickle"):
        load_state(tmp_path / "module.pt")
    state = load_state(tmp_path / "module.pt", allow_pickle=True)
    assert state["weight"].shape == (3, 2)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_state(tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_state(tmp_path / "bad.safetensors")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_state(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="safetensors"):
        save_state(tmp_path / "m.pt", {"a": torch.ones(1)})


@pytest.mark.parametrize(
    "error",
    [
        lambda: checkpoint.SafetensorError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
            'message: "No space left on device" })'
        ),
        lambda: OSError(errno.ENOSPC, "No space left on device"),
    ],
)
def test_a_full_disk_is_one_error_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch, error):
    from simo_merge.io.atomic import DiskFullError

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise error()

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(DiskFullError, match=r"m.safetensors: no space left on the device") as info:
        save_state(tmp_path / "m.safetensors", {"a": torch.ones(2)})
    assert isinstance(info.value, OSError) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_expanded_views_are_refused_before_anything_materialises_them(tmp_path, allow_pickle):
    # 1 stored value described as 10^10 (40 GB once materialised)
    torch.save({"ok": torch.ones(3), "w": torch.zeros(1).expand(100_000, 100_000)}, tmp_path / "big.pt")
    assert (tmp_path / "big.pt").stat().st_size < 10_000
    with pytest.raises(
        CheckpointError, match=r"big.pt: key 'w' of shape \(100000, 100000\) .* 1 stored value"
    ):
        load_state(tmp_path / "big.pt", allow_pickle=allow_pickle)
    ids = torch.arange(5).expand((1, -1))  # an expanded buffer with as many values as it stores loads
    torch.save({"position_ids": ids}, tmp_path / "ids.pt")
    assert torch.equal(load_state(tmp_path / "ids.pt", allow_pickle=allow_pickle)["position_ids"], ids)
