"""Classification experts from any θ0: the linear classifier head, image_folder / idx datasets, the
heads realigner on zero-shot heads, and a tiny pool trained from a saved DINOv2 θ0 through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from simo_merge.cli import main
from simo_merge.datasets import build_dataset
from simo_merge.heads import EncoderLayout, build_head, head_from_config
from simo_merge.tasks import classification, segmentation
from tests.helpers.idx_files import write_idx


def toy_images(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB images with two labels: the dominant colour channel (3 classes) and the size of a white
    square at a random place (small 4 px / large 14 px, 2 classes)."""
    rng = np.random.default_rng(seed)
    color = rng.integers(0, 3, n)
    large = rng.integers(0, 2, n)
    x = rng.integers(0, 60, (n, size, size, 3))
    for i in range(n):
        x[i, :, :, color[i]] += 120
        side = 14 if large[i] else 4
        r, c = rng.integers(0, size - side + 1, 2)
        x[i, r : r + side, c : c + side, :] = 255
    return x.clip(0, 255).astype(np.uint8), color.astype(np.uint8), large.astype(np.uint8)


def write_toy_idx(root, sizes=(("train", 96), ("val", 32), ("test", 32))) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for seed, (split, n) in enumerate(sizes):
        x, color, size = toy_images(n, seed)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{split}-color-idx1-ubyte.gz", color)
        write_idx(root / f"{split}-size-idx1-ubyte", size)


# ----------------------------------------------------------------------------------------- datasets


def test_idx_dataset_reads_images_and_one_label_file_per_task(tmp_path):
    write_toy_idx(tmp_path)
    labels = {"color": "{split}-color-idx1-ubyte", "size": "{split}-size-idx1-ubyte"}
    ds = build_dataset("idx", root=tmp_path, split="val", tasks=["color", "size"], labels=labels)
    x, color, size = toy_images(32, 1)
    assert len(ds) == 32 and ds.task_specs["color"].channels == 3 and ds.task_specs["size"].channels == 2
    s = ds[5]
    assert s["image"].shape == (3, 28, 28) and s["color"].item() == color[5] and s["size"].item() == size[5]
    assert torch.allclose(s["image"].permute(1, 2, 0), torch.from_numpy(x[5] / 255.0).float())
    # MNIST names: grey images, t10k- for the test split, one task
    grey = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    (tmp_path / "mnist").mkdir()
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", grey)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.array([7, 1], np.uint8))
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.array([9], np.uint8))  # 10 classes
    mnist = build_dataset("idx", root=tmp_path / "mnist", split="test", tasks=["digit"])
    assert mnist.task_specs["digit"].channels == 10 and mnist[0]["digit"].item() == 7
    assert torch.allclose(mnist[1]["image"][0], torch.from_numpy(grey[1] / 255.0).float())
    with pytest.raises(FileNotFoundError, match="holdout-images-idx3-ubyte"):
        build_dataset("idx", root=tmp_path, split="holdout", tasks=["digit"])
    with pytest.raises(ValueError, match="need labels="):
        build_dataset("idx", root=tmp_path, split="val", tasks=["color", "size"])


def test_image_folder_dataset(tmp_path):
    for split, classes in (("train", ("cat", "dog", "eel")), ("test", ("dog", "cat"))):
        for c in classes:
            (tmp_path / split / c / "sub").mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (12, 8), (40 * i, 0, 200)).save(tmp_path / split / c / "sub" / f"{i}.png")
    test = build_dataset("image_folder", root=tmp_path, split="test", tasks=["animal"], image_size=8)
    assert test.classnames == ["cat", "dog", "eel"] and test.task_specs["animal"].channels == 3
    assert test.targets == [0, 0, 1, 1] and len(test) == 4
    s = test[3]
    assert s["image"].shape == (3, 8, 8) and s["animal"].item() == 1
    assert s["image"][2].min().item() == pytest.approx(200 / 255)
    with pytest.raises(FileNotFoundError, match="split folder .*val not found"):
        build_dataset("image_folder", root=tmp_path, split="val", tasks=["animal"])
    (tmp_path / "test" / "fox").mkdir()
    with pytest.raises(ValueError, match="fox is not a class"):
        build_dataset("image_folder", root=tmp_path, split="test", tasks=["animal"])


# -------------------------------------------------------------------------------------------- heads


def test_linear_classifier_head(tiny_timm):
    spec = classification("c", 5)
    head = build_head("linear", spec, tiny_timm, (32, 32))
    assert type(head).__name__ == "LinearClassifierHead" and head.taps == ["final"]
    out = tiny_timm(torch.rand(3, 3, 32, 32), taps=[1, 3])
    feats = {**out.taps, "final": out.features}
    logits = head(feats)
    assert logits.shape == (3, 5)
    assert torch.allclose(logits, out.features @ head.fc.weight.T + head.fc.bias)
    # cosine form by hand; CLS / mean pooling of block taps
    cos = build_head("linear", spec, tiny_timm, (32, 32), taps=[1, "final"], cosine=True, scale=10.0)
    x = torch.cat([out.taps[1][:, 0], out.features], 1)
    want = 10.0 * F.normalize(x, dim=1) @ F.normalize(cos.fc.weight, dim=1).T
    assert cos.fc.bias is None and torch.allclose(cos(feats), want, atol=1e-6)
    mean = build_head("linear", spec, tiny_timm, (32, 32), taps=[3], pool="mean")
    assert torch.allclose(mean(feats), mean.fc(out.taps[3][:, 1:].mean(1)))
    again = head_from_config(json.loads(json.dumps(cos.config())))
    again.load_state_dict(cos.state_dict())
    assert torch.equal(again(feats), cos(feats))
    # the dense tasks keep the BN + 1x1 conv head; the classifier refuses them
    assert type(build_head("linear", segmentation("s", 4), tiny_timm, (32, 32))).__name__ == "LinearHead"
    from simo_merge.heads.linear_classifier import LinearClassifierHead

    with pytest.raises(ValueError, match="needs a classification task"):
        LinearClassifierHead(segmentation("s", 4), EncoderLayout.of(tiny_timm, (32, 32)), ["final"])


def test_heads_realigner_retrains_zeroshot_heads(tmp_path, tiny_clip):
    from simo_merge.features.inputs import RealignInputs
    from simo_merge.heads.zeroshot import zeroshot_head_from_weights
    from simo_merge.realign.io import load_realigned, save_realigned
    from simo_merge.realign.train import RealignConfig, realign

    torch.manual_seed(0)
    base = tiny_clip.model_state()
    experts = {t: {k: v + 0.05 * torch.randn_like(v) for k, v in base.items()} for t in ("a", "b")}
    heads = {t: zeroshot_head_from_weights(torch.randn(4, 32), task_name=t).eval() for t in ("a", "b")}
    assert not list(heads["a"].parameters())  # frozen text embeddings are buffers
    images = torch.rand(16, 3, 32, 32)
    merged = {k: (experts["a"][k] + experts["b"][k]) / 2 for k in base}

    def make():
        from simo_merge.encoders import build_encoder

        return build_encoder("open_clip", "ViT-Tiny-8")

    cfg = RealignConfig(realigner="heads", steps=20, batch_size=16, lr=1e-2, progress=False)
    model, curve = realign(make, merged, experts, heads, RealignInputs({t: images for t in heads}), cfg)
    assert model.num_trainable() == 2 * 4 * 32 and curve[-1] < curve[0]
    assert not torch.equal(model.heads["a"].weight, heads["a"].weight)  # re-trained copy ...
    assert isinstance(heads["a"].weight, torch.Tensor) and not list(
        heads["a"].parameters()
    )  # ... originals kept
    save_realigned(tmp_path / "h.safetensors", model, "heads")
    enc = make()
    enc.load_model_state(merged)
    again = load_realigned(tmp_path / "h.safetensors", enc, heads)
    with torch.no_grad():
        assert torch.equal(again(images)["b"], model(images)["b"])


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_classification_pool_from_a_saved_theta0_through_the_cli(tmp_path, capsys):
    from simo_merge.encoders import build_encoder
    from simo_merge.encoders.convert_dinov2 import timm_to_hf_dinov2
    from simo_merge.encoders.pretrained import file_sha256, resample_pos_embed
    from simo_merge.io.checkpoint import read_sidecar

    # θ0: a tiny DINOv2-style model written in the Hugging Face layout at 56 px (4x4 grid), used at 28 px
    arch_kwargs = "{img_size: 28, patch_size: 14, depth: 2, embed_dim: 48, num_heads: 2}"
    torch.manual_seed(0)
    theta0 = build_encoder(
        "timm", "vit_small_patch14_dinov2", img_size=56, depth=2, embed_dim=48, num_heads=2
    )
    with torch.no_grad():  # layer scales of a trained model (timm initialises them to 1e-5)
        for block in theta0.blocks:
            block.ls1.gamma.fill_(0.5)
            block.ls2.gamma.fill_(0.5)
    ckpt = tmp_path / "dinov2_hf.safetensors"
    save_file({k: v.contiguous() for k, v in timm_to_hf_dinov2(theta0.model_state()).items()}, str(ckpt))
    data_root = tmp_path / "data"
    write_toy_idx(data_root)
    data = [
        "data.name=idx",
        f"data.root={data_root}",
        "data.tasks=[color,size]",
        "data.options={labels: {color: '{split}-color-idx1-ubyte', size: '{split}-size-idx1-ubyte'}}",
        "data.size=[28,28]",
        "data.augment=false",
        "data.batch_size=16",
        "progress=false",
    ]
    pool = tmp_path / "run" / "experts"
    args = [
        "train-experts",
        "encoder.arch=vit_small_patch14_dinov2",
        f"encoder.kwargs={arch_kwargs}",
        f"encoder.checkpoint={ckpt}",
        "head.kind=linear",
        "expert.probe_steps=30",
        "expert.finetune_steps=30",
        "expert.lr_encoder=1e-4",
        f"output_dir={tmp_path / 'run'}",
        *data,
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "masked pretraining skipped" in out and "fine-tuned the color expert" in out
    side = read_sidecar(pool / "theta0.safetensors")
    assert side["source"]["sha256"] == file_sha256(ckpt) and side["source"]["file"] == str(ckpt.resolve())
    assert side["encoder"]["kwargs"]["img_size"] == 28
    from simo_merge.io.checkpoint import load_state

    got = load_state(pool / "theta0.safetensors")
    want_pos = resample_pos_embed(theta0.model_state()["pos_embed"], (2, 2), 1)
    assert torch.equal(got["pos_embed"], want_pos)
    assert torch.equal(got["blocks.1.attn.qkv.weight"], theta0.model_state()["blocks.1.attn.qkv.weight"])
    assert read_sidecar(pool / "color_head.safetensors")["head"]["taps"] == ["final"]
    assert main(args) == 0 and "fine-tuned" not in capsys.readouterr().out  # reused

    experts = f"{{color: {pool}/color.safetensors, size: {pool}/size.safetensors}}"
    merged = tmp_path / "merge"
    assert (
        main(
            [
                "merge",
                "pool.kind=files",
                f"pool.base={pool}/theta0.safetensors",
                f"pool.experts={experts}",
                "method.name=task_arithmetic",
                "method.params={lam: 0.5}",
                f"output_dir={merged}",
            ]
        )
        == 0
    )
    assert main(["evaluate", f"pool.dir={pool}", f"checkpoint={merged}/merged.safetensors", *data]) == 0
    result = json.loads((merged / "merged.metrics.json").read_text())
    individual = {t: result["rows"]["Individual"][t]["accuracy"] for t in ("color", "size")}
    assert individual["color"] > 0.6 and individual["size"] > 0.75, individual  # chance: 1/3 and 1/2
    merged_acc = {t: result["rows"]["task_arithmetic"][t]["accuracy"] for t in ("color", "size")}
    print("individual", individual, "TA", merged_acc)

    accs = {}
    for realigner in ("surgery", "deep", "shared-deep", "taps", "heads"):
        out_dir = tmp_path / f"realign_{realigner}"
        objective = "supervised" if realigner == "heads" else "unsupervised"
        assert (
            main(
                [
                    "realign",
                    f"pool.dir={pool}",
                    f"checkpoint={merged}/merged.safetensors",
                    f"realign.realigners=[{realigner}]",
                    f"realign.params={{objective: {objective}, steps: 20, rank: 8}}",
                    "tsne=false",
                    f"output_dir={out_dir}",
                    *data,
                ]
            )
            == 0
        )
        metrics = json.loads((out_dir / "metrics.json").read_text())
        row = f"task_arithmetic+{realigner}"
        accs[realigner] = {t: metrics["rows"][row][t]["accuracy"] for t in ("color", "size")}
        assert metrics["loss_curve"][-1] < metrics["loss_curve"][0], realigner
        assert (
            main(
                [
                    "evaluate",
                    f"pool.dir={pool}",
                    f"checkpoint={merged}/merged.safetensors",
                    f"adapters={out_dir}/adapters.safetensors",
                    f"output={out_dir}/eval.json",
                    *data,
                ]
            )
            == 0
        )
        again = json.loads((out_dir / "eval.json").read_text())["rows"][row]
        assert again == metrics["rows"][row], realigner  # evaluate reproduces realign's numbers
    print("realigned", accs)
    ta_mean = sum(merged_acc.values()) / 2
    for realigner, acc in accs.items():  # on this pool every realigner recovers some of TA's loss
        assert sum(acc.values()) / 2 >= ta_mean, (realigner, acc, merged_acc)
    aff = tmp_path / "affinity"
    assert (
        main(
            [
                "affinity",
                f"pool.dir={pool}",
                "select_lambdas=[0.5]",
                "transfer_lambdas=[0,1]",
                f"output_dir={aff}",
                *data,
            ]
        )
        == 0
    )
    result = json.loads((aff / "affinity.json").read_text())
    assert result["tasks"] == ["color", "size"] and (aff / "interference.png").is_file()
    assert len(result["interference"]["matrix"]) == 2
