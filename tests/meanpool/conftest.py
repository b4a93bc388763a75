"""Shared fixtures: a tiny random-weight SAM checkpoint, generated images and ImageNet trees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from meanpool.model import build_tiny_sam, load_sam

# Random weights pass none of SAM's default quality thresholds, so tests that need masks set them
# to 0. A coarse grid keeps builds fast; NMS at 0.95 keeps several overlapping masks.
MASKY = dict(
    pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.95, crop_nms_thresh=0.95
)
FAST_CLI = [
    "--model-type", "tiny_test", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
    "--points-per-side", "8", "--min-mask-region-area", "20", "--no-progress",
]  # fmt: skip


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """HWC uint8 RGB: a gradient with a few flat shapes and noise (texture to be pooled away)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack(
        [(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), np.full_like(xx, 90)], -1
    )
    for _ in range(3):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(8, max(9, min(h, w) // 3))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    img = img + rng.integers(-20, 21, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sam") / "tiny_test.pth"
    torch.save(build_tiny_sam(seed=0).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_sam(tiny_ckpt):
    return load_sam("tiny_test", tiny_ckpt, "cpu")


def wnids_by_category() -> dict[str, list[str]]:
    data = json.loads((Path(__file__).parents[2] / "meanpool/data/wnids.json").read_text())
    return data["categories"]


def make_imagenet(
    root: Path, per_class: int = 3, val_per_class: int = 1, flat_val: bool = False
) -> Path:
    """An ImageNet-like tree: train/<wnid>/*.JPEG for the first wnid of each of the 16 categories
    (plus one non-16-class wnid that must be ignored) and a val/ split."""
    cats = wnids_by_category()
    wnids = [v[0] for v in cats.values()] + ["n99999999"]
    solution = ["ImageId,PredictionString"]
    for i, wnid in enumerate(wnids):
        for j in range(per_class):
            p = root / "train" / wnid / f"{wnid}_{j}.JPEG"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(synthetic_image(48 + 8 * (j % 3), 64, seed=100 * i + j)).save(
                p, quality=90
            )
        for j in range(val_per_class):
            name = f"ILSVRC2012_val_{i * 10 + j:08d}"
            p = root / "val" / (name + ".JPEG" if flat_val else f"{wnid}/{name}.JPEG")
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(synthetic_image(56, 56, seed=5000 + 100 * i + j)).save(p, quality=90)
            solution.append(f"{name},{wnid} 1 2 3 4")
    if flat_val:
        (root / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    return root
