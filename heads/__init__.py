"""Task decoders, installed as ``simo_merge.heads``: they read encoder taps and stay frozen in merging."""

from simo_merge.registry import Registry

HEADS: Registry = Registry("head", package=__name__)

__all__ = ["HEADS"]
