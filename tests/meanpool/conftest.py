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
    root: Path,
    per_class: int = 3,
    val_per_class: int = 1,
    flat_val: bool = False,
    extra_val_wnids: tuple[str, ...] = (),
) -> Path:
    """An ImageNet-like tree: train/<wnid>/*.JPEG for the first of each of the 16 categories'
    WNIDs that hold the paper's images (plus one non-16-class wnid that must be ignored) and a
    val/ split; ``extra_val_wnids``: more WNIDs with val images only (e.g. a 16-class WNID the
    paper's lists do not hold)."""
    from meanpool.imagenet import paper_wnids

    listed = set(paper_wnids())
    cats = wnids_by_category()
    wnids = [next(w for w in v if w in listed) for v in cats.values()] + ["n99999999"]
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
    for k, wnid in enumerate(extra_val_wnids):
        for j in range(val_per_class):
            name = f"ILSVRC2012_val_{90000 + k * 10 + j:08d}"
            p = root / "val" / (name + ".JPEG" if flat_val else f"{wnid}/{name}.JPEG")
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(synthetic_image(56, 56, seed=9000 + 10 * k + j)).save(p, quality=90)
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


def fill_hf_cache(
    cache: Path,
    repo_id: str,
    folder: Path,
    commit: str = "a" * 40,
    files: list[str] | None = None,
) -> Path:
    """Lay ``folder`` out as the Hugging Face cache would hold a downloaded dataset repo: the
    relative paths ``files`` (default: the files at its top level), same layout."""
    import shutil

    repo = cache / ("datasets--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    if files is None:
        files = [p.name for p in folder.iterdir() if p.is_file()]
    for rel in files:
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / rel, snap / rel)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snap


class FakeApi:
    """An HfApi stand-in that records what would be sent to the Hub."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw["repo_id"], kw))
        return "https://huggingface.co/datasets/org/name/commit/123"

    def uploaded(self) -> list[str]:
        """The relative paths the last upload_folder call would send (its allow/ignore patterns
        applied as huggingface_hub applies them)."""
        from huggingface_hub.utils import filter_repo_objects

        kw = next(c[2] for c in reversed(self.calls) if c[0] == "upload_folder")
        root = Path(kw["folder_path"])
        paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        return list(
            filter_repo_objects(
                paths,
                allow_patterns=kw.get("allow_patterns"),
                ignore_patterns=kw.get("ignore_patterns"),
            )
        )


# ---------------------------------------------------------------- the paper's lists, faked
def listed_names(
    train_only: int = 1, discovery: int = 1, evaluation: int = 1
) -> dict[str, list[str]]:
    """Real names from the packaged lists, per category the first ``discovery`` of the discovery
    list, the first ``evaluation`` of the evaluation list and the first ``train_only`` of the
    training list that are in neither: {"discovery", "evaluation", "train" (all of them)} ->
    ``train/<wnid>/<file>`` paths."""
    from meanpool.imagenet import paper_items, sixteen_classes

    held = {it.rel for name in ("discovery", "evaluation") for it in paper_items(name)}
    picks: dict[str, list[str]] = {"discovery": [], "evaluation": [], "train": []}
    for cat in sixteen_classes()[0]:
        for name, n in (("discovery", discovery), ("evaluation", evaluation)):
            items = sorted(it.rel for it in paper_items(name) if it.category == cat)
            picks[name] += items[:n]
        only = sorted(
            it.rel for it in paper_items("train") if it.category == cat and it.rel not in held
        )
        picks["train"] += only[:train_only]
    picks["train"] = sorted(picks["train"] + picks["discovery"] + picks["evaluation"])
    return picks


def make_listed_imagenet(
    root: Path, train_only: int = 1, discovery: int = 1, evaluation: int = 1, val: int = 1
) -> dict[str, list[str]]:
    """An ImageNet tree holding a few files of the paper's lists (see ``listed_names``), one file
    of a listed WNID that no list names (ignored by the lists), and ``val`` validation images per
    category in val/<wnid>/ for a listed WNID, plus one for a 16-class WNID that is not an
    ILSVRC class (only the random selection takes it). Returns what the lists should select:
    {"discovery", "evaluation", "train", "val"} -> paths."""
    from meanpool.imagenet import paper_wnids, sixteen_classes

    picks = listed_names(train_only, discovery, evaluation)
    for i, rel in enumerate(picks["train"]):
        _save(root / rel, 40 + 8 * (i % 3), 56, seed=i)
    _save(root / picks["train"][0].rsplit("_", 1)[0] / "unlisted_1.JPEG", 48, 48, seed=999)
    listed, (order, wnid_to_cat) = paper_wnids(), sixteen_classes()
    picks["val"] = []
    for c, cat in enumerate(order):
        wnid = next(w for w in listed if wnid_to_cat[w] == cat)
        for j in range(val):
            rel = f"val/{wnid}/ILSVRC2012_val_{c * 10 + j:08d}.JPEG"
            _save(root / rel, 48, 48, seed=5000 + 10 * c + j)
            picks["val"].append(rel)
    other = next(w for w in sorted(wnid_to_cat) if w not in set(listed))
    _save(root / f"val/{other}/ILSVRC2012_val_00099999.JPEG", 48, 48, seed=7)
    return picks


def _save(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_image(h, w, seed=seed)).save(path, quality=90)


POOLED_SUBSETS = ("discovery", "evaluation", "val")


def build_pooled_folder(base: Path, ckpt: Path) -> tuple[Path, Path, dict[str, list[str]]]:
    """What table1 reads: a fake listed ImageNet tree and ``<pooled>/{discovery,evaluation,val}``
    built from it with the paper's lists (allow_missing) and the tiny SAM. Returns (ImageNet
    root, pooled folder, the paths each subset should hold)."""
    from meanpool.build import build
    from meanpool.config import BuildConfig, IndexConfig, SegmentConfig

    root = base / "imagenet"
    picks = make_listed_imagenet(root)
    index = IndexConfig(selection="paper", allow_missing=True)
    seg = SegmentConfig(points_per_side=4, crop_n_layers=0, **MASKY)
    for subset in POOLED_SUBSETS:
        cfg = BuildConfig(
            imagenet_dir=str(root),
            out=str(base / "pooled" / subset),
            model_type="tiny_test",
            checkpoint=str(ckpt),
            subset=subset,
            shard_size=6,
            segment=seg,
            index=index,
        )
        build(cfg, progress=False)
    return root, base / "pooled", picks


@pytest.fixture(scope="session")
def pooled_folder(tmp_path_factory, tiny_ckpt) -> tuple[Path, Path, dict[str, list[str]]]:
    """``build_pooled_folder`` once per session (read-only for tests)."""
    return build_pooled_folder(tmp_path_factory.mktemp("pooled"), tiny_ckpt)
