import numpy as np
import pytest
import torch

from meanpool.config import SegmentConfig
from meanpool.pool import partition
from meanpool.segment import generate_masks, mean_pool_image

from .conftest import MASKY, synthetic_image


def _both(sam, image, **settings):
    ref = generate_masks(sam, image, SegmentConfig(backend="reference", **settings))
    fast = generate_masks(sam, image, SegmentConfig(backend="fast", **settings))
    return ref, fast


@pytest.mark.parametrize(
    "shape, settings",
    [
        ((96, 128), MASKY),  # crops + small-region clean-up (default min area 100)
        ((128, 96), {**MASKY, "min_mask_region_area": 0}),  # no clean-up
        ((80, 80), {**MASKY, "crop_n_layers": 0, "points_per_batch": 7}),  # whole image only
        ((112, 144), {**MASKY, "pred_iou_thresh": 0.5}),  # quality filter active
        ((100, 120), {**MASKY, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7}),
    ],
)
def test_fast_path_gives_the_reference_partition(tiny_sam, shape, settings):
    # Same float32 computations in the same order -> the same masks, bit for bit. Only the
    # batching differs (one encoder call for all crops, decoder calls spanning crops), which
    # does not change per-sample results on CPU.
    image = synthetic_image(*shape, seed=sum(shape))
    ref, fast = _both(tiny_sam, image, **settings)
    assert ref.shape == fast.shape and len(ref) >= 1
    assert np.array_equal(ref, fast)
    np.testing.assert_array_equal(partition(ref, shape), partition(fast, shape))


def test_fast_path_batches_across_crops_with_the_same_result(tiny_sam):
    # One decoder call for all 16x16 + 4x8x8 prompts of all 5 crops vs SAM's 64 per call per crop.
    image = synthetic_image(120, 100, seed=5)
    ref = generate_masks(tiny_sam, image, SegmentConfig(backend="reference", **MASKY))
    fast = generate_masks(tiny_sam, image, SegmentConfig(points_per_batch=512, **MASKY))
    assert len(ref) >= 2 and np.array_equal(ref, fast)


def test_several_masks_make_several_segments(tiny_sam):
    image = synthetic_image(96, 128, seed=224)
    masks = generate_masks(tiny_sam, image, SegmentConfig(**MASKY))
    assert len(masks) >= 3
    assert partition(masks, image.shape[:2]).max() + 1 >= 3


def test_zero_masks_do_not_crash_and_give_one_segment(tiny_sam):
    # An unreachable quality threshold leaves no mask, with crops. SAM's own generator raises
    # IndexError then; both our paths return no masks and the image becomes one segment.
    from segment_anything import SamAutomaticMaskGenerator

    image = synthetic_image(64, 64, seed=1)
    never = dict(points_per_side=4, pred_iou_thresh=1e9)
    with pytest.raises(IndexError):
        SamAutomaticMaskGenerator(tiny_sam, crop_n_layers=1, **never).generate(image)
    for backend in ("reference", "fast"):
        masks = generate_masks(tiny_sam, image, SegmentConfig(backend=backend, **never))
        assert masks.shape == (0, 64, 64)
    pooled, labels = mean_pool_image(tiny_sam, image, SegmentConfig(**never))
    assert labels.max() == 0
    assert np.all(pooled == np.rint(image.reshape(-1, 3).mean(0)).astype(np.uint8))


def test_default_thresholds_reject_random_weights():
    # Why tests set thresholds to 0: at default init no mask passes IoU 0.88 / stability 0.95.
    from meanpool.model import build_tiny_sam

    torch.manual_seed(0)
    masks = generate_masks(
        build_tiny_sam(), synthetic_image(64, 64), SegmentConfig(points_per_side=4)
    )
    assert masks.shape == (0, 64, 64)


def test_bfloat16_encoder_runs_and_gives_valid_masks(tiny_sam):
    image = synthetic_image(64, 80, seed=3)
    masks = generate_masks(tiny_sam, image, SegmentConfig(encoder_dtype="bfloat16", **MASKY))
    assert masks.dtype == bool and masks.shape[1:] == (64, 80)


def test_rejects_non_rgb_uint8(tiny_sam):
    with pytest.raises(AssertionError, match="HxWx3 uint8"):
        generate_masks(tiny_sam, np.zeros((8, 8), np.uint8), SegmentConfig())
    with pytest.raises(AssertionError, match="HxWx3 uint8"):
        generate_masks(tiny_sam, torch.zeros(8, 8, 3).numpy(), SegmentConfig())


def test_batch_sizes_follow_the_device_and_do_not_change_masks(tiny_sam):
    cfg = SegmentConfig()
    assert cfg.decoder_batch_for("cpu") == 64 and cfg.decoder_batch_for("cuda") == 256
    assert SegmentConfig(backend="reference").decoder_batch_for("cuda") == 64
    assert cfg.encoder_batch_for("cpu") == 1 and cfg.encoder_batch_for("cuda") >= 5
    assert SegmentConfig(encoder_batch=2, points_per_batch=9).encoder_batch_for("cuda") == 2
    assert SegmentConfig(points_per_batch=9).decoder_batch_for("cpu") == 9
    image = synthetic_image(96, 128, seed=224)
    one = generate_masks(tiny_sam, image, SegmentConfig(**MASKY))
    batched = SegmentConfig(encoder_batch=5, points_per_batch=256, **MASKY)
    assert len(one) >= 3 and np.array_equal(one, generate_masks(tiny_sam, image, batched))
    with pytest.raises(AssertionError, match="encoder_batch"):
        SegmentConfig(encoder_batch=0)


@pytest.mark.parametrize("skip_first_layer_pe", [True, False])
def test_two_way_crops_equals_the_transformer_run_per_prompt(skip_first_layer_pe):
    """The fast path's decoder transformer (first-layer projections shared per crop) computes
    what SAM's TwoWayTransformer computes on one repeated image embedding per prompt."""
    from segment_anything.modeling.transformer import TwoWayTransformer

    from meanpool.fast import two_way_crops

    torch.manual_seed(0)
    tr = TwoWayTransformer(depth=2, embedding_dim=64, num_heads=8, mlp_dim=128).eval()
    tr.layers[0].skip_first_layer_pe = skip_first_layer_pe
    crop_src, pos = torch.randn(4, 64, 8, 8), torch.randn(1, 64, 8, 8)
    crop_idx = torch.tensor([3, 3, 1, 1, 1, 3, 0])  # crop 2 unused, prompts out of crop order
    tokens = torch.randn(len(crop_idx), 6, 64)
    with torch.no_grad():
        want = tr(crop_src[crop_idx], pos.expand(len(crop_idx), -1, -1, -1), tokens)
        got = two_way_crops(tr, crop_src, crop_idx, pos, tokens)
    for w, g in zip(want, got, strict=True):
        assert w.shape == g.shape
        assert torch.equal(w, g), (w - g).abs().max()  # row for row the same arithmetic
