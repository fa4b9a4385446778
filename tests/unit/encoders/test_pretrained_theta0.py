"""θ0 from pretrained checkpoints: DINOv2 layouts -> timm, resampled position embeddings, local caches."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from simo_merge.encoders import build_encoder
from simo_merge.encoders.convert_dinov2 import timm_to_dinov2_hub, timm_to_hf_dinov2
from simo_merge.encoders.pretrained import PretrainedNotCached, file_sha256, resample_pos_embed
from simo_merge.io.checkpoint import CheckpointError

DINO_S = "vit_small_patch14_dinov2"  # DINOv2-S/14: width 384, 6 heads, 12 blocks, layer scale
DINO_S_REG = "vit_small_patch14_reg4_dinov2"


def _random_timm(arch: str, seed: int, **kwargs) -> dict[str, torch.Tensor]:
    """A randomly initialised timm state, with non-trivial layer scales and biases."""
    torch.manual_seed(seed)
    enc = build_encoder("timm", arch, **kwargs)
    state = {k: v + 0.01 * torch.randn_like(v) for k, v in enc.model_state().items()}
    return state


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("arch", [DINO_S, DINO_S_REG])
def test_every_source_layout_converts_to_the_same_timm_state(tmp_path, arch):
    state = _random_timm(arch, 0, img_size=56, depth=4)
    files = {"timm.safetensors": state}
    files["hub.pth"] = timm_to_dinov2_hub(state)  # what torch.hub's DINOv2 state_dict() holds
    # a DINOv2 training checkpoint: chunked blocks (blocks.<chunk>.<i>.) under teacher.backbone.
    chunked = {}
    for k, v in timm_to_dinov2_hub(state).items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i // 2}.{i}." + k.split(".", 2)[2]
        chunked[f"teacher.backbone.{k}"] = v
    files["train_ckpt.pth"] = {"model": chunked}
    files["hf.safetensors"] = timm_to_hf_dinov2(state)  # HF hub / transformers 4 names
    files["hf_v5.bin"] = timm_to_hf_dinov2(state, prefix="dinov2.", names="v5")  # transformers 5 names
    files["hf_v5.bin"]["classifier.weight"] = torch.zeros(3, 768)  # a head outside the backbone: ignored
    assert "encoder.layer.3.attention.attention.query.weight" in files["hf.safetensors"]
    assert "dinov2.encoder.layer.3.layer_scale2.lambda1" in files["hf_v5.bin"]
    assert "mask_token" in files["hub.pth"]
    for name, payload in files.items():
        path = tmp_path / name
        if name.endswith(".safetensors"):
            save_file({k: v.contiguous() for k, v in payload.items()}, str(path))
        else:
            torch.save(payload, path)
        enc = build_encoder("timm", arch, img_size=56, depth=4, checkpoint=str(path))
        assert _same(enc.model_state(), state), name
        assert enc.source.kind == "checkpoint" and enc.source.sha256 == file_sha256(path)


@pytest.mark.parametrize("registers", [False, True])
def test_hf_conversion_matches_transformers_forward(tmp_path, registers):
    transformers = pytest.importorskip("transformers")
    common = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, image_size=56, patch_size=14)
    common["layerscale_value"] = 0.3
    if registers:
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **common)
        model_cls, arch = transformers.Dinov2WithRegistersModel, DINO_S_REG
    else:
        config, model_cls, arch = transformers.Dinov2Config(**common), transformers.Dinov2Model, DINO_S
    torch.manual_seed(1)
    hf = model_cls(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.02 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")  # the on-disk (Hub) names
    torch.save(hf.state_dict(), tmp_path / "in_memory.pt")  # transformers 5 renames modules in memory
    pixels = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        ref = hf(pixel_values=pixels)
    for path in (tmp_path / "hf" / "model.safetensors", tmp_path / "in_memory.pt"):
        enc = build_encoder("timm", arch, img_size=56, checkpoint=str(path)).eval()
        with torch.no_grad():
            tokens = enc.model.forward_features(pixels)
            pooled = enc.model(pixels)
        diff = (tokens - ref.last_hidden_state).abs().max().item()
        assert diff < 1e-5, (path.name, diff)
        assert (pooled - ref.pooler_output).abs().max().item() < 1e-5


def test_resampled_position_embeddings_load_at_two_sizes(tmp_path):
    from timm.layers import resample_abs_pos_embed

    state = _random_timm(DINO_S, 2, img_size=518, depth=2)  # trained at 518 px: a 37x37 grid
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    path = tmp_path / "dinov2_518.safetensors"
    save_file(state, str(path))
    for size, grid in (((224, 224), (16, 16)), ((288, 384), (20, 27))):
        enc = build_encoder("timm", DINO_S, img_size=size, depth=2, checkpoint=str(path)).eval()
        assert enc.grid_size == grid
        got = enc.model_state()
        assert got["pos_embed"].shape == (1, 1 + grid[0] * grid[1], 384)
        want = resample_pos_embed(state["pos_embed"], grid, num_prefix=1)
        assert torch.equal(got["pos_embed"], want)
        timm_ref = resample_abs_pos_embed(state["pos_embed"], list(grid), num_prefix_tokens=1, antialias=True)
        assert torch.allclose(got["pos_embed"], timm_ref, atol=1e-6)
        assert torch.equal(got["pos_embed"][:, 0], state["pos_embed"][:, 0])  # CLS position kept
        assert all(torch.equal(got[k], state[k]) for k in state if k != "pos_embed")
        out = enc(torch.rand(1, 3, *size), taps=[1])
        assert out.taps[1].shape == (1, 1 + grid[0] * grid[1], 384) and out.features.shape == (1, 384)
    # a 16x16 -> 16x16 "resample" is the identity; a non-square source needs its grid
    same = resample_pos_embed(want, (20, 27), 1, old_grid=(20, 27))
    assert same is want
    with pytest.raises(ValueError, match="not a square grid"):
        resample_pos_embed(want, (16, 16), 1)


def _fake_hub_file(cache, repo: str, filename: str, payload: dict) -> None:
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    target = folder / "snapshots" / "abc123" / filename
    if filename.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in payload.items()}, str(target))
    else:
        torch.save(payload, target)


def test_pretrained_resolves_from_local_caches_only(tmp_path, monkeypatch):
    import huggingface_hub.constants

    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    with pytest.raises(
        PretrainedNotCached, match=r"huggingface-cli download timm/vit_small_patch14_dinov2\.lvd"
    ):
        build_encoder("timm", DINO_S, pretrained=True, img_size=224, depth=2)
    with pytest.raises(PretrainedNotCached, match="huggingface-cli download facebook/dinov2-small"):
        build_encoder("timm", DINO_S, pretrained="facebook/dinov2-small", img_size=224, depth=2)

    state = _random_timm(DINO_S, 3, img_size=518, depth=2)
    # torch.hub's cache of the original DINOv2 file (timm's url fallback), read through timm's own filter
    (tmp_path / "torch_hub" / "checkpoints").mkdir(parents=True)
    hub_file = tmp_path / "torch_hub" / "checkpoints" / "dinov2_vits14_pretrain.pth"
    torch.save(timm_to_dinov2_hub(state), hub_file)
    via_timm = build_encoder("timm", DINO_S, pretrained="true", img_size=224, depth=2)
    assert via_timm.source.kind == "pretrained" and via_timm.source.name == f"{DINO_S}.lvd142m"
    assert via_timm.source.sha256 == file_sha256(hub_file)
    ours = build_encoder("timm", DINO_S, checkpoint=str(hub_file), img_size=224, depth=2)
    a, b = via_timm.model_state(), ours.model_state()
    assert set(a) == set(b)
    for k in a:  # timm's filter and ours resample identically (bicubic, antialias)
        assert torch.allclose(a[k], b[k], atol=1e-6), k

    # the hub cache wins over the url; an HF Dinov2 repository converts through our loader
    _fake_hub_file(hub, "timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors", state)
    from_hub = build_encoder("timm", DINO_S, pretrained="lvd142m", img_size=518, depth=2)
    assert _same(from_hub.model_state(), state) and from_hub.source.file.endswith("model.safetensors")
    _fake_hub_file(hub, "facebook/dinov2-small", "model.safetensors", timm_to_hf_dinov2(state))
    from_repo = build_encoder(
        "timm", DINO_S, pretrained="hf-hub:facebook/dinov2-small", img_size=518, depth=2
    )
    assert _same(from_repo.model_state(), state) and from_repo.source.name == "hf-hub:facebook/dinov2-small"


def test_open_clip_uses_or_refuses_its_checkpoint(tmp_path, tiny_clip):
    from open_clip import create_model

    from simo_merge.encoders.pretrained import parse_pretrained

    state = {k: v + 0.01 * torch.randn_like(v) for k, v in tiny_clip.model_state().items()}
    path = tmp_path / "visual.safetensors"
    save_file({f"visual.{k}": v.contiguous() for k, v in state.items()}, str(path))  # whole-CLIP prefix
    enc = build_encoder("open_clip", "ViT-Tiny-8", checkpoint=str(path))
    assert _same(enc.model_state(), state) and enc.source.sha256 == file_sha256(path)
    bigger = build_encoder("open_clip", "ViT-Tiny-8", checkpoint=str(path), force_image_size=48)
    pos = bigger.model_state()["positional_embedding"]
    assert bigger.grid_size == (6, 6) and pos.shape == (1 + 36, state["positional_embedding"].shape[1])
    assert torch.equal(pos, resample_pos_embed(state["positional_embedding"], (6, 6), 1))
    assert bigger(torch.rand(1, 3, 48, 48)).features.shape == (1, 32)
    as_file = build_encoder("open_clip", "ViT-Tiny-8", pretrained=str(path))  # open_clip: a file as tag
    assert _same(as_file.model_state(), state) and as_file.source.kind == "pretrained"
    # an open_clip tag whose weights are not cached names what to download
    with pytest.raises(PretrainedNotCached, match="vit_base_patch32_clip_224.openai"):
        build_encoder("open_clip", "ViT-B-32", pretrained="openai")
    assert create_model  # imported to keep open_clip's registry warm for the tiny config
    assert parse_pretrained("True") is True and parse_pretrained("false") is False
    assert parse_pretrained("lvd142m") == "lvd142m"


def test_bad_checkpoints_fail_naming_file_and_key(tmp_path, tiny_timm):
    state = tiny_timm.model_state()
    bad = dict(state)
    bad.pop("blocks.0.norm1.weight")
    bad["blocks.0.extra"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file(bad, str(path))
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*missing \['blocks\.0\.norm1\.weight'\]"):
        build_encoder(
            "timm",
            "vit_tiny_patch16_224",
            checkpoint=str(path),
            img_size=32,
            patch_size=8,
            depth=4,
            embed_dim=64,
            num_heads=2,
        )
    with pytest.raises(ValueError, match="either checkpoint"):
        build_encoder("timm", DINO_S, checkpoint=str(path), pretrained=True)
    pickled = tmp_path / "module.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)  # a pickled module: refused (weights_only)
    with pytest.raises(CheckpointError, match="weights_only"):
        build_encoder("timm", DINO_S, checkpoint=str(pickled), img_size=56, depth=2)


def test_demo_theta0_from_a_checkpoint_skips_pretraining_and_tracks_the_file(tmp_path, capsys):
    from simo_merge.config import load_config
    from simo_merge.io.checkpoint import load_state, read_sidecar
    from simo_merge.jobs.demo import Demo, DemoConfig

    kwargs = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)
    path = tmp_path / "theta0_in.safetensors"
    first = _random_timm("vit_tiny_patch16_224", 4, **kwargs)
    save_file(first, str(path))
    overrides = [
        "encoder.kwargs={img_size: 32, patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}",
        f"encoder.checkpoint={path}",
        "data.size=[32,32]",
        "data.num_samples={train: 8, val: 4, test: 4}",
        "data.batch_size=4",
        "progress=false",
        f"output_dir={tmp_path / 'run'}",
    ]
    demo = Demo(load_config(DemoConfig, None, overrides))
    assert _same(demo.theta0(), first)
    assert "masked pretraining skipped" in capsys.readouterr().out
    out = tmp_path / "run" / "experts" / "theta0.safetensors"
    meta = read_sidecar(out)
    assert meta["source"] == {
        "file": str(path.resolve()),
        "sha256": file_sha256(path),
        "kind": "checkpoint",
        "name": "",
    }
    assert meta["encoder"]["checkpoint"] == str(path) and "checkpoint" not in meta["encoder"]["kwargs"]
    Demo(load_config(DemoConfig, None, overrides)).theta0()  # same file: reused
    assert capsys.readouterr().out == ""
    second = _random_timm("vit_tiny_patch16_224", 5, **kwargs)
    save_file(second, str(path))  # same path, new content: θ0 (and what depends on it) is rebuilt
    again = Demo(load_config(DemoConfig, None, overrides))
    assert again.theta0_key() != demo.theta0_key()
    assert _same(again.theta0(), second) and _same(load_state(out), second)
    with pytest.raises(FileNotFoundError, match="encoder.checkpoint: file .*nope.safetensors not found"):
        Demo(
            load_config(
                DemoConfig, None, [*overrides[:1], "encoder.checkpoint=nope.safetensors", *overrides[2:]]
            )
        ).theta0()


def test_encoder_kwargs_given_whole_replace_the_defaults(tmp_path):
    from simo_merge.config import load_config
    from simo_merge.jobs.demo import DemoConfig

    demo_default = load_config(DemoConfig).encoder.kwargs
    assert demo_default["patch_size"] == 8 and demo_default["depth"] == 6
    given = [f"encoder.arch={DINO_S}", "encoder.kwargs={img_size: 224}", "data.size=[224,224]"]
    cfg = load_config(DemoConfig, None, given)
    assert cfg.encoder.kwargs == {"img_size": 224}  # no patch_size 8 / depth 6 from the demo's tiny ViT
    yaml = tmp_path / "dino.yaml"
    yaml.write_text(f"encoder: {{arch: {DINO_S}, kwargs: {{img_size: [288, 384]}}, pretrained: 'true'}}\n")
    yaml.write_text(yaml.read_text() + "data: {size: [288, 384]}\n")
    cfg = load_config(DemoConfig, yaml, ["encoder.kwargs.dynamic_img_pad=false"])
    assert cfg.encoder.kwargs == {"img_size": [288, 384], "dynamic_img_pad": False}
    assert cfg.encoder.weights() == {"pretrained": True}
    assert load_config(DemoConfig, None, ["encoder.kwargs.depth=2"]).encoder.kwargs["patch_size"] == 8


def test_toy_merge_pool_uses_the_given_theta0(tmp_path, tiny_timm):
    from simo_merge.config import EncoderConfig, PoolConfig
    from simo_merge.pool.toy import make_toy_pool

    state = {k: v + 1.0 for k, v in tiny_timm.model_state().items()}
    path = tmp_path / "t0.safetensors"
    save_file(state, str(path))
    kwargs = dict(img_size=32, patch_size=8, depth=4, embed_dim=64, num_heads=2)
    pool = make_toy_pool(
        EncoderConfig("timm", "vit_tiny_patch16_224", kwargs, checkpoint=str(path)), PoolConfig(kind="toy")
    )
    assert _same(pool.base, state) and pool.sources["base"] == str(path.resolve())
