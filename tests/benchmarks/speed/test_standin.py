import numpy as np
import pytest
import torch

from benchmarks.speed.standin import known_segmentation, realistic_image, realistic_sam
from meanpool.config import SegmentConfig
from meanpool.fast import STAGES, generate_fast
from meanpool.model import build_tiny_sam
from meanpool.pool import partition
from meanpool.segment import generate_masks


@pytest.fixture(scope="module")
def real64():
    """Realistic load around the 64 px tiny SAM (16x16 mask resolution)."""
    return realistic_sam(build_tiny_sam(seed=0))


@pytest.fixture(scope="module")
def real256():
    """Realistic load around a 256 px tiny SAM: 64x64 mask resolution, closer to real SAM's."""
    return realistic_sam(build_tiny_sam(seed=0, img_size=256))


@pytest.mark.parametrize(
    "model, shape, seed, batch",
    [
        ("real256", (150, 200), 2, None),
        ("real256", (150, 200), 3, 100),
        ("real64", (96, 128), 2, 7),
    ],
)
def test_realistic_load_fast_and_reference_give_identical_partitions(
    request, model, shape, seed, batch
):
    # The paper's thresholds (0.88 / 0.95), NMS and clean-up, with a few dozen masks surviving:
    # a much stronger equality test than random weights' single mask per image.
    sam = request.getfixturevalue(model)
    image = realistic_image(*shape, seed=seed)
    ref = generate_masks(sam, image, SegmentConfig(backend="reference"))
    fast = generate_masks(sam, image, SegmentConfig(backend="fast", points_per_batch=batch))
    assert len(ref) >= 15 if seed == 2 else len(ref) >= 10
    assert ref.shape == fast.shape and np.array_equal(ref, fast)
    np.testing.assert_array_equal(partition(ref, shape), partition(fast, shape))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_counts_after_each_filter_are_in_the_expected_range(real256, seed):
    counts: dict[str, int] = {}
    masks = generate_fast(real256, realistic_image(375, 500, seed=seed), SegmentConfig(), counts)
    assert list(counts) == list(STAGES)
    assert counts["prompts"] == 16 * 16 + 4 * 8 * 8 and counts["masks"] == 3 * counts["prompts"]
    n = [counts[s] for s in STAGES[1:]]
    assert all(a >= b for a, b in zip(n, n[1:], strict=False)), counts
    # Each quality filter and the in-crop NMS remove a real share, as with real weights.
    assert 0.15 * counts["masks"] < counts["pred_iou"] < 0.6 * counts["masks"]
    assert counts["stability"] < 0.7 * counts["pred_iou"]
    assert counts["crop_edge"] < counts["stability"] and counts["box_nms"] < counts["crop_edge"]
    assert 8 <= counts["clean_up"] <= 80 and counts["clean_up"] == len(masks)


def test_realistic_load_exercises_the_small_region_clean_up(real256):
    image = realistic_image(150, 200, seed=2)
    kept = generate_masks(real256, image, SegmentConfig(min_mask_region_area=0))
    cleaned = generate_masks(real256, image, SegmentConfig())
    assert kept.shape == cleaned.shape and not np.array_equal(kept, cleaned)


def test_realistic_masks_do_not_depend_on_encoder_dtype_or_batching(real64):
    # The stand-in's masks are a function of the input pixels only.
    image = realistic_image(96, 128, seed=2)
    base = generate_masks(real64, image, SegmentConfig())
    assert len(base) >= 15
    for cfg in (
        SegmentConfig(encoder_dtype="bfloat16"),
        SegmentConfig(encoder_batch=5, points_per_batch=512),
    ):
        assert np.array_equal(base, generate_masks(real64, image, cfg))


def test_standin_runs_the_real_modules_and_leaves_the_model_alone():
    sam = build_tiny_sam(seed=0)
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    wrapped = realistic_sam(sam)
    called = set()
    real = (
        "image_encoder",
        "mask_decoder.transformer.layers.0.cross_attn_token_to_image.k_proj",  # fast: per crop
        "mask_decoder.transformer.layers.0.mlp",
        "mask_decoder.transformer.final_attn_token_to_image",
        "mask_decoder.output_upscaling",
    )
    hooks = [
        m.register_forward_hook(lambda mod, a, o, name=name: called.add(name))
        for name, m in sam.named_modules()
        if name in real
    ]
    for backend in ("fast", "reference"):
        called.clear()
        image = realistic_image(64, 64, seed=0)
        generate_masks(wrapped, image, SegmentConfig(points_per_side=4, backend=backend))
        assert called == set(real), backend
    for h in hooks:
        h.remove()
    assert sam.mask_decoder.transformer is not wrapped.mask_decoder.transformer
    assert all(torch.equal(v, sam.state_dict()[k]) for k, v in before.items())


def test_realistic_image_has_a_known_segmentation_with_specks():
    image = realistic_image(120, 160, seed=3)
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    classes = known_segmentation(image)
    assert classes.min() >= 0 and classes.max() < 64 and len(np.unique(classes)) >= 8
    # Noise never moves a pixel out of its colour bin: every channel stays within 10 of a centre.
    assert np.all(np.abs(image.astype(int) % 64 - 32) <= 10)
    assert np.array_equal(image, realistic_image(120, 160, seed=3))
