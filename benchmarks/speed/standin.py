"""Realistic-load SAM for benchmarks and tests: real compute, masks of a known segmentation.

SAM with random weights keeps about one mask per image, so filtering, both NMS passes and the
small-region clean-up are barely exercised, while real weights keep a few dozen. ``realistic_sam``
wraps any SAM (any size, any weights) so that it still runs its real image encoder, prompt encoder
and mask decoder (same cost), but what the decoder returns is replaced, per point prompt, by masks
of a known segmentation of the image: the colour classes of its pixels (each RGB channel in 4
bins of 64, so 64 classes; ``known_segmentation``). For the point's class the 3 multimask
outputs are

* a "part": the class within a window around the point (neighbouring points give near-duplicates),
* the "object": every pixel of the class (specks of the same colour elsewhere are small islands),
* a "whole": the classes that share the point's red and green bins,

with predicted IoUs and logit sharpness (hence stability scores) drawn per (class, output) from an
integer hash, so some pass the paper's 0.88 / 0.95 thresholds and some do not.
``realistic_image`` draws images made for it: flat shapes in the bins' centre colours, specks and
a little noise; on ``realistic_image`` at 375x500 a few dozen masks per image survive.

How the information travels: the encoder overwrites the first 16 channels of its output with the
class map at the decoder's mask resolution (4h x 4w, pixel-unshuffled into 16 x h x w); the prompt
encoder writes the raw point into its point token; the decoder's transformer reads both (every
path adds one constant vector to the embedding, which is subtracted again) and passes class map,
class and point on in its outputs; the upscaling layer, hypernetwork MLPs and IoU head turn them
into mask logits (one logit map per output, selected by one-hot hypernetwork outputs, so the
decoder's final matmul returns them exactly) and IoUs. Everything is integer arithmetic or exact
float steps, so SamAutomaticMaskGenerator and the fast path see the same numbers, whatever their
batching, device or encoder dtype.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from meanpool.fast import transformer_on_crops

_UNSHUFFLE = 4  # mask resolution / embedding resolution in SAM's decoder
_CH = _UNSHUFFLE * _UNSHUFFLE  # embedding channels that carry the class map
_BIN = 64  # colour bin width: 4 bins per channel
_AMPLITUDES = (1.5, 3.0, 6.0, 12.0)  # mask logit magnitudes: blunter edges, lower stability
# Predicted IoU per multimask output: low + span * u, u uniform per (class, output) in [0, 1).
# About 30% of parts, 60% of objects and 25% of wholes pass 0.88 (real SAM keeps a similar mix).
_IOU_LOW = (0.5, 0.70, 0.80, 0.65)
_IOU_SPAN = (0.0, 0.25, 0.20, 0.30)
_IOU_JITTER = 0.01  # per point, so duplicates of one mask have distinct scores (no NMS ties)


def known_segmentation(image: np.ndarray) -> np.ndarray:
    """Colour class (0..63) of every pixel of ``image`` (HWC uint8 RGB): 4 bins per channel."""
    q = image.astype(np.int64) // _BIN
    return q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]


def realistic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """HWC uint8 RGB image of flat shapes for ``realistic_sam``: two background areas, about 20
    discs and rectangles (some nested), a dozen specks of 3-7 px and noise of +-10 that keeps every
    pixel in its colour bin. Shape sizes scale with the image."""
    rng = np.random.default_rng(seed)
    centres = np.arange(_BIN // 2, 256, _BIN)  # 32, 96, 160, 224

    def colour() -> np.ndarray:
        return rng.choice(centres, 3)

    yy, xx = np.mgrid[:h, :w]
    img = np.empty((h, w, 3), dtype=np.int64)
    img[:] = colour()
    img[yy > rng.integers(h // 3, 2 * h // 3) + (xx - w // 2) // 4] = colour()  # a "horizon"
    side = min(h, w)
    for _ in range(20):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = rng.integers(max(2, side // 20), max(3, side // 5))
        if rng.random() < 0.5:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            inside = (abs(yy - cy) < r) & (abs(xx - cx) < r * rng.uniform(0.4, 1.6))
        img[inside] = colour()
        if rng.random() < 0.3:  # a part inside the shape
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < (r // 3) ** 2] = colour()
    for _ in range(12):  # specks: islands of another region's colour, or holes
        s, cy, cx = rng.integers(3, 8), rng.integers(0, h), rng.integers(0, w)
        img[cy : cy + s, cx : cx + s] = colour()
    img += rng.integers(-10, 11, img.shape)
    return img.astype(np.uint8)


def realistic_sam(sam: nn.Module) -> nn.Module:
    """A new SAM that shares ``sam``'s modules and weights (``sam`` itself is unchanged), runs all
    of their computation, and returns the masks described in the module docstring."""
    from segment_anything.modeling import MaskDecoder, Sam

    dec = sam.mask_decoder
    assert dec.num_mask_tokens == 4 and dec.transformer_dim // 8 >= 4, "needs SAM's 4 mask tokens"
    no_mask = sam.prompt_encoder.no_mask_embed.weight  # 1 x C: the dense embedding of no mask
    n_out = 1 + dec.num_mask_tokens  # output tokens ahead of the prompt tokens
    low_res = 4 * sam.prompt_encoder.image_embedding_size[0]
    new_dec = MaskDecoder(transformer_dim=dec.transformer_dim, transformer=dec.transformer)
    new_dec.transformer = _Transformer(dec.transformer, no_mask, n_out, sam.image_encoder.img_size)
    new_dec.iou_token, new_dec.mask_tokens = dec.iou_token, dec.mask_tokens
    new_dec.output_upscaling = _Upscaling(dec.output_upscaling, window=max(1, low_res // 16))
    new_dec.output_hypernetworks_mlps = nn.ModuleList(
        _OneHot(mlp, i) for i, mlp in enumerate(dec.output_hypernetworks_mlps)
    )
    new_dec.iou_prediction_head = _IoU(dec.iou_prediction_head)
    out = Sam(
        image_encoder=_Encoder(sam.image_encoder, sam.pixel_mean, sam.pixel_std),
        prompt_encoder=_Prompt(sam.prompt_encoder),
        mask_decoder=new_dec,
        pixel_mean=sam.pixel_mean.flatten().tolist(),
        pixel_std=sam.pixel_std.flatten().tolist(),
    )
    return out.to(sam.device).eval()


def _hash(*xs: torch.Tensor) -> torch.Tensor:
    """Integer hash of int64 tensors (broadcast), in [0, 2^31); exact on every device."""
    h = torch.full_like(torch.broadcast_tensors(*xs)[0], 0x2545F491)
    for x in xs:
        h = ((h ^ x) * 0x45D9F3B) % (1 << 31)
        h = h ^ (h >> 15)
    return h


def _uniform(*xs: torch.Tensor) -> torch.Tensor:
    """float64 in [0, 1) from ``_hash``."""
    return _hash(*xs).double() / (1 << 31)


class _Encoder(nn.Module):
    """The real image encoder, with the class map written into its first 16 output channels."""

    def __init__(self, inner: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.img_size = inner, inner.img_size
        self.register_buffer("mean", mean.detach().clone(), persistent=False)
        self.register_buffer("std", std.detach().clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x 3 x S x S normalised, padded
        feats = self.inner(x)  # B x C x h x w
        h, w = feats.shape[-2:]
        pixels = x.float() * self.std + self.mean  # padding becomes the mean colour
        pixels = F.avg_pool2d(pixels, x.shape[-1] // (_UNSHUFFLE * w))  # B x 3 x 4h x 4w
        q = torch.floor(pixels / _BIN).clamp(0, 3)
        classes = q[:, 0:1] * 16 + q[:, 1:2] * 4 + q[:, 2:3]  # B x 1 x 4h x 4w, exact integers
        carried = F.pixel_unshuffle(classes, _UNSHUFFLE).to(feats.dtype)  # B x 16 x h x w
        return torch.cat([carried, feats[:, _CH:]], dim=1)


class _Prompt(nn.Module):
    """The real prompt encoder, with the raw point (input frame XY) in its point token."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def get_dense_pe(self) -> torch.Tensor:
        return self.inner.get_dense_pe()

    def forward(self, points, boxes, masks) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, dense = self.inner(points=points, boxes=boxes, masks=masks)  # b x T x C
        assert points is not None and boxes is None and masks is None, "single point prompts only"
        sparse = sparse.clone()
        sparse[:, 0, :2] = points[0][:, 0].to(sparse.dtype)
        return sparse, dense


class _Transformer(nn.Module):
    """Runs the real two-way transformer, then returns the class map (image side) and the point's
    class and position (output tokens) instead of its results."""

    def __init__(self, inner: nn.Module, no_mask: torch.Tensor, n_out: int, img_size: int) -> None:
        super().__init__()
        self.inner, self.no_mask, self.n_out, self.img_size = inner, no_mask, n_out, img_size

    def forward(self, image_embedding, image_pe, point_embedding):
        hs, src = self.inner(image_embedding, image_pe, point_embedding)  # b x T x C, b x hw x C
        return self._replace(hs, src, image_embedding[:, :_CH], point_embedding)

    def forward_crops(self, crop_src, crop_idx, pos, tokens):
        """The fast path's per-crop call (``meanpool.fast.two_way_crops``), same outputs."""

        hs, src = transformer_on_crops(self.inner, crop_src, crop_idx, pos, tokens)
        return self._replace(hs, src, crop_src[crop_idx, :_CH], tokens)

    def _replace(self, hs, src, carried_embedding, point_embedding):
        """hs (b, T, C) and src (b, hw, C) with the class map, the point's class and position."""
        b, _, h, w = carried_embedding.shape
        c = src.shape[-1]
        carried = carried_embedding - self.no_mask[0, :_CH, None, None]
        classes = F.pixel_shuffle(carried.round(), _UNSHUFFLE)[:, 0].long()  # b x 4h x 4w
        xy = point_embedding[:, self.n_out, :2].double() * (_UNSHUFFLE * w / self.img_size)
        px = xy[:, 0].floor().long().clamp(0, _UNSHUFFLE * w - 1)
        py = xy[:, 1].floor().long().clamp(0, _UNSHUFFLE * h - 1)
        cls = classes[torch.arange(b, device=classes.device), py, px]
        info = torch.stack([cls, px, py], dim=1).to(src.dtype)  # b x 3
        src = torch.zeros_like(src).view(b, h, w, c)
        src[..., :_CH] = carried.round().permute(0, 2, 3, 1)
        src[..., _CH : _CH + 3] = info[:, None, None]
        hs = torch.zeros_like(hs)
        hs[:, 0, :3] = info
        return hs, src.view(b, h * w, c)


def _info(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(class, px, py) as int64 from the 3 float columns written by ``_Transformer``."""
    return x[:, 0].long(), x[:, 1].long(), x[:, 2].long()


class _Upscaling(nn.Module):
    """Runs the real upscaling, then returns the 4 outputs' mask logits in channels 0..3."""

    def __init__(self, inner: nn.Module, window: int) -> None:
        super().__init__()
        self.inner, self.window = inner, window

    def forward(self, src: torch.Tensor) -> torch.Tensor:  # b x C x h x w
        up = self.inner(src)  # b x C/8 x 4h x 4w
        classes = F.pixel_shuffle(src[:, :_CH], _UNSHUFFLE)[:, 0].long()  # b x 4h x 4w
        cls, px, py = _info(src[:, _CH : _CH + 3, 0, 0])
        h4, w4 = classes.shape[-2:]
        yy = torch.arange(h4, device=src.device)[None, :, None]
        xx = torch.arange(w4, device=src.device)[None, None, :]
        obj = classes == cls[:, None, None]
        near = ((yy - py[:, None, None]).abs() <= self.window) & (
            (xx - px[:, None, None]).abs() <= self.window
        )
        whole = classes // 4 == (cls // 4)[:, None, None]
        out = torch.zeros_like(up)
        for level, mask in enumerate((obj, obj & near, obj, whole)):
            pick = _hash(cls, torch.full_like(cls, level), torch.full_like(cls, 7)) % 4
            amp = torch.tensor(_AMPLITUDES, device=src.device, dtype=up.dtype)[pick]
            out[:, level] = torch.where(mask, amp[:, None, None], -amp[:, None, None])
        return out


class _OneHot(nn.Module):
    """Runs the real hypernetwork MLP of mask token ``index``, returns the one-hot selector of
    channel ``index``, so the decoder's product with ``_Upscaling``'s output is that logit map."""

    def __init__(self, inner: nn.Module, index: int) -> None:
        super().__init__()
        self.inner, self.index = inner, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(self.inner(x))
        out[:, self.index] = 1.0
        return out


class _IoU(nn.Module):
    """Runs the real IoU head, returns the predicted IoUs of the 4 outputs for the point's class."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # b x C: the IoU token
        out = self.inner(x)  # b x 4
        cls, px, py = _info(x[:, :3])
        levels = torch.arange(out.shape[1], device=x.device)[None]
        low = torch.tensor(_IOU_LOW, dtype=torch.float64, device=x.device)
        span = torch.tensor(_IOU_SPAN, dtype=torch.float64, device=x.device)
        iou = low + span * _uniform(cls[:, None], levels)
        iou = iou + _IOU_JITTER * _uniform(cls[:, None], levels, px[:, None], py[:, None])
        return iou.to(out.dtype)
