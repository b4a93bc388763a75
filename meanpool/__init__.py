"""Mean-pooled ImageNet (Zhang, Lepori & Pavlick, arXiv 2310.10899, Section 5.1).

Every pixel of a 16-class ImageNet image is replaced by the mean colour of its Segment Anything
segment. Public API: configs, ``load_sam``, ``generate_masks``, ``partition``, ``mean_pool``,
``mean_pool_image``, ``build_index`` (the paper's image lists or a class-balanced draw), ``build``;
``meanpool.loader`` and ``meanpool.hub`` for using the data. See docs/meanpool.md.
"""

from .config import BuildConfig, ImageConfig, IndexConfig, PoolConfig, SegmentConfig
from .model import CheckpointError, load_sam
from .pool import mean_pool, mean_pool_whole_masks, partition
from .segment import generate_masks, mean_pool_image

__all__ = [
    "BuildConfig",
    "CheckpointError",
    "ImageConfig",
    "IndexConfig",
    "PoolConfig",
    "SegmentConfig",
    "generate_masks",
    "load_sam",
    "mean_pool",
    "mean_pool_image",
    "mean_pool_whole_masks",
    "partition",
]
