"""ELMM recipe building blocks (paper §3.3, §3.5, §3.6): the multi-view visual token compressor,
the knowledge reasoning completion head and the hard-negative BCE loss. The end-to-end recipe
(`pc run elmm`) is not wired yet — see the open issue."""

from .modules import KGCHead, MultiViewTokenCompressor, elmm_bce_loss

__all__ = ["KGCHead", "MultiViewTokenCompressor", "elmm_bce_loss"]
