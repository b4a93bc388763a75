import numpy as np
import pytest

from meanpool.config import PoolConfig
from meanpool.pool import boundaries, mean_pool, mean_pool_whole_masks, partition, pool


def _masks(h, w, *boxes):
    out = np.zeros((len(boxes), h, w), dtype=bool)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        out[i, y0:y1, x0:x1] = True
    return out


def test_smaller_masks_win_and_uncovered_pixels_form_one_segment():
    big, small = (0, 6, 0, 6), (2, 4, 2, 4)
    labels = partition(_masks(8, 8, small, big), (8, 8))  # arrival order must not matter
    assert labels.shape == (8, 8) and labels.dtype == np.int32
    assert len(np.unique(labels)) == 3
    assert len(np.unique(labels[2:4, 2:4])) == 1  # the small mask is whole
    assert labels[2, 2] != labels[0, 0]  # ...and separate from the big one around it
    remainder = np.ones((8, 8), bool)
    remainder[:6, :6] = False
    assert len(np.unique(labels[remainder])) == 1 and labels[7, 7] not in labels[:6, :6]


def test_partition_is_canonical_whatever_the_mask_order():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 10, 12)) > 0.6
    a = partition(masks, (10, 12))
    b = partition(masks[::-1].copy(), (10, 12))
    np.testing.assert_array_equal(a, b)
    first = [int(np.flatnonzero(a.ravel() == k)[0]) for k in range(a.max() + 1)]
    assert first == sorted(first)  # labels numbered by first pixel in raster order


def test_no_masks_make_one_segment():
    labels = partition(np.zeros((0, 5, 7), bool), (5, 7))
    assert np.all(labels == 0)


def test_mean_pool_replaces_pixels_by_segment_means():
    image = np.zeros((2, 4, 3), np.uint8)
    image[:, :2] = [[10, 20, 30], [20, 40, 50]][0]
    image[0, 0] = [0, 0, 0]
    image[:, 2:] = 200
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.int32)
    pooled = mean_pool(image, labels)
    np.testing.assert_array_equal(
        pooled[:, :2], np.broadcast_to(np.rint([7.5, 15, 22.5]), (2, 2, 3))
    )
    assert np.all(pooled[:, 2:] == 200)


def test_whole_mask_variant_uses_means_over_masks_before_overlap():
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2] = 100  # top half bright
    big, small = _masks(4, 4, (0, 4, 0, 4), (0, 2, 0, 2))
    masks = np.stack([big, small])
    whole = mean_pool_whole_masks(image, masks)
    part, _ = pool(image, masks, PoolConfig(merge="partition"))
    assert np.all(whole[2:] == 50)  # big mask's mean over ALL its pixels (incl. the small one)
    big_only = np.ones((4, 4), bool)
    big_only[:2, :2] = False
    assert np.all(part[big_only] == np.rint(100 * 4 / 12))  # partition: mean over what is left
    assert np.all(whole[:2, :2] == 100) and np.all(part[:2, :2] == 100)


def test_pool_checks_shapes():
    with pytest.raises(AssertionError, match="HxWx3 uint8"):
        mean_pool(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.int32))
    with pytest.raises(AssertionError, match="masks must be"):
        partition(np.zeros((1, 3, 3), bool), (4, 4))


def test_boundaries_mark_label_changes():
    labels = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    edge = boundaries(labels)
    assert edge[0, 1] and edge[1, 0] and not edge[0, 0] and not edge[2, 2]
