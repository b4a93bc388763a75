"""From SAM masks to one partition of the image, and mean pooling within it.

Merge rule (paper Section 5.1, made exact): masks are painted largest first, so where masks
overlap the smaller one wins; pixels that no mask covers form one remainder segment. Segments are
numbered canonically (by first pixel in raster order), so two mask lists that give the same
partition give identical label maps whatever order the masks came in.
"""

from __future__ import annotations

import numpy as np

from .config import PoolConfig


def _paint_order(masks: np.ndarray) -> list[int]:
    """Mask indices, largest area first; equal areas are ordered by mask content so that the
    result does not depend on the order masks arrive in."""
    areas = masks.sum(axis=(1, 2))
    keys = [(-int(a), np.packbits(m).tobytes()) for a, m in zip(areas, masks, strict=True)]
    return sorted(range(len(masks)), key=lambda i: keys[i])


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..K-1 by first occurrence in raster order."""
    _, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first), dtype=np.int32)
    return rank[inverse].reshape(labels.shape)


def partition(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Merge bool masks (N, H, W) into one non-overlapping partition of an (H, W) image.

    Returns int32 labels (H, W) in 0..K-1, canonically numbered. N = 0 gives one segment.
    """
    h, w = size
    assert masks.ndim == 3 and masks.shape[1:] == (h, w), (
        f"masks must be (N, {h}, {w}), got {masks.shape}"
    )
    labels = np.full((h, w), -1, dtype=np.int32)  # -1: the remainder segment
    for i in _paint_order(masks):
        labels[masks[i]] = i
    return _canonical(labels)


def mean_colours(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean RGB of ``image`` (HWC uint8) per label of ``labels`` (H, W; 0..K-1): (K, 3) float."""
    k = int(labels.max()) + 1
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=k).astype(np.float64)
    sums = np.stack(
        [np.bincount(flat, weights=image[..., c].ravel(), minlength=k) for c in range(3)], 1
    )
    return sums / np.maximum(counts, 1)[:, None]


def _to_uint8(colours: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(colours), 0, 255).astype(np.uint8)


def mean_pool(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Replace every pixel of ``image`` (HWC uint8) by the mean colour of its segment.

    ``labels`` (H, W) int in 0..K-1. Returns HWC uint8 (means rounded to nearest).
    """
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, (
        f"image must be HxWx3 uint8, got {image.shape} {image.dtype}"
    )
    assert labels.shape == image.shape[:2], f"labels {labels.shape} != image {image.shape[:2]}"
    return _to_uint8(mean_colours(image, labels))[labels]


def mean_pool_whole_masks(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The released code's variant: each mask's colour is its mean over the WHOLE mask (before
    overlaps are resolved); masks are painted largest first; uncovered pixels get their own mean.

    ``image`` HWC uint8, ``masks`` bool (N, H, W). Returns HWC uint8.
    """
    h, w = image.shape[:2]
    covered = np.zeros((h, w), dtype=bool)
    out = np.empty_like(image)
    for i in _paint_order(masks):
        out[masks[i]] = _to_uint8(image[masks[i]].reshape(-1, 3).mean(0))
        covered |= masks[i]
    if not covered.all():
        out[~covered] = _to_uint8(image[~covered].reshape(-1, 3).mean(0))
    return out


def pool(image: np.ndarray, masks: np.ndarray, cfg: PoolConfig) -> tuple[np.ndarray, np.ndarray]:
    """Partition and pool per ``cfg.merge``. Returns (pooled HWC uint8, labels (H, W) int32)."""
    labels = partition(masks, image.shape[:2])
    if cfg.merge == "whole_mask":
        return mean_pool_whole_masks(image, masks), labels
    return mean_pool(image, labels), labels


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Bool (H, W): pixels whose right or lower neighbour lies in another segment."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge
