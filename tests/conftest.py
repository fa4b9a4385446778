"""Shared test set-up: offline hubs, few threads, tiny encoders built from configs (no downloads)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_TIMM = dict(img_size=32, patch_size=8, depth=4, embed_dim=64, num_heads=2)


@pytest.fixture
def tiny_timm():
    from simo_merge.encoders import build_encoder

    torch.manual_seed(0)
    return build_encoder("timm", "vit_tiny_patch16_224", **TINY_TIMM).eval()


@pytest.fixture
def tiny_clip():
    from simo_merge.encoders import build_encoder

    torch.manual_seed(0)
    return build_encoder("open_clip", "ViT-Tiny-8").eval()


@pytest.fixture(scope="session")
def fixture_dirs(tmp_path_factory):
    """The CLIP eight-task fixture (data in the eight real formats + task_vectors pickles), written once."""
    from tests.helpers.clip8_fixture import write_clip8_data, write_task_vectors

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("clip8")
    write_clip8_data(root / "data")
    text = write_task_vectors(root / "ckpt", root / "data")
    return root, text
