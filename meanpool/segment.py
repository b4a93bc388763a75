"""SAM masks for one image, through the reference or the fast path (``SegmentConfig.backend``)."""

from __future__ import annotations

import numpy as np
import torch

from .config import PoolConfig, SegmentConfig
from .pool import pool


def generate_masks(sam: torch.nn.Module, image: np.ndarray, cfg: SegmentConfig) -> np.ndarray:
    """Bool masks (N, H, W), N >= 0, for ``image`` (HWC uint8 RGB) with the settings of ``cfg``.

    Zero surviving masks give N = 0 (SAM's own generator would raise IndexError with crops).
    """
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, (
        f"image must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}"
    )
    if cfg.backend == "reference":
        from ._reference import generate_reference

        return generate_reference(sam, image, cfg)
    from .fast import generate_fast

    return generate_fast(sam, image, cfg)


def mean_pool_image(
    sam: torch.nn.Module,
    image: np.ndarray,
    segment: SegmentConfig | None = None,
    pool_cfg: PoolConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Segment ``image`` (HWC uint8 RGB) with SAM and mean-pool it.

    Returns (pooled HWC uint8, labels (H, W) int32 in 0..K-1 where K is the number of segments).
    """
    masks = generate_masks(sam, image, segment or SegmentConfig())
    return pool(image, masks, pool_cfg or PoolConfig())
