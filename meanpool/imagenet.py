"""16-class ImageNet from an ImageNet tree: the paper's image lists, or a class-balanced draw.

Layout: ``train/<wnid>/*.JPEG``; validation either ``val/<wnid>/*`` or flat ``val/*`` with a
label file (Kaggle's ``LOC_val_solution.csv``, looked for in the ImageNet directory, or any file
given as ``val_labels``: that CSV, or lines ``<file name> <wnid>``).

Two selections (``IndexConfig.selection``): "random" takes every image of the 16-class WNIDs and
draws seeded class-balanced discovery/evaluation subsets; "paper" takes the paper's exact lists
(``meanpool/data/image-lists/*.tsv.gz``: train 213,555, discovery 13,929, evaluation 1,549).
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .config import IndexConfig, to_dict

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
_KAGGLE_VAL = "LOC_val_solution.csv"


PAPER_LISTS = ("train", "discovery", "evaluation")
# The packaged lists' sizes; "training" is train minus evaluation, the paper's training set.
PAPER_COUNTS = {"train": 213_555, "discovery": 13_929, "evaluation": 1_549, "training": 212_006}
_PAPER_ORDER_SEED = 20231017  # fixed: the class-mixed order of the listed subsets (for --limit)


class ImageNetError(ValueError):
    """The ImageNet directory cannot be indexed (missing folders, labels, or too few images)."""


class MissingImagesError(ImageNetError):
    """Files of the paper's lists are not in the ImageNet tree (and ``allow_missing`` is off)."""


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


@functools.lru_cache(maxsize=1)
def _sixteen() -> tuple[tuple[str, ...], dict[str, str]]:
    data = json.loads(resources.files("meanpool").joinpath("data/wnids.json").read_text())
    wnid_to_cat: dict[str, str] = {}
    for cat in data["label_order"]:
        for wnid in data["categories"][cat]:
            wnid_to_cat.setdefault(wnid, cat)  # first category wins for a (rare) shared wnid
    return tuple(data["label_order"]), wnid_to_cat


def sixteen_classes() -> tuple[list[str], dict[str, str]]:
    """(label order of the 16 categories, {wnid: category}) from the packaged wnids.json."""
    order, wnid_to_cat = _sixteen()
    return list(order), dict(wnid_to_cat)  # copies: callers may change theirs


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


def _check_train_folder(root: Path) -> None:
    if not (root / "train").is_dir():
        raise ImageNetError(
            f"{root} has no train/ folder; point --imagenet-dir at the ImageNet root"
        )


def _item(root: Path, path: Path, wnid: str, wnid_to_cat: dict[str, str]) -> Item:
    cat = wnid_to_cat[wnid]
    return Item(path.relative_to(root).as_posix(), wnid, cat, _sixteen()[0].index(cat))


def _scan_val(root: Path, val_labels: str | Path | None, wnid_to_cat: dict[str, str]) -> list[Item]:
    """The validation images of the WNIDs in ``wnid_to_cat``, sorted by path ([] without val/)."""
    val = root / "val"
    if not val.is_dir():
        return []
    if any((val / w).is_dir() for w in wnid_to_cat) or not _images_in(val):
        items = [
            _item(root, p, wnid, wnid_to_cat)
            for wnid in sorted(wnid_to_cat)
            if (val / wnid).is_dir()
            for p in _images_in(val / wnid)
        ]
        return sorted(items, key=lambda it: it.rel)
    label_file = Path(val_labels) if val_labels else root / _KAGGLE_VAL
    if not label_file.is_file():
        raise ImageNetError(
            f"{val} is flat and {label_file} does not exist; pass --val-labels "
            f"(LOC_val_solution.csv or '<file> <wnid>' lines)"
        )
    labels = _read_val_labels(label_file)
    items = [
        _item(root, p, labels[p.stem], wnid_to_cat)
        for p in _images_in(val)
        if labels.get(p.stem) in wnid_to_cat
    ]
    return sorted(items, key=lambda it: it.rel)


def scan(root: str | Path, val_labels: str | Path | None = None) -> dict[str, list[Item]]:
    """All 16-class images under ``root``: {"train": [...], "val": [...]}, each sorted by path."""
    root = Path(root)
    _, wnid_to_cat = sixteen_classes()
    _check_train_folder(root)
    train = [
        _item(root, p, wnid, wnid_to_cat)
        for wnid in sorted(wnid_to_cat)
        if (root / "train" / wnid).is_dir()
        for p in _images_in(root / "train" / wnid)
    ]
    if not train:
        raise ImageNetError(
            f"no 16-class ImageNet images under {root / 'train'} (train/<wnid>/*.JPEG)"
        )
    return {
        "train": sorted(train, key=lambda it: it.rel),
        "val": _scan_val(root, val_labels, wnid_to_cat),
    }


# ---------------------------------------------------------------- the paper's lists
@functools.cache
def _paper_rows(name: str) -> tuple[tuple[str, str], ...]:
    """(category, file name) rows of the packaged list ``name``, in file order (sorted)."""
    if name not in PAPER_LISTS:
        raise ValueError(f"no paper list {name!r}; the lists are {', '.join(PAPER_LISTS)}")
    data = resources.files("meanpool").joinpath(f"data/image-lists/{name}.tsv.gz").read_bytes()
    rows = (line.split("\t") for line in gzip.decompress(data).decode("utf-8").splitlines())
    return tuple((cat, file) for cat, file in rows)


@functools.cache
def _paper_items(name: str) -> tuple[Item, ...]:
    label = {cat: i for i, cat in enumerate(_sixteen()[0])}
    items = []
    for cat, file in _paper_rows(name):
        wnid = file.split("_", 1)[0]
        items.append(Item(f"train/{wnid}/{file}", wnid, cat, label[cat]))
    items.sort(key=lambda it: it.rel)
    if name != "train":  # class-mixed, so that the first N of a subset (--limit) span classes
        perm = np.random.default_rng([_PAPER_ORDER_SEED, PAPER_LISTS.index(name)])
        items = [items[i] for i in perm.permutation(len(items))]
    return tuple(items)


def paper_items(name: str) -> list[Item]:
    """Every image of the paper's list ``name`` ("train", "discovery" or "evaluation") as Items
    (``rel`` = ``train/<wnid>/<file>``, the WNID being the file name's prefix), in index order:
    train sorted by path, discovery and evaluation in a fixed class-mixed order."""
    return list(_paper_items(name))


def paper_wnids() -> list[str]:
    """The 202 WNIDs (sorted) of the paper's training list: the ILSVRC-2012 classes that make up
    16-class ImageNet."""
    return sorted({it.wnid for it in _paper_items("train")})


def paper_list_counts() -> dict[str, int]:
    """Images per packaged list, and "training": train minus evaluation (the paper's training set;
    the same numbers as ``PAPER_COUNTS``, counted from the files)."""
    counts = {name: len(_paper_items(name)) for name in PAPER_LISTS}
    held_out = {it.rel for it in _paper_items("evaluation")}
    counts["training"] = sum(it.rel not in held_out for it in _paper_items("train"))
    return counts


def missing_files(name: str, present: Iterable[Item]) -> list[str]:
    """Paths (``train/<wnid>/<file>``) of the paper's list ``name`` that are not in ``present``,
    in index order: what an ``allow_missing`` selection went on without."""
    have = {it.rel for it in present}
    return [it.rel for it in _paper_items(name) if it.rel not in have]


def _folder_names(folder: Path) -> set[str]:
    """File names in ``folder`` (empty if it does not exist), from one directory listing: no
    per-file stat, so checking 213k listed files takes seconds, not minutes."""
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def _listed(root: Path, name: str, cfg: IndexConfig, listing: dict[str, set[str]]) -> list[Item]:
    """The images of list ``name`` present under ``root``; ``listing`` caches folder listings."""
    present, missing = [], []
    for it in _paper_items(name):
        if it.wnid not in listing:
            listing[it.wnid] = _folder_names(root / "train" / it.wnid)
        (present if it.rel.rsplit("/", 1)[1] in listing[it.wnid] else missing).append(it)
    if missing and not cfg.allow_missing:
        examples = ", ".join(it.rel for it in missing[:3])
        raise MissingImagesError(
            f"{len(missing):,} of the {len(_paper_items(name)):,} images of the paper's {name} "
            f"list are missing under {root} (e.g. {examples}); check the ImageNet tree, or pass "
            f"--allow-missing (IndexConfig(allow_missing=True)) to go on without them"
        )
    return present


def _paper_val(root: Path, val_labels: str | Path | None) -> list[Item]:
    _, wnid_to_cat = sixteen_classes()
    return _scan_val(root, val_labels, {w: wnid_to_cat[w] for w in paper_wnids()})


def _paper_index(
    root: Path, cfg: IndexConfig, val_labels: str | Path | None
) -> dict[str, list[Item]]:
    _check_train_folder(root)
    listing: dict[str, set[str]] = {}
    train = _listed(root, "train", cfg, listing)  # first: the superset names the problem best
    return {
        "discovery": _listed(root, "discovery", cfg, listing),
        "evaluation": _listed(root, "evaluation", cfg, listing),
        "train": train,
        "val": _paper_val(root, val_labels),
    }


# ---------------------------------------------------------------- the random draw
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


# ---------------------------------------------------------------- the index
def build_index(
    root: str | Path, cfg: IndexConfig | None = None, val_labels: str | Path | None = None
) -> dict[str, list[Item]]:
    """{"discovery", "evaluation", "train", "val"} -> items (see ``IndexConfig.selection``).

    "random": ``train`` and ``val`` are all of 16-class ImageNet (sorted by path); discovery and
    evaluation are the seeded class-balanced draws from ``train``. "paper": the listed images
    present in the tree (``MissingImagesError`` for absent ones unless ``cfg.allow_missing``;
    ``missing_files`` names them), and the validation images of the 202 listed WNIDs.
    """
    cfg = cfg or IndexConfig()
    if cfg.selection == "paper":
        return _paper_index(Path(root), cfg, val_labels)
    splits = scan(root, val_labels)
    return {**make_subsets(splits["train"], cfg), **splits}


def select(
    root: str | Path,
    subset: str,
    cfg: IndexConfig | None = None,
    val_labels: str | Path | None = None,
) -> list[Item]:
    """The items of one subset, in index order. Only that subset's images are needed: train and
    val need no balanced draw (nor enough images), and a paper subset checks its own list only."""
    cfg = cfg or IndexConfig()
    root = Path(root)
    if cfg.selection == "paper":
        if subset == "val":
            return _paper_val(root, val_labels)
        _check_train_folder(root)
        return _listed(root, subset, cfg, {})
    splits = scan(root, val_labels)
    if subset in splits:
        return splits[subset]
    return make_subsets(splits["train"], cfg)[subset]


def missing_record(index: dict[str, list[Item]], cfg: IndexConfig) -> dict[str, Any]:
    """{list name: {"listed", "count", "files"}} of the listed images an index went without
    ({} for a random draw, which lists nothing)."""
    if cfg.selection != "paper":
        return {}
    record = {}
    for name in PAPER_LISTS:
        files = missing_files(name, index.get(name, []))
        record[name] = {"listed": len(_paper_items(name)), "count": len(files), "files": files}
    return record


def index_record(
    index: dict[str, list[Item]], cfg: IndexConfig, root: str | Path
) -> dict[str, Any]:
    """A JSON-ready record of an index (what ``meanpool index`` writes): settings, label order,
    counts per subset, what was missing from the paper's lists, and every subset's images."""
    order, _ = sixteen_classes()
    return {
        "imagenet_dir": str(Path(root).resolve()),
        "config": to_dict(cfg),
        "selection": cfg.selection,
        "label_order": order,
        "counts": {name: len(items) for name, items in index.items()},
        "missing": missing_record(index, cfg),
        "subsets": {
            name: [
                {"path": it.rel, "wnid": it.wnid, "category": it.category, "label": it.label}
                for it in items
            ]
            for name, items in index.items()
        },
    }
