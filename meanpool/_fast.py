"""Fast path: SAM automatic mask generation re-organised for throughput.

Same algorithm and settings as ``SamAutomaticMaskGenerator`` (so float32 gives the same masks),
but: the whole image and all its crops go through the image encoder in ONE batched call
(optionally in bfloat16), each crop's prompts are decoded in large batches, and quality
filtering, stability scores, boxes and both NMS passes run on torch tensors on the model's
device. Masks stay as crop-sized boolean tensors until the end (no RLE round trip); only SAM's
small-region clean-up (OpenCV connected components) runs on the CPU, on the few survivors.
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.utils.amg import (
    batched_mask_to_box,
    build_all_layer_point_grids,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
    remove_small_regions,
)
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops.boxes import batched_nms, box_area

from .config import SegmentConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@torch.no_grad()
def _encode_crops(
    sam: torch.nn.Module, image: np.ndarray, crop_boxes: list[list[int]], dtype: str
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Embed every crop (XYXY boxes) of ``image`` (HWC uint8) in one encoder call.

    Returns embeddings (n_crops, C, h, w) in float32 and each crop's resized input size (H, W).
    """
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    batch, input_sizes = [], []
    for x0, y0, x1, y1 in crop_boxes:
        # SamPredictor.set_image's own PIL resize, so inputs match the reference bit for bit.
        resized = transform.apply_image(image[y0:y1, x0:x1])  # h' x w' x 3 uint8
        input_sizes.append(resized.shape[:2])
        pixels = torch.as_tensor(resized, device=sam.device).permute(2, 0, 1).contiguous()
        batch.append(sam.preprocess(pixels[None])[0])  # 3 x S x S, normalised and padded
    x = torch.stack(batch)  # n_crops x 3 x S x S
    if dtype == "float32":
        return sam.image_encoder(x), input_sizes
    with torch.autocast(device_type=x.device.type, dtype=_DTYPES[dtype]):
        return sam.image_encoder(x).float(), input_sizes


@torch.no_grad()
def _crop_masks(
    sam: torch.nn.Module,
    embedding: torch.Tensor,
    points: np.ndarray,
    input_size: tuple[int, int],
    crop_box: list[int],
    orig_size: tuple[int, int],
    cfg: SegmentConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode all point prompts of one crop; keep masks that pass the quality filters.

    ``embedding`` is 1 x C x h x w, ``points`` (P, 2) are XY pixels in the crop frame.
    Returns crop-sized bool masks (n, h_c, w_c), predicted IoUs (n,), crop-frame XYXY boxes (n, 4),
    after the per-crop NMS, ordered as SAM's generator orders them.
    """
    x0, y0, x1, y1 = crop_box
    crop_size = (y1 - y0, x1 - x0)
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    image_pe = sam.prompt_encoder.get_dense_pe()
    kept_masks, kept_iou, kept_boxes = [], [], []
    for start in range(0, len(points), cfg.points_per_batch):
        chunk = points[start : start + cfg.points_per_batch]
        coords = torch.as_tensor(transform.apply_coords(chunk, crop_size), device=sam.device)
        labels = torch.ones(len(chunk), dtype=torch.int, device=sam.device)
        sparse, dense = sam.prompt_encoder(
            points=(coords[:, None], labels[:, None]), boxes=None, masks=None
        )
        low_res, iou = sam.mask_decoder(
            image_embeddings=embedding,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )  # (b, 3, 4h, 4w) logits, (b, 3)
        logits = sam.postprocess_masks(low_res, input_size, crop_size).flatten(0, 1)  # 3b x hc x wc
        iou = iou.flatten(0, 1)
        keep = torch.ones_like(iou, dtype=torch.bool)
        if cfg.pred_iou_thresh > 0.0:
            keep &= iou > cfg.pred_iou_thresh
        if cfg.stability_score_thresh > 0.0:
            stability = calculate_stability_score(
                logits, sam.mask_threshold, cfg.stability_score_offset
            )
            keep &= stability >= cfg.stability_score_thresh
        masks = logits[keep] > sam.mask_threshold
        iou = iou[keep]
        boxes = batched_mask_to_box(masks)  # crop-frame XYXY
        near_edge = is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_size[1], orig_size[0]])
        kept_masks.append(masks[~near_edge])
        kept_iou.append(iou[~near_edge])
        kept_boxes.append(boxes[~near_edge])
    masks, iou, boxes = torch.cat(kept_masks), torch.cat(kept_iou), torch.cat(kept_boxes)
    keep = batched_nms(boxes.float(), iou, torch.zeros_like(iou), iou_threshold=cfg.box_nms_thresh)
    return masks[keep], iou[keep], boxes[keep]


def _uncrop(mask: torch.Tensor, crop_box: list[int], orig_size: tuple[int, int]) -> np.ndarray:
    """A crop-sized bool mask placed into an all-False (H, W) numpy mask."""
    x0, y0, x1, y1 = crop_box
    full = np.zeros(orig_size, dtype=bool)
    full[y0:y1, x0:x1] = mask.cpu().numpy()
    return full


def _remove_small_regions(masks: list[np.ndarray], cfg: SegmentConfig) -> list[np.ndarray]:
    """SAM's clean-up: fill small holes, drop small islands, then NMS preferring unchanged masks."""
    if not masks:
        return masks
    cleaned, scores = [], []
    for mask in masks:
        mask, holes_changed = remove_small_regions(mask, cfg.min_mask_region_area, mode="holes")
        mask, islands_changed = remove_small_regions(mask, cfg.min_mask_region_area, mode="islands")
        cleaned.append(mask)
        scores.append(float(not (holes_changed or islands_changed)))
    boxes = batched_mask_to_box(torch.as_tensor(np.stack(cleaned)))
    keep = batched_nms(
        boxes.float(),
        torch.as_tensor(scores),
        torch.zeros(len(boxes)),
        iou_threshold=max(cfg.box_nms_thresh, cfg.crop_nms_thresh),
    )
    return [cleaned[i] for i in keep.tolist()]


@torch.no_grad()
def generate_fast(sam: torch.nn.Module, image: np.ndarray, cfg: SegmentConfig) -> np.ndarray:
    """SAM masks for ``image`` (HWC uint8 RGB), batched; returns bool masks (N, H, W), N >= 0."""
    orig_size = image.shape[:2]
    crop_boxes, layers = generate_crop_boxes(orig_size, cfg.crop_n_layers, cfg.crop_overlap_ratio)
    grids = build_all_layer_point_grids(
        cfg.points_per_side, cfg.crop_n_layers, cfg.crop_n_points_downscale_factor
    )
    embeddings, input_sizes = _encode_crops(sam, image, crop_boxes, cfg.encoder_dtype)

    masks, boxes, crop_of = [], [], []  # crop-frame masks, image-frame boxes, crop index
    for c, (box, layer) in enumerate(zip(crop_boxes, layers, strict=True)):
        crop_hw = np.array([box[3] - box[1], box[2] - box[0]])
        points = grids[layer] * crop_hw[None, ::-1]  # (P, 2) XY in the crop frame
        m, _, b = _crop_masks(
            sam, embeddings[c : c + 1], points, input_sizes[c], box, orig_size, cfg
        )
        masks.extend(m)
        boxes.append(b + torch.as_tensor([box[0], box[1], box[0], box[1]], device=b.device))
        crop_of.extend([c] * len(m))

    order = list(range(len(masks)))
    if len(crop_boxes) > 1 and masks:
        # Duplicates across crops: prefer masks from smaller crops (score 1 / crop area).
        all_boxes = torch.cat(boxes).float()
        crops = torch.as_tensor([crop_boxes[c] for c in crop_of], device=all_boxes.device)
        keep = batched_nms(
            all_boxes,
            1 / box_area(crops),
            torch.zeros(len(crop_of), device=all_boxes.device),
            iou_threshold=cfg.crop_nms_thresh,
        )
        order = keep.tolist()
    full = [_uncrop(masks[i], crop_boxes[crop_of[i]], orig_size) for i in order]
    if cfg.min_mask_region_area > 0:
        full = _remove_small_regions(full, cfg)
    if not full:
        return np.zeros((0, *orig_size), dtype=bool)
    return np.stack(full)
