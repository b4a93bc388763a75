import pytest

from meanpool.config import BuildConfig, IndexConfig, SegmentConfig, to_dict
from subind.provenance import digest


def test_defaults_are_the_papers_settings():
    cfg = SegmentConfig()
    assert (cfg.points_per_side, cfg.crop_n_layers, cfg.crop_n_points_downscale_factor) == (
        16,
        1,
        2,
    )
    assert (cfg.pred_iou_thresh, cfg.stability_score_thresh, cfg.min_mask_region_area) == (
        0.88,
        0.95,
        100,
    )
    idx = IndexConfig()
    assert 16 * idx.discovery_per_class == 13_904 and 16 * idx.evaluation_per_class == 1_536


def test_digest_is_stable_and_sensitive():
    a = to_dict(SegmentConfig())
    assert digest(a) == digest(to_dict(SegmentConfig()))
    assert digest(a) != digest(to_dict(SegmentConfig(points_per_side=32)))


def test_bad_values_are_refused():
    with pytest.raises(AssertionError, match="backend"):
        SegmentConfig(backend="gpu")
    with pytest.raises(AssertionError, match="subset"):
        BuildConfig(imagenet_dir="a", out="b", model_type="vit_h", checkpoint="c", subset="test")
