"""simo_merge: merge per-task ViT experts into one encoder, then realign its features to each task."""

__version__ = "0.1.0"
