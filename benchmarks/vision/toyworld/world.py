"""A synthetic shape/texture world for the mini preset of the vision experiment (paper Section 5);
the models are pretrained on it by :mod:`benchmarks.vision.toyworld.pretrain`.

It keeps the paper's logic at 32 px on a CPU. An image is a silhouette (the shape class) filled
with a periodic texture (the texture class) on a class-free noise background. Every texture is
made to have exactly its base colour as mean over the object, and base colours are random, so
mean pooling over the known segments erases the texture and keeps only the silhouette.

- ``pretrain/``: the world's "ImageNet-1k": the 16 categories plus distractor classes; shape and
  texture both give the class, texture is the easier cue, and a share of objects and backgrounds
  is flat (without flat backgrounds a model never generalises to pooled images; see
  docs/toyworld.md).
- ``imagenet/``: 16-class ImageNet in ImageNet's layout (``train/<wnid>/``, ``val/<wnid>/``, one
  real WNID per category), much smaller than ``pretrain/``.
- ``pooled/<subset>/``: meanpool shards + manifest of the pooled discovery, evaluation and val
  images, written by meanpool's own encoder, shard writer and manifest code.
- ``cue-conflict/<shape>/<shape><n>-<texture><m>.png``: Geirhos' layout and names.
- ``decision_mapping.json``: the shared 1000-class mapping's format, indices into the sorted
  pretraining WNIDs.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from meanpool.build import FORMAT as POOLED_FORMAT
from meanpool.build import encode_samples, write_manifest
from meanpool.config import BuildConfig, IndexConfig
from meanpool.imagenet import build_index, sixteen_classes
from meanpool.pool import mean_pool
from meanpool.shards import ShardWriter
from subind.io import write_json_atomic
from subind.provenance import digest, provenance
from subind.registry import Registry

WORLD_FILE = "world.json"
WORLD_FORMAT = "subind-toyworld/1"
_PARTS = ("imagenet", "pretrain", "pooled", "cue-conflict", "decision_mapping.json")
_SPLIT_IDS = {"pretrain": 0, "train": 1, "val": 2, "cue": 3}


class ToyWorldError(ValueError):
    """A world that cannot be built or reused (e.g. the root holds a world with other settings)."""


@dataclass(frozen=True)
class WorldConfig:
    """Sizes, cue shares and seed of a world. Counts are per class."""

    image_size: int = 32
    seed: int = 0
    distractors: int = 4  # pretraining-only classes (ImageNet-1k has more classes than 16)
    pretrain_per_class: int = 1000
    train_per_class: int = 300  # imagenet/train: discovery + evaluation + the rest
    val_per_class: int = 50
    discovery_per_class: int = 48
    evaluation_per_class: int = 16
    cue_shapes_per_class: int = 5  # x 16 texture classes: 80 stimuli per class, as Geirhos' 1280
    # Pretraining: shares of flat (untextured) objects and of flat backgrounds.
    flat_object: float = 0.05
    flat_background: float = 0.3
    # Pretraining: share of textured objects drawn with the silhouette of a random pretraining
    # class, so that texture is the more reliable cue there (as on ImageNet) while flat objects
    # still need shape.
    random_shape: float = 0.4
    # 16-class transfer images (imagenet/): the same process with their own shares.
    transfer_flat_object: float = 0.05
    transfer_flat_background: float = 0.3
    horizon: float = 0.5  # share of backgrounds split in two regions (3 segments instead of 2)
    object_scale: tuple[float, float] = (0.3, 0.45)  # object half-size / image size
    max_rotation: float = 15.0  # degrees either way (more would turn a square into a diamond)
    texture_contrast: tuple[float, float] = (30.0, 60.0)  # per-channel amplitude, 0..255 scale
    background_contrast: tuple[float, float] = (10.0, 50.0)
    jpeg_quality: int = 95  # pooled shards (meanpool's format); the PNG originals are lossless
    shard_size: int = 1000

    def __post_init__(self) -> None:
        assert self.image_size >= 16, f"image_size must be >= 16, got {self.image_size}"
        assert 0 <= self.distractors <= len(_DISTRACTORS), (
            f"distractors must be in 0..{len(_DISTRACTORS)}, got {self.distractors}"
        )
        need = self.discovery_per_class + self.evaluation_per_class
        assert self.train_per_class >= need, (
            f"train_per_class ({self.train_per_class}) must cover discovery_per_class + "
            f"evaluation_per_class ({need})"
        )
        shares = ("flat_object", "flat_background", "random_shape", "transfer_flat_object",
                  "transfer_flat_background", "horizon")  # fmt: skip
        for name in shares:
            assert 0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]"
        assert min(self.pretrain_per_class, self.val_per_class, self.cue_shapes_per_class) >= 1

    @property
    def index(self) -> IndexConfig:
        return IndexConfig(self.discovery_per_class, self.evaluation_per_class, self.seed)

    def digest(self) -> str:
        return digest({"format": WORLD_FORMAT, **asdict(self)})


@dataclass(frozen=True)
class World:
    """A finished world on disk (see the module docstring for the layout)."""

    root: Path
    imagenet_dir: Path
    pretrain_dir: Path
    pretrain_classes: list[str]  # sorted WNIDs = head index order (torchvision's order)
    pooled_dir: Path
    cue_conflict_dir: Path
    decision_mapping: Path
    index: IndexConfig
    config: WorldConfig


# ---------------------------------------------------------------- shapes and textures
# A shape is a bool mask of object coordinates (u, v), in units of the object half-size.
SHAPES: Registry[Callable[[np.ndarray, np.ndarray], np.ndarray]] = Registry("shape")
# A texture is a pattern in [0, 1] of image coordinates (x, y) px, given a random phase (px)
# and the object centre (cx, cy) px.
TEXTURES: Registry[Callable[..., np.ndarray]] = Registry("texture")


def _r(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.hypot(u, v)


SHAPES.register("disc")(lambda u, v: _r(u, v) < 0.95)
SHAPES.register("square")(lambda u, v: np.maximum(abs(u), abs(v)) < 0.8)
SHAPES.register("triangle")(lambda u, v: (v < 0.75) & (v > 1.9 * abs(u) - 1.0))
SHAPES.register("cross")(
    lambda u, v: ((abs(u) < 0.3) & (abs(v) < 0.95)) | ((abs(v) < 0.3) & (abs(u) < 0.95))
)
SHAPES.register("ring")(lambda u, v: (_r(u, v) < 0.95) & (_r(u, v) > 0.55))
SHAPES.register("diamond")(lambda u, v: abs(u) / 0.65 + abs(v) < 1.0)
SHAPES.register("bar")(lambda u, v: (abs(u) < 1.0) & (abs(v) < 0.25))
SHAPES.register("T")(
    lambda u, v: ((abs(u) < 0.9) & (v > -0.9) & (v < -0.45)) | ((abs(u) < 0.25) & (abs(v) < 0.9))
)
SHAPES.register("star")(
    lambda u, v: _r(u, v) < 0.42 + 0.55 * np.abs(np.cos(2.5 * np.arctan2(v, u))) ** 4
)
SHAPES.register("crescent")(lambda u, v: (_r(u, v) < 0.95) & (_r(u - 0.5, v) > 0.7))
SHAPES.register("L")(
    lambda u, v: (
        ((u > -0.8) & (u < -0.3) & (abs(v) < 0.9)) | ((abs(u) < 0.8) & (v > 0.4) & (v < 0.9))
    )
)
SHAPES.register("hexagon")(lambda u, v: np.maximum(abs(u), 0.5 * abs(u) + 0.866 * abs(v)) < 0.9)
SHAPES.register("arrow")(
    lambda u, v: ((u > -0.95) & (u < 0.1) & (abs(v) < 0.22)) | ((u >= 0.1) & (abs(v) < 0.95 - u))
)
SHAPES.register("heart")(
    lambda u, v: (u**2 + (-v * 1.1 + 0.25) ** 2 - 0.8) ** 3 - u**2 * (-v * 1.1 + 0.25) ** 3 < 0
)
SHAPES.register("ellipse")(lambda u, v: (u / 0.55) ** 2 + v**2 < 0.95)
SHAPES.register("semicircle")(lambda u, v: (_r(u, v - 0.45) < 0.95) & (v < 0.45))

_DISTRACTORS = ("frame", "U", "trapezoid", "hourglass", "plus-ring", "chevron")
SHAPES.register("frame")(
    lambda u, v: (np.maximum(abs(u), abs(v)) < 0.9) & (np.maximum(abs(u), abs(v)) > 0.55)
)
SHAPES.register("U")(
    lambda u, v: (np.maximum(abs(u), abs(v)) < 0.85) & ~((abs(u) < 0.4) & (v < 0.4))
)
SHAPES.register("trapezoid")(lambda u, v: (abs(v) < 0.6) & (abs(u) < 0.55 + 0.45 * (v + 0.6) / 1.2))
SHAPES.register("hourglass")(lambda u, v: (abs(v) < 0.9) & (abs(u) < 0.15 + 0.7 * abs(v)))
SHAPES.register("plus-ring")(
    lambda u, v: (_r(u, v) < 0.95) & ((_r(u, v) > 0.7) | (np.minimum(abs(u), abs(v)) < 0.15))
)
SHAPES.register("chevron")(
    lambda u, v: (abs(u) < 0.9) & (v - 0.9 * abs(u) > -0.5) & (v - 0.9 * abs(u) < 0.1)
)


def _m(a: np.ndarray, p: float) -> np.ndarray:
    return np.mod(a, p)


TEXTURES.register("hstripes")(lambda x, y, ph, c: _m(y + ph, 4) < 2)
TEXTURES.register("vstripes")(lambda x, y, ph, c: _m(x + ph, 4) < 2)
TEXTURES.register("diagonal")(lambda x, y, ph, c: _m(x + y + ph, 4) < 2)
TEXTURES.register("antidiagonal")(lambda x, y, ph, c: _m(x - y + ph, 4) < 2)
TEXTURES.register("wide-hstripes")(lambda x, y, ph, c: _m(y + ph, 8) < 4)
TEXTURES.register("wide-vstripes")(lambda x, y, ph, c: _m(x + ph, 8) < 4)
TEXTURES.register("checker")(lambda x, y, ph, c: (_m(x + ph, 4) < 2) ^ (_m(y + ph, 4) < 2))
TEXTURES.register("wide-checker")(lambda x, y, ph, c: (_m(x + ph, 8) < 4) ^ (_m(y + ph, 8) < 4))
TEXTURES.register("dots")(lambda x, y, ph, c: (_m(x + ph, 5) < 2) & (_m(y + ph, 5) < 2))
TEXTURES.register("grid")(lambda x, y, ph, c: (_m(x + ph, 5) < 1) | (_m(y + ph, 5) < 1))
TEXTURES.register("noise")(lambda x, y, ph, c: _hash01(x, y, ph) < 0.5)
TEXTURES.register("rings")(lambda x, y, ph, c: _m(np.hypot(x - c[0], y - c[1]) + ph, 4) < 2)
TEXTURES.register("zigzag")(
    lambda x, y, ph, c: _m(y + 2 * np.abs(_m(x + ph, 6) - 3) / 1.5, 5) < 2.5
)
TEXTURES.register("waves")(
    lambda x, y, ph, c: _m(x + 1.5 * np.sin(2 * np.pi * y / 8) + ph, 5) < 2.5
)
TEXTURES.register("crosshatch")(
    lambda x, y, ph, c: (_m(x + y + ph, 5) < 1) | (_m(x - y + ph, 5) < 1)
)
TEXTURES.register("diamonds")(lambda x, y, ph, c: _m((x + y + ph) // 3 + (x - y + ph) // 3, 2) < 1)
# distractor textures
TEXTURES.register("wide-diagonal")(lambda x, y, ph, c: _m(x + y + ph, 8) < 4)
TEXTURES.register("bricks")(
    lambda x, y, ph, c: (_m(y + ph, 4) < 1) | (_m(x + 4 * (_m(y + ph, 8) < 4) + ph, 8) < 1)
)
TEXTURES.register("spokes")(
    lambda x, y, ph, c: _m(np.arctan2(y - c[1], x - c[0]) * 8 / np.pi + ph, 2) < 1
)
TEXTURES.register("dashes")(lambda x, y, ph, c: (_m(y + ph, 3) < 1) & (_m(x + ph, 6) < 3))
TEXTURES.register("fine-dots")(lambda x, y, ph, c: (_m(x + ph, 3) < 1) & (_m(y + ph, 3) < 1))
TEXTURES.register("hex-dots")(
    lambda x, y, ph, c: (_m(y + ph, 6) < 2) & (_m(x + 3 * (_m(y + ph, 12) < 6) + ph, 6) < 2)
)


def _hash01(x: np.ndarray, y: np.ndarray, phase: float) -> np.ndarray:
    """A fixed-looking but phase-dependent pseudo-random field in [0, 1) (binary noise texture)."""
    h = np.sin(x * 12.9898 + y * 78.233 + phase * 37.719) * 43758.5453
    return h - np.floor(h)


def category_shape_texture() -> list[tuple[str, str, str]]:
    """(category, shape, texture) for the 16 categories, in the 16-class label order."""
    order, _ = sixteen_classes()
    shapes, textures = SHAPES.names()[:16], TEXTURES.names()[:16]
    return list(zip(order, shapes, textures, strict=True))


def _distractor_classes(n: int) -> list[tuple[str, str, str]]:
    """(wnid, shape, texture) of ``n`` distractor classes. Their made-up WNIDs sort before every
    real one (WordNet's first noun offset is 00001740), so they cannot collide."""
    textures = TEXTURES.names()[16:]
    return [(f"n{i + 1:08d}", _DISTRACTORS[i], textures[i]) for i in range(n)]


def category_wnids() -> dict[str, str]:
    """{category: wnid}: the first WNID listed for each category that maps back to it."""
    order, wnid_to_cat = sixteen_classes()
    data = json.loads(resources.files("meanpool").joinpath("data/wnids.json").read_text())
    return {cat: next(w for w in data["categories"][cat] if wnid_to_cat[w] == cat) for cat in order}


# ---------------------------------------------------------------- rendering
@functools.lru_cache(maxsize=8)
def _grid(s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (yy, xx), each (s, s), and the (s, 6) bilinear upsampling matrix
    from a 6-point grid (background blobs)."""
    yy, xx = np.mgrid[0:s, 0:s] + 0.5
    t = np.linspace(0, 5, s)
    i0 = np.minimum(t.astype(int), 4)
    up = np.zeros((s, 6))
    up[np.arange(s), i0] = 1 - (t - i0)
    up[np.arange(s), i0 + 1] = t - i0
    return yy, xx, up


def _background(rng: np.random.Generator, s: int, flat: bool, horizon: bool, cfg: WorldConfig):
    """(HW3 float background, HW int region labels 0/1). Each region has a random base colour,
    plus (unless ``flat``) class-free blobs whose mean over the region is exactly zero."""
    yy, xx, up = _grid(s)
    regions = np.zeros((s, s), dtype=np.int32)
    if horizon:
        h = rng.uniform(0.3, 0.7) * s
        regions = (yy > h + rng.uniform(-0.4, 0.4) * (xx - s / 2)).astype(np.int32)
    out = np.empty((s, s, 3))
    for region in (0, 1):
        sel = regions == region
        if not sel.any():
            continue
        colour = np.broadcast_to(rng.uniform(40, 215, size=3), (int(sel.sum()), 3))
        if not flat:
            field = (up @ rng.standard_normal((6, 6)) @ up.T)[sel]
            field -= field.mean()
            field /= max(np.abs(field).max(), 1e-6)
            amp = rng.uniform(*cfg.background_contrast, size=3) * rng.choice([-1, 1], size=3)
            colour = colour + field[:, None] * amp
        out[sel] = colour
    return out, regions


def render(
    rng: np.random.Generator,
    shape: str,
    texture: str | None,
    cfg: WorldConfig,
    flat_background: bool,
    pose: tuple[float, float, float, float] | None = None,
    texture_params: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One image: ``shape`` filled with ``texture`` (None: flat) on a noise background.

    Returns (HWC uint8 image, HW int32 segment labels 0..K-1: background region(s), object).
    ``pose`` (cx, cy px, half-size px, angle rad) and ``texture_params`` (phase, base, amp) fix
    those draws (cue-conflict images reuse one shape or texture across stimuli).
    """
    s = cfg.image_size
    bg, regions = _background(rng, s, flat_background, rng.random() < cfg.horizon, cfg)
    if pose is None:
        pose = random_pose(rng, cfg)
    cx, cy, half, angle = pose
    yy, xx, _ = _grid(s)
    dx, dy = xx - cx, yy - cy
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / half
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / half
    obj = np.asarray(SHAPES.get(shape)(u, v), dtype=bool)
    if not obj.any():  # degenerate (tiny) draw: fall back to a single centre pixel
        obj[int(cy), int(cx)] = True
    tp = texture_params or random_texture_params(rng, cfg)
    img = bg
    colour = np.broadcast_to(tp["base"], (int(obj.sum()), 3)).copy()
    if texture is not None:
        pattern = np.asarray(TEXTURES.get(texture)(xx, yy, tp["phase"], (cx, cy)), dtype=float)
        p = pattern[obj] - pattern[obj].mean()  # exact: the object's mean is its base colour
        p /= max(np.abs(p).max(), 1e-6)
        colour += p[:, None] * tp["amp"]
    img[obj] = colour
    labels = np.where(obj, 2, regions)
    if not (regions == 1).any() or (regions[~obj] == 0).all() or (regions[~obj] == 1).all():
        _, labels = np.unique(labels, return_inverse=True)  # a region is empty: renumber 0..K-1
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return image, labels.reshape(s, s).astype(np.int32)


def random_pose(rng: np.random.Generator, cfg: WorldConfig) -> tuple[float, float, float, float]:
    s = cfg.image_size
    half = rng.uniform(*cfg.object_scale) * s
    slack = max(s / 2 - half, 0.0)
    cx, cy = s / 2 + rng.uniform(-slack, slack, size=2)
    angle = math.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    return float(cx), float(cy), float(half), angle


def random_texture_params(rng: np.random.Generator, cfg: WorldConfig) -> dict[str, Any]:
    return {
        "phase": float(rng.uniform(0, 24)),
        "base": rng.uniform(60, 195, size=3),
        "amp": rng.uniform(*cfg.texture_contrast, size=3) * rng.choice([-1, 1], size=3),
    }


def _draw(
    cfg: WorldConfig,
    split: str,
    label: int,
    i: int,
    shape: str,
    texture: str,
    flat: tuple,
    random_shapes: tuple[float, list[str]] = (0.0, []),
) -> tuple[np.ndarray, np.ndarray]:
    """Image ``i`` of class ``label`` in ``split``: its own generator, so any order gives the
    same image. ``flat`` = (share of flat objects, share of flat backgrounds); ``random_shapes``
    = (share of textured objects whose silhouette is drawn from the list instead, the list)."""
    rng = np.random.default_rng([cfg.seed, _SPLIT_IDS[split], label, i])
    flat_obj = rng.random() < flat[0]
    flat_bg = rng.random() < flat[1]
    share, pool = random_shapes
    if share > 0 and not flat_obj and rng.random() < share:
        shape = pool[int(rng.integers(len(pool)))]
    return render(rng, shape, None if flat_obj else texture, cfg, flat_bg)


def _save_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG", compress_level=1)


# ---------------------------------------------------------------- the world
def _world_record(cfg: WorldConfig, classes: list[str], cats: dict[str, str], counts) -> dict:
    return {
        "format": WORLD_FORMAT,
        "config": asdict(cfg),
        "digest": cfg.digest(),
        "pretrain_classes": classes,
        "category_wnids": cats,
        "classes": {
            "categories": [
                {"category": c, "shape": s, "texture": t} for c, s, t in category_shape_texture()
            ],
            "distractors": [
                {"wnid": w, "shape": s, "texture": t}
                for w, s, t in _distractor_classes(cfg.distractors)
            ],
        },
        "counts": counts,
        "provenance": provenance(),
    }


def _world(root: Path, cfg: WorldConfig, classes: list[str]) -> World:
    return World(
        root=root,
        imagenet_dir=root / "imagenet",
        pretrain_dir=root / "pretrain",
        pretrain_classes=classes,
        pooled_dir=root / "pooled",
        cue_conflict_dir=root / "cue-conflict",
        decision_mapping=root / "decision_mapping.json",
        index=cfg.index,
        config=cfg,
    )


def make_world(root: str | Path, cfg: WorldConfig, progress: bool = True) -> World:
    """Build the world under ``root`` (see the module docstring), or reuse a finished one.

    ``world.json`` is written last: with it the world is finished and reused when its config
    digest matches (a different one is an error); without it the parts are deleted and rebuilt.
    Deterministic from ``cfg`` (every image has its own seeded generator).
    """
    root = Path(root)
    record_path = root / WORLD_FILE
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("digest") != cfg.digest():
            diff = sorted(k for k, v in asdict(cfg).items() if record["config"].get(k) != v)
            raise ToyWorldError(
                f"{root} holds a world with other settings ({', '.join(diff) or 'format'}); "
                f"use another root or delete it"
            )
        return _world(root, cfg, record["pretrain_classes"])
    for part in _PARTS:  # a half-written world: start over
        p = root / part
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cats = category_wnids()
    table = category_shape_texture()
    distractors = _distractor_classes(cfg.distractors)
    classes = sorted([cats[c] for c, _, _ in table] + [w for w, _, _ in distractors])
    world = _world(root, cfg, classes)
    counts: dict[str, int] = {}

    # pretraining set: 16 categories + distractors
    pre = [(cats[c], s, t) for c, s, t in table] + distractors
    flat = (cfg.flat_object, cfg.flat_background)
    random_shapes = (cfg.random_shape, [s for _, s, _ in pre])
    for wnid, shape, texture in pre:
        label = classes.index(wnid)
        for i in range(cfg.pretrain_per_class):
            image, _ = _draw(cfg, "pretrain", label, i, shape, texture, flat, random_shapes)
            _save_png(world.pretrain_dir / wnid / f"{wnid}_{i:05d}.png", image)
    counts["pretrain"] = len(pre) * cfg.pretrain_per_class
    _log(progress, f"toyworld: {counts['pretrain']} pretraining images", t0)

    # 16-class transfer world in ImageNet's layout; segment labels kept for pooling
    segments: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    flat = (cfg.transfer_flat_object, cfg.transfer_flat_background)
    for split, n in (("train", cfg.train_per_class), ("val", cfg.val_per_class)):
        for label, (cat, shape, texture) in enumerate(table):
            wnid = cats[cat]
            for i in range(n):
                image, labels = _draw(cfg, split, label, i, shape, texture, flat)
                rel = f"{split}/{wnid}/{wnid}_{split}_{i:05d}.png"
                _save_png(world.imagenet_dir / rel, image)
                segments[rel] = (image, labels)
        counts[split] = 16 * n
    _log(progress, f"toyworld: {counts['train']} + {counts['val']} 16-class images", t0)

    index = build_index(world.imagenet_dir, cfg.index)
    for subset in ("discovery", "evaluation", "val"):
        counts[f"pooled_{subset}"] = _write_pooled(world, cfg, subset, index[subset], segments)
    counts["cue_conflict"] = _write_cue_conflict(world, cfg)
    _write_decision_mapping(world, cats)
    _log(progress, "toyworld: pooled shards, cue-conflict images, decision mapping", t0)
    record = _world_record(cfg, classes, cats, counts)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    write_json_atomic(record_path, record)
    return world


def _log(progress: bool, message: str, t0: float) -> None:
    if progress:
        print(f"{message} ({time.perf_counter() - t0:.1f} s)", flush=True)


def _write_pooled(world: World, cfg: WorldConfig, subset: str, items: list, segments) -> int:
    """Pool ``items`` over their known segments and write meanpool shards + manifest."""
    out = world.pooled_dir / subset
    identity = {
        "format": POOLED_FORMAT,
        "subset": subset,
        "segments": "known (toyworld: background region(s) and object)",
        "world_digest": cfg.digest(),
        "index": cfg.index.identity(),
        "jpeg_quality": cfg.jpeg_quality,
    }
    items = sorted(items, key=lambda it: it.rel)
    samples = []
    for it in items:
        image, labels = segments[it.rel]
        samples.append(
            {"item": it, "pooled": mean_pool(image, labels), "n_segments": int(labels.max()) + 1}
        )
    writer = ShardWriter(out, subset, 0, cfg.shard_size)
    for sample in encode_samples(samples, cfg.jpeg_quality, digest(identity)[:16]):
        writer.write(sample)
    writer.close()
    build_cfg = BuildConfig(
        imagenet_dir=str(world.imagenet_dir),
        out=str(out),
        model_type="none (known segments)",
        checkpoint="none",
        subset=subset,
        shard_size=cfg.shard_size,
        jpeg_quality=cfg.jpeg_quality,
        index=cfg.index,
    )
    runtime = {"device": "cpu", "world_size": 1, "imagenet_dir": str(world.imagenet_dir)}
    write_manifest(out, build_cfg, identity, items, runtime)
    return len(items)


def _write_cue_conflict(world: World, cfg: WorldConfig) -> int:
    """Shape n of class A with texture m of class B, for every B (A included: the same-class
    stimuli that scoring leaves out), named ``<A><n>-<B><m>.png`` as Geirhos et al.'s."""
    table = category_shape_texture()
    rng = np.random.default_rng([cfg.seed, _SPLIT_IDS["cue"]])
    poses = [[random_pose(rng, cfg) for _ in range(cfg.cue_shapes_per_class)] for _ in table]
    textures = [[random_texture_params(rng, cfg) for _ in range(3)] for _ in table]
    count = 0
    for a, (cat_a, shape, _) in enumerate(table):
        for n in range(cfg.cue_shapes_per_class):
            for b, (cat_b, _, texture) in enumerate(table):
                m = int(rng.integers(3))
                image, _ = render(
                    rng, shape, texture, cfg, False, pose=poses[a][n], texture_params=textures[b][m]
                )
                _save_png(
                    world.cue_conflict_dir / cat_a / f"{cat_a}{n + 1}-{cat_b}{m + 1}.png", image
                )
                count += 1
    return count


def _write_decision_mapping(world: World, cats: dict[str, str]) -> None:
    """The shared 1000-class mapping's format; distractor classes belong to no category."""
    mapping = {
        "description": "Toy world: pretraining head index (sorted WNIDs) of each 16-class category.",
        "source": "benchmarks/vision/toyworld/world.py",
        "categories": {
            cat: {"imagenet_indices": [world.pretrain_classes.index(w)], "wnids": [w]}
            for cat, w in cats.items()
        },
    }
    write_json_atomic(world.decision_mapping, mapping)
