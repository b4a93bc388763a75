"""Shared fixtures: a tiny random-weight SAM checkpoint, generated images and ImageNet trees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from meanpool.model import build_tiny_sam, load_sam

# The root conftest sets one thread per test, but session fixtures (the tiny build) run before
# that function-scoped fixture; two cores are shared with other jobs.
torch.set_num_threads(1)

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


@pytest.fixture(scope="session")
def built(tmp_path_factory, tiny_ckpt) -> Path:
    """A finished 16-sample discovery build in 4 shards (read-only for tests)."""
    from meanpool.build import build
    from meanpool.config import BuildConfig, IndexConfig, SegmentConfig

    base = tmp_path_factory.mktemp("built")
    root = make_imagenet(base / "in", per_class=2, val_per_class=0)
    cfg = BuildConfig(
        imagenet_dir=str(root),
        out=str(base / "out"),
        model_type="tiny_test",
        checkpoint=str(tiny_ckpt),
        shard_size=4,
        segment=SegmentConfig(points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0),
        index=IndexConfig(discovery_per_class=1, evaluation_per_class=1),
    )
    build(cfg, progress=False)
    return base / "out"


@pytest.fixture
def offline(monkeypatch):
    """Hub offline mode, and any socket connection fails: tests never touch the network."""
    import socket

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(*args, **kw):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def fill_hf_cache(cache: Path, repo_id: str, folder: Path, commit: str = "a" * 40) -> Path:
    """Lay ``folder`` out as the Hugging Face cache would hold a downloaded dataset repo."""
    import shutil

    repo = cache / ("datasets--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for p in folder.iterdir():
        if p.is_file():
            shutil.copyfile(p, snap / p.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snap
