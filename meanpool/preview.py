"""Side-by-side preview: original | segment boundaries | mean-pooled (as in paper Figure 4)."""

from __future__ import annotations

import numpy as np

from .pool import boundaries

_GAP = 4  # px of white between panels
_EDGE_COLOUR = np.array([255, 0, 0], dtype=np.uint8)


def preview_panel(image: np.ndarray, pooled: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One HWC uint8 strip (H, 3W + 2 gaps, 3): ``image``, ``image`` with segment boundaries in
    red, and ``pooled``. ``image``/``pooled`` HWC uint8, ``labels`` (H, W) int."""
    assert image.shape == pooled.shape, f"image {image.shape} and pooled {pooled.shape} differ"
    h, w = labels.shape
    edges = image.copy()
    edges[boundaries(labels)] = _EDGE_COLOUR
    gap = np.full((h, _GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([image, gap, edges, gap, pooled], axis=1)
