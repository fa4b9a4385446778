"""Reading a pool folder checks every file's task, role and content hash against its own header
(issue 25, item 4): a tampered, swapped or copied file stops the read naming it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from simo_merge.cli import main
from simo_merge.io.checkpoint import HEADER_KEY, CheckpointError, header_meta, load_state
from simo_merge.pool.folder import load_pool_dir
from tests.helpers.toy_states import TINY_ENCODER, write_dense_pool


@pytest.fixture(scope="module")
def clean_pool(tmp_path_factory):
    return write_dense_pool(tmp_path_factory.mktemp("pool"), TINY_ENCODER, ["semseg", "depth"], 0.05)


def _rewrite(path, state, meta):
    save_file(state, str(path), metadata={HEADER_KEY: json.dumps(meta)})


def _swap(a, b):
    tmp = a.with_name("swap.tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def _tamper(pool):
    path = pool / "semseg.safetensors"
    _rewrite(
        path,
        {k: v + 1 if v.is_floating_point() else v for k, v in load_state(path).items()},
        header_meta(path),
    )
    return "semseg.safetensors: its tensors do not match the content hash"


def _copied_header(pool):  # depth's tensors under semseg's header
    _rewrite(
        pool / "semseg.safetensors",
        load_state(pool / "depth.safetensors"),
        header_meta(pool / "semseg.safetensors"),
    )
    return "semseg.safetensors: its tensors do not match the content hash"


def _swapped_tasks(pool):
    _swap(pool / "semseg.safetensors", pool / "depth.safetensors")
    return "depth.safetensors: its header records task 'semseg', expected 'depth'"


def _swapped_roles(pool):
    _swap(pool / "semseg.safetensors", pool / "semseg_head.safetensors")
    return "semseg.safetensors: its header records role 'expert head', expected 'expert encoder'"


def _expert_as_theta0(pool):
    shutil.copyfile(pool / "depth.safetensors", pool / "theta0.safetensors")
    return "theta0.safetensors: its header records task 'depth', expected None"


@pytest.mark.parametrize(
    "change", [_tamper, _copied_header, _swapped_tasks, _swapped_roles, _expert_as_theta0]
)
def test_a_changed_pool_file_is_refused_naming_it(clean_pool, tmp_path, capsys, change):
    pool = tmp_path / "pool"
    shutil.copytree(clean_pool, pool)
    assert load_pool_dir(pool).tasks == ["depth", "semseg"]
    message = change(pool)
    with pytest.raises(CheckpointError, match=message):
        load_pool_dir(pool)
    out = tmp_path / "m.json"
    assert main(["evaluate", f"pool.dir={pool}", f"output={out}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def test_an_unchanged_pool_reads_as_written(clean_pool):
    pool = load_pool_dir(clean_pool)
    assert torch.equal(
        pool.experts["semseg"]["cls_token"], load_state(clean_pool / "semseg.safetensors")["cls_token"]
    )
