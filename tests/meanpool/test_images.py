import numpy as np
import pytest
from PIL import Image

from meanpool.config import ImageConfig
from meanpool.images import ImageSkip, load_rgb

from .conftest import synthetic_image


def _save(path, img, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize(
    "mode, fmt",
    [("CMYK", "JPEG"), ("L", "JPEG"), ("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"),
     ("1", "PNG"), ("I;16", "PNG"), ("RGB", "BMP")],
)  # fmt: skip
def test_odd_modes_become_rgb_uint8(tmp_path, mode, fmt):
    rgb = Image.fromarray(synthetic_image(40, 50))
    img = (
        rgb.convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    )
    out = load_rgb(_save(tmp_path / f"x.{fmt.lower()}", img, format=fmt))
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    if mode == "I;16":
        assert out.max() > 200  # scaled to 8 bits, not clipped


def test_transparent_pixels_become_white(tmp_path):
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    out = load_rgb(_save(tmp_path / "a.png", img))
    assert np.all(out == 255)
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert np.all(load_rgb(_save(tmp_path / "p.png", pal, transparency=0)) == 255)


def test_large_images_are_downscaled(tmp_path):
    path = _save(tmp_path / "big.jpg", Image.fromarray(synthetic_image(300, 600)))
    out = load_rgb(path, ImageConfig(max_side=150))
    assert out.shape == (75, 150, 3)


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "tiny"])
def test_unusable_inputs_are_skipped_with_a_reason(tmp_path, kind):
    path = tmp_path / "x.JPEG"
    if kind == "empty":
        path.write_bytes(b"")
        reason = "empty file"
    elif kind == "text":
        path.write_text("not an image at all")
        reason = "unreadable image"
    elif kind == "truncated":
        _save(path, Image.fromarray(synthetic_image(64, 64)), format="JPEG")
        path.write_bytes(path.read_bytes()[:300])
        reason = "unreadable image"
    else:
        _save(path, Image.fromarray(synthetic_image(8, 64)), format="JPEG")
        reason = "too small"
    with pytest.raises(ImageSkip, match=reason):
        load_rgb(path)
