"""16-class ImageNet from an ImageNet tree, and the paper's class-balanced subsets.

Layout: ``train/<wnid>/*.JPEG``; validation either ``val/<wnid>/*`` or flat ``val/*`` with a
label file (Kaggle's ``LOC_val_solution.csv``, looked for in the ImageNet directory, or any file
given as ``val_labels``: that CSV, or lines ``<file name> <wnid>``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .config import IndexConfig, to_dict

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
_KAGGLE_VAL = "LOC_val_solution.csv"


class ImageNetError(ValueError):
    """The ImageNet directory cannot be indexed (missing folders, labels, or too few images)."""


@dataclass(frozen=True)
class Item:
    """One input image: ``rel`` is its POSIX path relative to the ImageNet directory."""

    rel: str
    wnid: str
    category: str
    label: int  # index of ``category`` in the 16-class label order

    @property
    def key(self) -> str:
        """WebDataset ``__key__``: the relative path with '/' and '.' replaced by '_'."""
        return self.rel.replace("/", "_").replace(".", "_")


def sixteen_classes() -> tuple[list[str], dict[str, str]]:
    """(label order of the 16 categories, {wnid: category}) from the packaged wnids.json."""
    data = json.loads(resources.files("meanpool").joinpath("data/wnids.json").read_text())
    wnid_to_cat: dict[str, str] = {}
    for cat in data["label_order"]:
        for wnid in data["categories"][cat]:
            wnid_to_cat.setdefault(wnid, cat)  # first category wins for a (rare) shared wnid
    return list(data["label_order"]), wnid_to_cat


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_val_labels(path: Path) -> dict[str, str]:
    """{file stem: wnid} from LOC_val_solution.csv or '<file> <wnid>' lines."""
    labels: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        first = f.readline()
        f.seek(0)
        if first.startswith("ImageId"):
            for row in csv.DictReader(f):
                labels[row["ImageId"]] = row["PredictionString"].split()[0]
        elif first.strip().isdigit():
            raise ImageNetError(
                f"{path} holds devkit class IDs, which need the devkit's meta.mat to map to WNIDs; "
                f"use LOC_val_solution.csv, '<file> <wnid>' lines, or sort val/ into val/<wnid>/"
            )
        else:
            for line in f:
                parts = line.replace(",", " ").split()
                if len(parts) >= 2:
                    labels[Path(parts[0]).stem] = parts[1]
    if not labels:
        raise ImageNetError(
            f"no labels found in {path}; expected LOC_val_solution.csv or '<file> <wnid>' lines"
        )
    return labels


def scan(root: str | Path, val_labels: str | Path | None = None) -> dict[str, list[Item]]:
    """All 16-class images under ``root``: {"train": [...], "val": [...]}, each sorted by path."""
    root = Path(root)
    order, wnid_to_cat = sixteen_classes()
    if not (root / "train").is_dir():
        raise ImageNetError(
            f"{root} has no train/ folder; point --imagenet-dir at the ImageNet root"
        )

    def item(path: Path, wnid: str) -> Item:
        cat = wnid_to_cat[wnid]
        return Item(path.relative_to(root).as_posix(), wnid, cat, order.index(cat))

    out: dict[str, list[Item]] = {"train": [], "val": []}
    for wnid in sorted(wnid_to_cat):
        folder = root / "train" / wnid
        if folder.is_dir():
            out["train"] += [item(p, wnid) for p in _images_in(folder)]
    val = root / "val"
    if val.is_dir():
        if any((val / w).is_dir() for w in wnid_to_cat) or not _images_in(val):
            for wnid in sorted(wnid_to_cat):
                if (val / wnid).is_dir():
                    out["val"] += [item(p, wnid) for p in _images_in(val / wnid)]
        else:
            label_file = Path(val_labels) if val_labels else root / _KAGGLE_VAL
            if not label_file.is_file():
                raise ImageNetError(
                    f"{val} is flat and {label_file} does not exist; pass --val-labels "
                    f"(LOC_val_solution.csv or '<file> <wnid>' lines)"
                )
            labels = _read_val_labels(label_file)
            out["val"] = [
                item(p, labels[p.stem])
                for p in _images_in(val)
                if labels.get(p.stem) in wnid_to_cat
            ]
    for split in out:
        out[split].sort(key=lambda it: it.rel)
    if not out["train"]:
        raise ImageNetError(
            f"no 16-class ImageNet images under {root / 'train'} (train/<wnid>/*.JPEG)"
        )
    return out


def make_subsets(train: list[Item], cfg: IndexConfig) -> dict[str, list[Item]]:
    """Class-balanced ``discovery`` and ``evaluation`` subsets of ``train``, disjoint by design.

    Per category, the sorted images are shuffled with a generator seeded by (seed, label); the
    first ``discovery_per_class`` go to discovery and the NEXT ``evaluation_per_class`` to
    evaluation, so no image can be in both. Each subset is then shuffled (seeded) so that its
    first N images are class-mixed.
    """
    order, _ = sixteen_classes()
    need = cfg.discovery_per_class + cfg.evaluation_per_class
    subsets: dict[str, list[Item]] = {"discovery": [], "evaluation": []}
    for label, cat in enumerate(order):
        items = sorted((it for it in train if it.label == label), key=lambda it: it.rel)
        if len(items) < need:
            raise ImageNetError(
                f"category {cat!r} has {len(items)} train images, fewer than the {need} the "
                f"subsets need; lower --discovery-per-class / --evaluation-per-class"
            )
        perm = np.random.default_rng([cfg.seed, label]).permutation(len(items))
        chosen = [items[i] for i in perm[:need]]
        subsets["discovery"] += chosen[: cfg.discovery_per_class]
        subsets["evaluation"] += chosen[cfg.discovery_per_class :]
    for i, name in enumerate(("discovery", "evaluation")):
        perm = np.random.default_rng([cfg.seed, 1000 + i]).permutation(len(subsets[name]))
        subsets[name] = [subsets[name][j] for j in perm]
    return subsets


def build_index(
    root: str | Path, cfg: IndexConfig | None = None, val_labels: str | Path | None = None
) -> dict[str, list[Item]]:
    """{"discovery", "evaluation", "train", "val"} -> items. ``train`` and ``val`` are all of
    16-class ImageNet (sorted); the first two are the paper's balanced subsets of ``train``."""
    cfg = cfg or IndexConfig()
    splits = scan(root, val_labels)
    return {**make_subsets(splits["train"], cfg), **splits}


def select(
    root: str | Path,
    subset: str,
    cfg: IndexConfig | None = None,
    val_labels: str | Path | None = None,
) -> list[Item]:
    """The items of one subset; ``train`` and ``val`` need no balanced draw (nor enough images)."""
    splits = scan(root, val_labels)
    if subset in splits:
        return splits[subset]
    return make_subsets(splits["train"], cfg or IndexConfig())[subset]


def index_record(
    index: dict[str, list[Item]], cfg: IndexConfig, root: str | Path
) -> dict[str, Any]:
    """A JSON-ready record of an index (what ``meanpool index`` writes)."""
    order, _ = sixteen_classes()
    return {
        "imagenet_dir": str(Path(root).resolve()),
        "config": to_dict(cfg),
        "label_order": order,
        "counts": {name: len(items) for name, items in index.items()},
        "subsets": {
            name: [
                {"path": it.rel, "wnid": it.wnid, "category": it.category, "label": it.label}
                for it in items
            ]
            for name, items in index.items()
        },
    }
