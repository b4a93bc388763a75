"""Frozen settings for every configurable part of the Mean-pooled ImageNet pipeline.

Defaults live only here. The CLI passes only the options a user set (others are dropped), so a
dataclass default is the single source of truth and what the manifest records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

BACKENDS = ("fast", "reference")
ENCODER_DTYPES = ("float32", "bfloat16", "float16")
MERGES = ("partition", "whole_mask")
SUBSETS = ("discovery", "evaluation", "train", "val")
SELECTIONS = ("random", "paper")


@dataclass(frozen=True)
class SegmentConfig:
    """SAM automatic mask generation with the paper's settings (Section 5.1).

    16x16 point grid on the whole image plus one crop layer (2x2 crops with 8x8 points each, the
    released code's ``crop_n_points_downscale_factor=2``), SAM's default quality thresholds, and
    masks under 100 px removed. ``backend`` picks SAM's own ``SamAutomaticMaskGenerator``
    ("reference") or this package's batched re-implementation ("fast"); both give the same masks
    in float32. Batch sizes change speed and memory, never masks; their defaults depend on the
    device (``encoder_batch_for``, ``decoder_batch_for``).
    """

    points_per_side: int = 16
    crop_n_layers: int = 1
    crop_n_points_downscale_factor: int = 2
    crop_overlap_ratio: float = 512 / 1500
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_nms_thresh: float = 0.7
    min_mask_region_area: int = 100
    # Prompts per decoder call (memory vs speed; masks do not change, so not in the digest).
    # None: 64 (SAM's default), except 256 for the fast path on GPUs (its calls span crops).
    points_per_batch: int | None = None
    # Image + crops per encoder call of the fast path (speed only, not in the digest).
    # None: all of them (5) in one call on GPUs, one per call on CPUs (see encoder_batch_for).
    encoder_batch: int | None = None
    backend: str = "fast"
    encoder_dtype: str = "float32"  # fast path only; bfloat16 is about 2x faster on GPUs

    def __post_init__(self) -> None:
        assert self.backend in BACKENDS, f"backend must be one of {BACKENDS}, got {self.backend!r}"
        assert self.encoder_dtype in ENCODER_DTYPES, (
            f"encoder_dtype must be one of {ENCODER_DTYPES}, got {self.encoder_dtype!r}"
        )
        assert self.points_per_side >= 1, (
            f"points_per_side must be >= 1, got {self.points_per_side}"
        )
        assert self.crop_n_layers >= 0, f"crop_n_layers must be >= 0, got {self.crop_n_layers}"
        assert self.points_per_batch is None or self.points_per_batch >= 1, (
            f"points_per_batch must be >= 1, got {self.points_per_batch}"
        )
        assert self.encoder_batch is None or self.encoder_batch >= 1, (
            f"encoder_batch must be >= 1, got {self.encoder_batch}"
        )
        assert self.min_mask_region_area >= 0, "min_mask_region_area must be >= 0"

    def decoder_batch_for(self, device_type: str) -> int:
        """Prompts per decoder call for this backend on ``device_type`` ("cpu", "cuda", ...).

        On a CPU a decoder call's memory traffic grows with the batch (every prompt carries its
        own 64x64 image embedding through the transformer), so SAM's 64 is faster than 256.
        """
        if self.points_per_batch is not None:
            return self.points_per_batch
        return 256 if self.backend == "fast" and device_type != "cpu" else 64

    def encoder_batch_for(self, device_type: str) -> int:
        """Crops per image encoder call of the fast path on ``device_type``.

        A GPU runs one batch of 5 faster than 5 calls; on a CPU a batch of 5 is slower than 5
        calls (vit_b, 2 threads: 85 s against 52-55 s), its global attention maps no longer
        fitting in cache.
        """
        if self.encoder_batch is not None:
            return self.encoder_batch
        return 1 if device_type == "cpu" else 1 << 30


@dataclass(frozen=True)
class PoolConfig:
    """How masks become one partition and how pixels are pooled.

    ``partition`` (default, the paper's text): paint masks largest first so smaller masks win,
    pixels no mask covers form one remainder segment, and every pixel gets the mean colour of its
    final segment. ``whole_mask`` (the released code's variant): each mask's colour is the mean
    over the whole mask before overlaps are resolved; painting order is the same.
    """

    merge: str = "partition"

    def __post_init__(self) -> None:
        assert self.merge in MERGES, f"merge must be one of {MERGES}, got {self.merge!r}"


@dataclass(frozen=True)
class IndexConfig:
    """Which 16-class ImageNet images make up each subset (paper Section 5.1).

    ``selection`` "random" (the default, as before lists existed): ``train`` is every image of
    the 16-class WNIDs and the discovery/evaluation subsets are a seeded class-balanced draw from
    it; 869 and 96 per class give 13,904 and 1,536, the paper's "13.9k" and "1.54k".
    ``selection`` "paper": the paper's exact image sets, shipped in
    ``meanpool/data/image-lists/``: train = 213,555 listed files, discovery = 13,929, evaluation =
    1,549; the per-class sizes and seed do not apply. A listed file absent from the ImageNet
    tree stops the index unless ``allow_missing``, which goes on without it (the index and the
    build's manifest record what was missing). The default stays "random" so that existing
    commands, builds and callers keep their meaning; the paper preset asks for "paper".
    """

    discovery_per_class: int = 869
    evaluation_per_class: int = 96
    seed: int = 0
    selection: str = "random"
    allow_missing: bool = False

    def __post_init__(self) -> None:
        assert self.discovery_per_class >= 0 and self.evaluation_per_class >= 0, (
            "per-class subset sizes must be >= 0"
        )
        assert self.selection in SELECTIONS, (
            f"selection must be one of {SELECTIONS}, got {self.selection!r}"
        )

    def identity(self) -> dict[str, Any]:
        """The settings that decide which images a subset holds (a build's identity).

        A random draw gives exactly the dict builds recorded before ``selection`` existed, so
        their settings digests do not change; the lists need only their name (per-class sizes
        and seed do not apply). ``allow_missing`` changes no image's content: what was missing is
        recorded in the manifest instead.
        """
        if self.selection == "paper":
            return {"selection": "paper"}
        return {
            "discovery_per_class": self.discovery_per_class,
            "evaluation_per_class": self.evaluation_per_class,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ImageConfig:
    """Input image handling: images whose shorter side is under ``min_side`` px are skipped;
    images whose longer side exceeds ``max_side`` px are downscaled (Lanczos) to ``max_side``."""

    min_side: int = 32
    max_side: int = 1024

    def __post_init__(self) -> None:
        assert 1 <= self.min_side <= self.max_side, (
            f"need 1 <= min_side <= max_side, got {self.min_side}, {self.max_side}"
        )


@dataclass(frozen=True)
class BuildConfig:
    """One ``meanpool build`` run. ``limit`` takes the first N images of the subset in index order
    (class-mixed) and may grow between resumed runs; everything else must match to resume."""

    imagenet_dir: str
    out: str
    model_type: str
    checkpoint: str
    subset: str = "discovery"
    limit: int | None = None
    shard_size: int = 1000
    jpeg_quality: int = 95
    device: str | None = None  # None: cuda:<local rank> when available, else cpu
    val_labels: str | None = None
    segment: SegmentConfig = dataclasses.field(default_factory=SegmentConfig)
    pool: PoolConfig = dataclasses.field(default_factory=PoolConfig)
    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)
    image: ImageConfig = dataclasses.field(default_factory=ImageConfig)

    def __post_init__(self) -> None:
        assert self.subset in SUBSETS, f"subset must be one of {SUBSETS}, got {self.subset!r}"
        assert self.shard_size >= 1, f"shard_size must be >= 1, got {self.shard_size}"
        assert 1 <= self.jpeg_quality <= 100, (
            f"jpeg_quality must be in 1..100, got {self.jpeg_quality}"
        )
        assert self.limit is None or self.limit >= 0, f"limit must be >= 0, got {self.limit}"


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)
