"""The tiny demo overrides (a 2-block ViT at 32 px, a few steps each) the job tests run."""

TINY = [
    "encoder.kwargs={img_size: 32, patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}",
    "data.size=[32,32]",
    "data.num_samples={train: 24, val: 8, test: 8}",
    "data.batch_size=8",
    "pretrain.steps=2",
    "expert.probe_steps=1",
    "expert.finetune_steps=2",
    "mtl.probe_steps=1",
    "mtl.finetune_steps=2",
    "merge.lam_grid=[0.3,1.0]",
    "realign.params.steps=2",
    "realign.apply_to=[TA]",
    "progress=false",
]
