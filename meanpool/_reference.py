"""Reference path: SAM's own ``SamAutomaticMaskGenerator``, with one fix for zero masks."""

from __future__ import annotations

import functools

import numpy as np
import torch

from .config import SegmentConfig


@functools.lru_cache(maxsize=1)
def _generator_class() -> type:
    from segment_anything import SamAutomaticMaskGenerator

    class _ZeroSafeGenerator(SamAutomaticMaskGenerator):
        # SAM builds a crop's ``crop_boxes`` with torch.tensor([]) when no mask survives, a 1-D
        # tensor that box_area() then indexes as 2-D (IndexError). Give it shape (0, 4) instead.
        def _process_crop(self, image, crop_box, crop_layer_idx, orig_size):
            data = super()._process_crop(image, crop_box, crop_layer_idx, orig_size)
            if len(data["rles"]) == 0:
                data["crop_boxes"] = torch.zeros((0, 4), dtype=torch.int64)
                data["boxes"] = torch.zeros((0, 4), dtype=data["boxes"].dtype)
            return data

    return _ZeroSafeGenerator


def generate_reference(sam: torch.nn.Module, image: np.ndarray, cfg: SegmentConfig) -> np.ndarray:
    """SAM masks for ``image`` (HWC uint8 RGB) via ``SamAutomaticMaskGenerator``.

    Returns bool masks of shape (N, H, W), N >= 0, in the generator's output order.
    """
    gen = _generator_class()(
        sam,
        points_per_side=cfg.points_per_side,
        points_per_batch=cfg.decoder_batch_for(sam.device.type),
        pred_iou_thresh=cfg.pred_iou_thresh,
        stability_score_thresh=cfg.stability_score_thresh,
        stability_score_offset=cfg.stability_score_offset,
        box_nms_thresh=cfg.box_nms_thresh,
        crop_n_layers=cfg.crop_n_layers,
        crop_nms_thresh=cfg.crop_nms_thresh,
        crop_overlap_ratio=cfg.crop_overlap_ratio,
        crop_n_points_downscale_factor=cfg.crop_n_points_downscale_factor,
        min_mask_region_area=cfg.min_mask_region_area,
        output_mode="binary_mask",
    )
    anns = gen.generate(image)
    h, w = image.shape[:2]
    if not anns:
        return np.zeros((0, h, w), dtype=bool)
    return np.stack([np.asarray(a["segmentation"], dtype=bool) for a in anns])
