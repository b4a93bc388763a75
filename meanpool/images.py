"""Reading input images robustly: convert what can be converted, skip the rest with a reason."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from .config import ImageConfig


class ImageSkip(Exception):
    """An input image that cannot be used; ``str(exn)`` is the reason recorded in failures.jsonl."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparent pixels are composited onto white (as viewers show them)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale (some PNGs): scale to 8 bits rather than clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size and arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, P, CMYK, YCbCr, 1, RGB


def load_rgb(path: str | Path, cfg: ImageConfig | None = None) -> np.ndarray:
    """Read ``path`` as HWC uint8 RGB, downscaled so the longer side is at most ``cfg.max_side``.

    Raises ``ImageSkip`` for empty, truncated or non-image files and for images whose shorter side
    is under ``cfg.min_side`` px.
    """
    cfg = cfg or ImageConfig()
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageSkip("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decodes now: a truncated file raises OSError here
                rgb = _to_rgb(img)
    except ImageSkip:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exn:
        raise ImageSkip(f"too many pixels: {exn}") from None
    except Exception as exn:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError)
        raise ImageSkip(f"unreadable image ({type(exn).__name__}: {str(exn)[:200]})") from None
    w, h = rgb.size
    if min(w, h) < cfg.min_side:
        raise ImageSkip(f"too small ({w}x{h} px; min_side is {cfg.min_side})")
    if max(w, h) > cfg.max_side:
        scale = cfg.max_side / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8).copy()
