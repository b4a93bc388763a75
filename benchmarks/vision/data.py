"""Images as a model sees them: transforms (each weight source's preprocessing, the training
augmentations), datasets (image files; meanpool shards held in memory), loaders, and the image
sets of one run (training, evaluation, pooled: evaluation images never trained on)."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from benchmarks.harness import StageError
from benchmarks.vision.models import TRAIN_CROPS, Preprocessing, VisionArch
from benchmarks.vision.models.preprocessing import INTERPOLATIONS
from meanpool.config import IndexConfig
from meanpool.imagenet import Item
from meanpool.loader import read_samples
from subind.train import LoaderEpochs

Transform = Callable[[Image.Image], Any]

_MODES = {name: T.InterpolationMode(name) for name in INTERPOLATIONS}


def _rgb(img: Image.Image) -> Image.Image:
    # ImageNet holds grayscale and CMYK JPEGs; cue-conflict PNGs may carry alpha.
    return img if img.mode == "RGB" else img.convert("RGB")


class _FloorCentreCrop:
    """Centre crop whose offset rounds down, (H - size) // 2, as transformers' image processors
    (torchvision's CenterCrop rounds half to even: one pixel apart when H - size = 3 mod 4)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        return TF.crop(img, (h - self.size) // 2, (w - self.size) // 2, self.size, self.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


def _resize(p: Preprocessing, size: int | tuple[int, int] | None) -> list[Callable]:
    if size is None:
        return []
    return [T.Resize(size, interpolation=_MODES[p.interpolation], antialias=True)]


def _centre_crop(p: Preprocessing, size: int | None) -> list[Callable]:
    if size is None:
        return []
    return [T.CenterCrop(size) if p.crop_rounding == "round" else _FloorCentreCrop(size)]


def _to_input(p: Preprocessing) -> list[Callable]:
    return [T.ToTensor(), T.Normalize(p.mean, p.std)]


def eval_transform(arch: VisionArch) -> Transform:
    """PIL image -> (3, S, S) float32 per ``arch.resolved_preprocessing`` (S = its size): by
    default shorter side resized to round(image_size * resize_ratio) px (bilinear, antialiased),
    centre crop of image_size px, ImageNet mean/std."""
    p = arch.resolved_preprocessing
    return T.Compose(
        [T.Lambda(_rgb), *_resize(p, p.resize), *_centre_crop(p, p.crop), *_to_input(p)]
    )


def train_transform(arch: VisionArch) -> Transform:
    """PIL image -> (3, S, S) float32, normalised as ``arch.resolved_preprocessing`` (mean, std,
    interpolation), randomly augmented per ``arch.train_crop`` and ``arch.train_flip`` (random
    draws come from the torch generator of the loading process). S = ``arch.image_size``.

    Crops: "random-resized" (RandomResizedCrop(S), torchvision's ImageNet recipe), "pad" (resize
    to S, a random S crop after reflect-padding by S // 16 px), "none" (the evaluation resize and
    centre crop), "resize-crop" (the evaluation resize, then RandomCrop(S): the released ResNet
    transfer recipe, Resize(256) + RandomCrop(224) for S = 224).
    """
    S, p = arch.image_size, arch.resolved_preprocessing
    steps: list[Callable] = [T.Lambda(_rgb)]
    if arch.train_crop == "random-resized":
        steps.append(T.RandomResizedCrop(S, interpolation=_MODES[p.interpolation], antialias=True))
    elif arch.train_crop == "pad":
        steps += [
            *_resize(p, S),
            T.CenterCrop(S),
            T.RandomCrop(S, padding=max(1, S // 16), padding_mode="reflect"),
        ]
    elif arch.train_crop == "none":
        steps += [*_resize(p, p.resize), *_centre_crop(p, p.crop)]
    elif arch.train_crop == "resize-crop":
        steps += [*_resize(p, p.resize), T.RandomCrop(S)]
    else:
        raise ValueError(
            f"unknown train_crop {arch.train_crop!r}; use one of {', '.join(TRAIN_CROPS)}"
        )
    if arch.train_flip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + _to_input(p))


class FileImages(Dataset):
    """Images on disk: item i -> (transform(image), label); without a transform the RGB PIL image.

    ``items``: (path relative to ``root``, integer label) pairs.
    """

    def __init__(
        self, root: str | Path, items: Sequence[tuple[str, int]], transform: Transform | None
    ) -> None:
        self.root = Path(root)
        self.items = [(str(p), int(y)) for p, y in items]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [y for _, y in self.items]

    def __getitem__(self, i: int) -> tuple[Any, int]:
        rel, label = self.items[i]
        with Image.open(self.root / rel) as img:
            img = _rgb(img)
            img.load()
        return (self.transform(img) if self.transform else img), label


class PooledImages(Dataset):
    """One subset of a meanpool build, its JPEG bytes held in memory and decoded on access.

    ``source``: a folder with one meanpool build per subset (``<source>/<subset>/manifest.json``)
    or ``hf://datasets/ORG/NAME[@REV]`` whose subfolder ``<subset>`` is such a build. Item i ->
    (transform(image), 16-class label). ``sources`` lists each sample's original image path
    (relative to the ImageNet folder; for disjointness checks) and ``labels`` the labels, in the
    order of the shards in the manifest. ``cache_dir``: the Hugging Face cache for ``hf://``.
    """

    def __init__(
        self,
        source: str | Path,
        subset: str,
        transform: Transform | None,
        cache_dir: str | None = None,
    ) -> None:
        loc = f"{str(source).rstrip('/')}/{subset}" if str(source).startswith("hf://") else None
        folder = loc or Path(source) / subset
        if loc is None and not (Path(folder) / "manifest.json").is_file():
            raise FileNotFoundError(
                f"{folder} has no manifest.json; --pooled must be a folder holding one finished "
                f"meanpool build per subset (<pooled>/{subset}/manifest.json)"
            )
        self.source, self.transform = str(source), transform
        self._jpgs: list[bytes] = []
        self.labels: list[int] = []
        self.sources: list[str] = []
        for s in read_samples(folder, cache_dir):
            self._jpgs.append(s["jpg"])
            self.labels.append(int(s["cls"]))
            self.sources.append(json.loads(s["json"])["source"])
        if not self._jpgs:
            raise ValueError(f"{folder} holds no samples; rebuild it with `meanpool build`")

    def __len__(self) -> int:
        return len(self._jpgs)

    def with_transform(self, transform: Transform | None) -> PooledImages:
        """The same images (their bytes shared, not read again) under another transform."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = Image.open(io.BytesIO(self._jpgs[i])).convert("RGB")
        return (self.transform(img) if self.transform else img), self.labels[i]


def epoch_loader(
    dataset: Dataset, batch_size: int, seed: int, workers: int, rank: int = 0, world: int = 1
) -> LoaderEpochs:
    """``epoch -> batches`` for :func:`subind.train.fit`: epoch e's order is a function of
    (seed, e) alone (DistributedSampler's rule), so a resumed run sees the same batches; each
    rank gets its own share. The last short batch is dropped when a rank has a full one."""
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=len(dataset) // world >= batch_size,
        persistent_workers=workers > 0,
    )
    return LoaderEpochs(loader)


def in_order(dataset: Dataset, batch_size: int, workers: int = 0) -> DataLoader:
    """Batches of ``dataset`` in its order (evaluation, feature extraction)."""
    return DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, pin_memory=torch.cuda.is_available()
    )


# ------------------------------------------------------------------------------ a run's image sets
@dataclass
class ImageSets:
    """The image sets of one architecture (its transforms): training items exclude the
    evaluation subset; validation items are ImageNet's val split."""

    train: Dataset  # original 16-class train images minus the evaluation subset
    evaluation: Dataset  # the evaluation subset, original images (model selection, Figure 5)
    pooled_discovery: Dataset  # augmented or not, as discovery_augment says
    pooled_evaluation: Dataset
    root: Path
    train_items: list[Item]
    discovery_items: list[Item]  # the discovery subset, original images (adaptation)
    evaluation_items: list[Item]
    val_items: list[Item]


def split_items(index: dict[str, list[Item]]) -> tuple[list[Item], list[Item], list[Item]]:
    """(train, evaluation, val) items: every 16-class train image except the evaluation subset,
    de-duplicated by path; raises StageError if any evaluation or val image would be trained on."""
    held_out = {it.rel for it in index["evaluation"]}
    seen: set[str] = set()
    train = []
    for it in index["train"]:
        if it.rel not in held_out and it.rel not in seen:
            seen.add(it.rel)
            train.append(it)
    val_rels = {it.rel for it in index["val"]}
    leaked = (seen & held_out) | (seen & val_rels)
    if leaked:
        raise StageError(f"{len(leaked)} evaluation/val images are in the training set, e.g. "
                         f"{sorted(leaked)[0]}; check the ImageNet layout")  # fmt: skip
    return train, list(index["evaluation"]), list(index["val"])


def image_sets(
    arch: VisionArch,
    root: Path,
    index: dict[str, list[Item]],
    pooled: dict[str, PooledImages],
    index_config: IndexConfig,
    augment_discovery: bool,
) -> ImageSets:
    """The image sets of ``arch`` (its transforms) from the run's ``index`` of the ImageNet tree
    at ``root`` and its ``pooled`` "discovery" and "evaluation" builds (loaded once per run,
    shared here), checked: the pooled evaluation build holds exactly the index's evaluation
    images, none of which is trained on. ``augment_discovery``: discovery sees the training
    augmentation (else the evaluation transform)."""
    train, evaluation, val = split_items(index)
    pooled_eval = pooled["evaluation"].with_transform(eval_transform(arch))
    want = {it.rel for it in evaluation}
    if set(pooled_eval.sources) != want:
        how = (
            ""
            if index_config.selection == "paper"
            else f", discovery/evaluation per class {index_config.discovery_per_class}/"
            f"{index_config.evaluation_per_class}, seed {index_config.seed}"
        )
        raise StageError(
            f"the pooled evaluation subset in {pooled_eval.source} holds "
            f"{len(pooled_eval.sources)} images, not the "
            f"{len(want)} of this index (selection {index_config.selection}{how}); build it with "
            "the same `meanpool index` settings"
        )
    leaked = {it.rel for it in train} & set(pooled_eval.sources)
    assert not leaked, f"evaluation images in the training set: {sorted(leaked)[:3]}"
    discovery_transform = train_transform(arch) if augment_discovery else eval_transform(arch)
    return ImageSets(
        train=FileImages(root, [(it.rel, it.label) for it in train], train_transform(arch)),
        evaluation=FileImages(
            root, [(it.rel, it.label) for it in evaluation], eval_transform(arch)
        ),
        pooled_discovery=pooled["discovery"].with_transform(discovery_transform),
        pooled_evaluation=pooled_eval,
        root=root,
        train_items=train,
        discovery_items=list(index["discovery"]),
        evaluation_items=evaluation,
        val_items=val,
    )


def training_set(data: ImageSets, pooled_in_training: bool) -> Dataset:
    """The original training images, plus (data mixture) the pooled discovery and evaluation
    images, really added to the stream."""
    if not pooled_in_training:
        return data.train
    return ConcatDataset([data.train, data.pooled_discovery, data.pooled_evaluation])
