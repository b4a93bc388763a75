"""Fast path: SAM automatic mask generation re-organised for throughput.

Same algorithm and settings as ``SamAutomaticMaskGenerator`` (so float32 gives the same masks),
but: on GPUs the whole image and all its crops go through the image encoder in ONE batched call
(optionally in bfloat16) and the prompts of ALL crops are decoded together in large batches (on
CPUs, where big batches are slower, one crop per encoder call and SAM's 64 prompts per decoder
call; ``SegmentConfig.encoder_batch_for`` / ``decoder_batch_for``); masks are upscaled only for
prompts with an output above the IoU threshold; the two-way transformer's first layer projects
each crop's image embedding once for all of its prompts (``two_way_crops``); quality filtering,
stability scores, boxes and both NMS passes run on torch tensors on the model's device. Masks
stay as crop-sized boolean tensors until the end (no RLE round trip); only SAM's small-region
clean-up (OpenCV connected components) runs on the CPU, on the few survivors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from segment_anything.modeling.transformer import Attention, TwoWayTransformer
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

# Mask counts recorded by ``generate_fast(..., counts=)``, in pipeline order: point prompts, their
# 3 outputs, then the masks left after each filter.
STAGES = (
    "prompts",
    "masks",
    "pred_iou",
    "stability",
    "crop_edge",
    "box_nms",
    "crop_nms",
    "clean_up",
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@torch.no_grad()
def _encode_crops(
    sam: torch.nn.Module, image: np.ndarray, crop_boxes: list[list[int]], dtype: str, batch: int
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Embed every crop (XYXY boxes) of ``image`` (HWC uint8), ``batch`` crops per encoder call.

    Returns embeddings (n_crops, C, h, w) in float32 and each crop's resized input size (H, W).
    """
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    inputs, input_sizes = [], []
    for x0, y0, x1, y1 in crop_boxes:
        # SamPredictor.set_image's own PIL resize, so inputs match the reference bit for bit.
        resized = transform.apply_image(image[y0:y1, x0:x1])  # h' x w' x 3 uint8
        input_sizes.append(resized.shape[:2])
        pixels = torch.as_tensor(resized, device=sam.device).permute(2, 0, 1).contiguous()
        inputs.append(sam.preprocess(pixels[None])[0])  # 3 x S x S, normalised and padded
    out = []
    for start in range(0, len(inputs), batch):
        x = torch.stack(inputs[start : start + batch])  # n x 3 x S x S
        if dtype == "float32":
            out.append(sam.image_encoder(x))
        else:
            with torch.autocast(device_type=x.device.type, dtype=_DTYPES[dtype]):
                out.append(sam.image_encoder(x).float())
    return torch.cat(out), input_sizes


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """b x t x C -> b x n x t x C/n, as SAM's ``Attention._separate_heads``."""
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _attend(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM's ``Attention.forward`` after its three projections (head-separated q, k, v)."""
    weights = torch.softmax(q @ k.permute(0, 1, 3, 2) / math.sqrt(q.shape[-1]), dim=-1)
    out = weights @ v  # b x n x t x C/n
    b, n, t, d = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, n * d))


@torch.no_grad()
def two_way_crops(
    tr: TwoWayTransformer,
    crop_src: torch.Tensor,
    crop_idx: torch.Tensor,
    pos: torch.Tensor,
    tokens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``tr(crop_src[crop_idx], pos, tokens)`` with the first layer's image-side projections
    computed once per crop instead of once per prompt.

    ``crop_src`` (n_crops, C, h, w): image embeddings plus the dense prompt embedding (the same for
    every point prompt); ``crop_idx`` (b,) the crop of each prompt; ``pos`` (1, C, h, w); ``tokens``
    (b, T, C). Returns (b, T, C) tokens and (b, hw, C) image features. Until the first layer's
    image-to-token attention the image side is the same for every prompt of a crop, so its key and
    value projections (token-to-image) and its query projection (image-to-token), 3 of the
    decoder's 10 projections of the hw x C image side, are shared; the arithmetic is otherwise
    SAM's, row for row (equal outputs on CPU in float32, tests/meanpool).
    """
    first = tr.layers[0]
    used, inv = torch.unique(crop_idx, return_inverse=True)
    keys_c = crop_src[used].flatten(2).permute(0, 2, 1)  # u x hw x C
    key_pe = pos.flatten(2).permute(0, 2, 1)  # 1 x hw x C
    queries = tokens
    if first.skip_first_layer_pe:
        queries = first.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + tokens
        queries = queries + first.self_attn(q=q, k=q, v=queries)
    queries = first.norm1(queries)
    keys_pe = keys_c + key_pe  # u x hw x C, shared by the prompts of each crop
    a = first.cross_attn_token_to_image
    k = _heads(a.k_proj(keys_pe), a.num_heads)[inv]
    v = _heads(a.v_proj(keys_c), a.num_heads)[inv]
    q = _heads(a.q_proj(queries + tokens), a.num_heads)
    queries = first.norm2(queries + _attend(a, q, k, v))
    queries = first.norm3(queries + first.mlp(queries))
    a = first.cross_attn_image_to_token
    q_img = _heads(a.q_proj(keys_pe), a.num_heads)[inv]
    q = queries + tokens
    k, v = _heads(a.k_proj(q), a.num_heads), _heads(a.v_proj(queries), a.num_heads)
    keys = first.norm4(keys_c[inv] + _attend(a, q_img, k, v))  # b x hw x C: now per prompt
    key_pe = key_pe.expand(len(tokens), -1, -1)
    for layer in tr.layers[1:]:
        queries, keys = layer(queries=queries, keys=keys, query_pe=tokens, key_pe=key_pe)
    q, k = queries + tokens, keys + key_pe
    queries = tr.norm_final_attn(queries + tr.final_attn_token_to_image(q=q, k=k, v=keys))
    return queries, keys


def transformer_on_crops(
    tr: torch.nn.Module,
    crop_src: torch.Tensor,
    crop_idx: torch.Tensor,
    pos: torch.Tensor,
    tokens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's transformer on per-crop inputs (see ``two_way_crops``): SAM's
    ``TwoWayTransformer`` shares its first layer's projections; a module with a ``forward_crops``
    method (the realistic-load stand-in) is given the per-crop inputs; any other module gets one
    image embedding per prompt."""
    if isinstance(tr, TwoWayTransformer):
        return two_way_crops(tr, crop_src, crop_idx, pos, tokens)
    if hasattr(tr, "forward_crops"):
        return tr.forward_crops(crop_src, crop_idx, pos, tokens)
    b = len(tokens)
    return tr(crop_src[crop_idx], pos.expand(b, -1, -1, -1), tokens)


@torch.no_grad()
def _decode(
    sam: torch.nn.Module,
    embeddings: torch.Tensor,
    crop_idx: torch.Tensor,
    coords: torch.Tensor,
    iou_thresh: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM's three multimask outputs for single-point prompts on several crops in one call.

    ``embeddings`` (n_crops, C, h, w); ``crop_idx`` (b,) which crop each prompt is on; ``coords``
    (b, 2) XY in the model's input frame. Returns the IoUs (b, 3) of all prompts, the indices
    (k,) of the prompts with an IoU above ``iou_thresh`` (all when it is <= 0) and only their
    low-res logits (k, 3, 4h, 4w): the other prompts' masks would all be filtered out, so they
    are not upscaled.
    """
    labels = torch.ones(len(coords), 1, dtype=torch.int, device=coords.device)
    sparse, dense = sam.prompt_encoder(points=(coords[:, None], labels), boxes=None, masks=None)
    dec = sam.mask_decoder
    # MaskDecoder.predict_masks repeats ONE image embedding for all prompts; here each prompt
    # takes the embedding of its own crop. The arithmetic is otherwise the same.
    b = len(coords)
    out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)  # b x T x C
    crop_src = embeddings + dense[:1]  # n_crops x C x h x w: no mask input, one dense embedding
    pos = sam.prompt_encoder.get_dense_pe()  # 1 x C x h x w
    # b x T x C tokens, b x hw x C image features
    hs, src = transformer_on_crops(dec.transformer, crop_src, crop_idx, pos, tokens)
    iou = dec.iou_prediction_head(hs[:, 0])[:, 1:]  # b x 3, the multimask outputs
    need = torch.arange(b, device=iou.device)
    if iou_thresh > 0.0:
        need = (iou > iou_thresh).any(dim=1).nonzero()[:, 0]
        hs, src = hs[need], src[need]
    k = len(need)
    _, c, h, w = dense.shape
    if k == 0:
        return iou, need, iou.new_zeros((0, 3, 4 * h, 4 * w))
    up = dec.output_upscaling(src.transpose(1, 2).reshape(k, c, h, w))  # k x C/8 x 4h x 4w
    hyper = torch.stack(
        [mlp(hs[:, 1 + i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
    )  # k x M x C/8
    masks = (hyper @ up.flatten(2)).view(k, -1, *up.shape[-2:])  # k x M x 4h x 4w
    return iou, need, masks[:, 1:]


def _count(counts: dict[str, int] | None, stage: str, n: int) -> None:
    if counts is not None:
        counts[stage] = counts.get(stage, 0) + n


def _filter(
    sam: torch.nn.Module,
    low_res: torch.Tensor,
    iou: torch.Tensor,
    input_size: tuple[int, int],
    crop_box: list[int],
    orig_size: tuple[int, int],
    cfg: SegmentConfig,
    counts: dict[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upscale one crop's logits (b, 3, 4h, 4w) and keep masks that pass the quality filters.

    Returns crop-sized bool masks (n, h_c, w_c), IoUs (n,) and crop-frame XYXY boxes (n, 4),
    in prompt-major order as SamAutomaticMaskGenerator has them.
    """
    x0, y0, x1, y1 = crop_box
    iou = iou.flatten(0, 1)  # 3b
    low_res = low_res.flatten(0, 1)[:, None]  # 3b x 1 x 4h x 4w
    if cfg.pred_iou_thresh > 0.0:
        # Upscaling is per mask, so filtering by predicted IoU first saves work, not results.
        keep = iou > cfg.pred_iou_thresh
        iou, low_res = iou[keep], low_res[keep]
    _count(counts, "pred_iou", len(iou))
    logits = sam.postprocess_masks(low_res, input_size, (y1 - y0, x1 - x0))[:, 0]  # n x hc x wc
    if cfg.stability_score_thresh > 0.0:
        offset = cfg.stability_score_offset
        stability = calculate_stability_score(logits, sam.mask_threshold, offset)
        keep = stability >= cfg.stability_score_thresh
        iou, logits = iou[keep], logits[keep]
    _count(counts, "stability", len(iou))
    masks = logits > sam.mask_threshold  # n x hc x wc
    boxes = batched_mask_to_box(masks)  # crop-frame XYXY
    near_edge = is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_size[1], orig_size[0]])
    _count(counts, "crop_edge", int((~near_edge).sum()))
    return masks[~near_edge], iou[~near_edge], boxes[~near_edge]


def _uncrop(
    masks: list[torch.Tensor],
    crops: list[int],
    crop_boxes: list[list[int]],
    orig_size: tuple[int, int],
) -> np.ndarray:
    """Crop-sized bool masks (``crops[i]`` is mask i's crop) placed into all-False (N, H, W)
    numpy masks, with one device-to-host copy per crop rather than per mask."""
    full = np.zeros((len(masks), *orig_size), dtype=bool)
    for c in sorted(set(crops)):
        idx = [i for i, ci in enumerate(crops) if ci == c]
        x0, y0, x1, y1 = crop_boxes[c]
        full[idx, y0:y1, x0:x1] = torch.stack([masks[i] for i in idx]).cpu().numpy()
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
def generate_fast(
    sam: torch.nn.Module,
    image: np.ndarray,
    cfg: SegmentConfig,
    counts: dict[str, int] | None = None,
) -> np.ndarray:
    """SAM masks for ``image`` (HWC uint8 RGB), batched; returns bool masks (N, H, W), N >= 0.

    With ``counts``, adds how many masks there are at each stage (``STAGES``) to it.
    """
    orig_size = image.shape[:2]
    crop_boxes, layers = generate_crop_boxes(orig_size, cfg.crop_n_layers, cfg.crop_overlap_ratio)
    grids = build_all_layer_point_grids(
        cfg.points_per_side, cfg.crop_n_layers, cfg.crop_n_points_downscale_factor
    )
    device_type = sam.device.type
    embeddings, input_sizes = _encode_crops(
        sam, image, crop_boxes, cfg.encoder_dtype, cfg.encoder_batch_for(device_type)
    )

    # Every prompt of every crop, crop-major as the reference visits them.
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    coords, crop_of_prompt = [], []
    for c, ((x0, y0, x1, y1), layer) in enumerate(zip(crop_boxes, layers, strict=True)):
        points = grids[layer] * np.array([[x1 - x0, y1 - y0]])  # P x 2, XY in the crop frame
        coords.append(transform.apply_coords(points, (y1 - y0, x1 - x0)))  # model input frame
        crop_of_prompt.append(np.full(len(points), c))
    coords_t = torch.as_tensor(np.concatenate(coords), device=sam.device)  # float64 as in SAM
    crop_t = torch.as_tensor(np.concatenate(crop_of_prompt), device=sam.device)
    _count(counts, "prompts", len(coords_t))
    _count(counts, "masks", 3 * len(coords_t))

    found: list[list[tuple[torch.Tensor, ...]]] = [[] for _ in crop_boxes]
    step = cfg.decoder_batch_for(device_type)
    for start in range(0, len(coords_t), step):  # chunks may span crops
        chunk = slice(start, start + step)
        iou, need, low_res = _decode(
            sam, embeddings, crop_t[chunk], coords_t[chunk], cfg.pred_iou_thresh
        )
        crop_of_need = crop_t[chunk][need]
        for c in torch.unique(crop_of_need).tolist():
            sel = crop_of_need == c
            found[c].append(
                _filter(
                    sam,
                    low_res[sel],
                    iou[need][sel],
                    input_sizes[c],
                    crop_boxes[c],
                    orig_size,
                    cfg,
                    counts,
                )
            )
    if not any(found):
        for stage in STAGES[2:]:
            _count(counts, stage, 0)
        return np.zeros((0, *orig_size), dtype=bool)

    # Per-crop NMS for all crops in one call (crop index as the category), then back to
    # crop-major order with each crop's masks by descending IoU: the reference's order.
    masks: list[torch.Tensor] = []
    ious, crop_boxes_xyxy, crop_of = [], [], []
    for c, parts in enumerate(found):
        for m, i, b in parts:
            masks.extend(m)
            ious.append(i)
            crop_boxes_xyxy.append(b)
            crop_of.extend([c] * len(m))
    crop_of_t = torch.as_tensor(crop_of, dtype=torch.long, device=sam.device)
    local_boxes = torch.cat(crop_boxes_xyxy).float()
    keep = batched_nms(local_boxes, torch.cat(ious), crop_of_t, iou_threshold=cfg.box_nms_thresh)
    keep = keep[torch.sort(crop_of_t[keep], stable=True).indices]
    offsets = torch.as_tensor(
        [[b[0], b[1], b[0], b[1]] for b in crop_boxes], dtype=torch.float, device=sam.device
    )
    boxes = local_boxes[keep] + offsets[crop_of_t[keep]]  # image-frame XYXY
    masks = [masks[i] for i in keep.tolist()]
    crop_of = crop_of_t[keep].tolist()
    _count(counts, "box_nms", len(masks))

    order = list(range(len(masks)))
    if len(crop_boxes) > 1 and masks:
        # Duplicates across crops: prefer masks from smaller crops (score 1 / crop area).
        crops = torch.as_tensor([crop_boxes[c] for c in crop_of], device=boxes.device)
        keep = batched_nms(
            boxes,
            1 / box_area(crops),
            torch.zeros(len(crop_of), device=boxes.device),
            iou_threshold=cfg.crop_nms_thresh,
        )
        order = keep.tolist()
    _count(counts, "crop_nms", len(order))
    full = list(
        _uncrop([masks[i] for i in order], [crop_of[i] for i in order], crop_boxes, orig_size)
    )
    if cfg.min_mask_region_area > 0:
        full = _remove_small_regions(full, cfg)
    _count(counts, "clean_up", len(full))
    if not full:
        return np.zeros((0, *orig_size), dtype=bool)
    return np.stack(full)
