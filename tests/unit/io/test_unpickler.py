"""The restricted unpickler: no pickle may change interpreter state, allocate more than it holds, or make
torch extract archive members to disk (issue 25, items 1, 9 and 11)."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile

import pytest
import torch

from simo_merge.io import unpickler
from simo_merge.io.checkpoint import CheckpointError, load_state
from simo_merge.io.unpickler import UnsafePickleError, restricted_torch_load
from tests.helpers.pickle_payloads import global_ref, protocol4, text, torch_zip


def torch_zip_body(body: bytes, path):
    """A real torch zip archive whose data.pkl runs the opcodes ``body`` (leaving one object)."""
    return torch_zip(protocol4(body), path)


pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol 4 in the checkpoint:UserWarning")


def _build(target: bytes, attribute: str, value: str) -> bytes:
    """``target`` BUILD with slot state {attribute: (value,)}: stock unpickling setattr()s it."""
    slots = pickle.EMPTY_DICT + text(attribute) + pickle.MARK + text(value) + pickle.TUPLE + pickle.SETITEM
    return target + pickle.NONE + slots + pickle.TUPLE2 + pickle.BUILD


@pytest.mark.parametrize(
    "target,get",
    [
        (("torch._utils", "_rebuild_tensor_v2"), lambda: torch._utils._rebuild_tensor_v2.__defaults__),
        (("_codecs", "encode"), lambda: unpickler.ALLOWED[("_codecs", "encode")].__defaults__),
        (
            ("torch", "FloatStorage"),
            lambda: getattr(unpickler.ALLOWED[("torch", "FloatStorage")], "__defaults__", None),
        ),
        (("builtins", "list"), lambda: unpickler.ALLOWED[("builtins", "list")].__defaults__),
    ],
)
def test_build_on_an_allowed_object_is_refused_and_changes_nothing(tmp_path, target, get):
    before = get()
    body = _build(global_ref(*target), "__defaults__", "x") + pickle.POP + pickle.EMPTY_DICT
    path = torch_zip_body(body, tmp_path / "build.pt")
    with pytest.raises(CheckpointError, match=r"build.pt: .*refused BUILD"):
        load_state(path, allow_pickle=True)
    assert get() == before  # stock unpickling would have set ("x",)
    saved = tmp_path / "plain.pt"
    torch.save({"w": torch.arange(3.0)}, saved)
    assert torch.equal(torch.load(saved, weights_only=True)["w"], torch.arange(3.0))


def test_build_on_a_stand_in_class_is_refused(tmp_path):
    body = _build(global_ref("os", "system"), "pickled_class", "x") + pickle.POP + pickle.EMPTY_DICT
    with pytest.raises(CheckpointError, match="refused BUILD"):
        load_state(torch_zip_body(body, tmp_path / "cls.pt"), allow_pickle=True)
    assert unpickler.standin_class("os", "system").pickled_class == "os.system"


@pytest.mark.parametrize(
    "call",
    [
        ("list", "bytes", 10**6),  # list(bytes(n)): allocates n before any cap could act
        ("str", "list", None),  # str(a container): its repr can grow exponentially with shared references
    ],
)
def test_builtins_only_copy_what_the_pickle_holds(tmp_path, call):
    outer, inner, size = call
    arg = (pickle.BININT + struct.pack("<i", size) + pickle.TUPLE1) if size else pickle.EMPTY_TUPLE
    body = global_ref("builtins", outer) + global_ref("builtins", inner) + arg + pickle.REDUCE + pickle.TUPLE1
    body += pickle.REDUCE
    with pytest.raises(UnsafePickleError, match=r"sizes.pt: .*refused builtins\."):
        restricted_torch_load(torch_zip_body(body, tmp_path / "sizes.pt"))


def test_real_pickles_with_sets_bytes_and_modules_still_load(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    torch.save(
        {"model": model, "tags": {"a", "b"}, "raw": b"xy", "empty": b"", "t": (1, 2.5)}, tmp_path / "m.pt"
    )
    obj = restricted_torch_load(tmp_path / "m.pt")
    assert obj["tags"] == {"a", "b"} and obj["raw"] == b"xy" and obj["empty"] == b"" and obj["t"] == (1, 2.5)
    state = load_state(tmp_path / "m.pt", allow_pickle=True)
    assert torch.equal(state["0.weight"], model[0].weight.detach())


@pytest.mark.parametrize("member", ["fifo", "symlink", "file"])
def test_legacy_tar_files_are_refused_without_extracting(tmp_path, member):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\x80\x02}q\x00.")
    path = tmp_path / "zeroshot.pt"
    with tarfile.open(path, "w") as tar:
        for name in ("sys_info", "pickle", "tensors"):
            info = tarfile.TarInfo(name)
            data = pickle.dumps({}, protocol=2)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("storages")
        if member == "fifo":
            info.type = tarfile.FIFOTYPE
        elif member == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, str(outside)
        tar.addfile(info, io.BytesIO(b"") if member == "file" else None)
    if member == "fifo":  # today's torch.load would extract the FIFO and block in open(): never call it
        assert tarfile.is_tarfile(path)
    with pytest.raises(UnsafePickleError, match=r"zeroshot.pt: a legacy tar-format torch file"):
        restricted_torch_load(path)
    with pytest.raises(CheckpointError, match=r"zeroshot.pt: .*legacy"):  # weights_only refuses it too
        load_state(path, allow_pickle=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.bin", "zeroshot.pt"]
