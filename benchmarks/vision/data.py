"""Images as a model sees them: transforms (each weight source's preprocessing, the training
augmentations), datasets (image files; meanpool shards held in memory), loaders, and the image
sets of one run (training, evaluation, pooled: evaluation images never trained on)."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Iterable, Sequence
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
from benchmarks.vision.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS
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


# ------------------------------------------------------------------------------ released transforms
# The released transfer code's transforms (vision_transfer.py:123-134; cue-conflict:
# geirhos_cue_conflict_eval.py:65-68), for every model, the ViT included: the image becomes a
# tensor first, so Resize(256) is bilinear without antialiasing (torchvision 0.14 on tensors),
# and the normalisation is ImageNet's whatever the weights were trained with.
TRANSFER_TRANSFORMS = ("released", "source")
RELEASED_SIZE = 224  # the released transforms give 224 px images


def _released(*steps: Callable) -> Transform:
    resize = T.Resize(256, interpolation=T.InterpolationMode.BILINEAR, antialias=False)
    return T.Compose([T.Lambda(_rgb), T.ToTensor(), resize, *steps,
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])  # fmt: skip


def released_train_transform() -> Transform:
    """PIL image -> (3, 224, 224): ToTensor, Resize(256), RandomHorizontalFlip, RandomCrop(224),
    ImageNet normalisation (the released transfer training)."""
    return _released(T.RandomHorizontalFlip(), T.RandomCrop(RELEASED_SIZE))


def released_eval_transform() -> Transform:
    """PIL image -> (3, 224, 224): ToTensor, Resize(256), CenterCrop(224), ImageNet
    normalisation (the released evaluation on original and pooled images)."""
    return _released(T.CenterCrop(RELEASED_SIZE))


def released_cue_transform() -> Transform:
    """PIL image -> (3, 224, 224): ToTensor, Resize(224), CenterCrop(224), ImageNet
    normalisation (the released cue-conflict evaluation)."""
    resize = T.Resize(RELEASED_SIZE, interpolation=T.InterpolationMode.BILINEAR, antialias=False)
    return T.Compose([T.Lambda(_rgb), T.ToTensor(), resize, T.CenterCrop(RELEASED_SIZE),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])  # fmt: skip


@dataclass(frozen=True)
class Transforms:
    """The transforms of one model's transfer stage: training, evaluation (original and pooled
    images, the curves) and the cue-conflict stimuli."""

    train: Transform
    eval: Transform
    cue_conflict: Transform


def transfer_transforms(arch: VisionArch, which: str) -> Transforms:
    """``which``: "released" (the released code's, for every model) or "source" (``arch``'s:
    its weight source's preprocessing and its training crop)."""
    if which == "released":
        return Transforms(released_train_transform(), released_eval_transform(),
                          released_cue_transform())  # fmt: skip
    if which != "source":
        raise ValueError(f"unknown transfer_transforms {which!r}; use released or source")
    return Transforms(train_transform(arch), eval_transform(arch), eval_transform(arch))


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
        # the local cache only: nothing downloads behind the user's back
        for s in read_samples(folder, cache_dir, local_only=True):
            self._jpgs.append(s["jpg"])
            self.labels.append(int(s["cls"]))
            self.sources.append(json.loads(s["json"])["source"])
        if not self._jpgs:
            raise ValueError(f"{folder} holds no samples; rebuild it with `meanpool build`")

    def __len__(self) -> int:
        return len(self._jpgs)

    @property
    def encoded(self) -> list[bytes]:
        """Each image's JPEG bytes, in dataset order."""
        return self._jpgs

    def subset(self, rels: Sequence[str]) -> PooledImages:
        """The images whose source is in ``rels``, in that order (bytes shared). KeyError for a
        source the build does not hold."""
        where = {r: i for i, r in enumerate(self.sources)}
        idx = [where[r] for r in rels]
        other = copy.copy(self)
        other._jpgs = [self._jpgs[i] for i in idx]
        other.labels = [self.labels[i] for i in idx]
        other.sources = [self.sources[i] for i in idx]
        return other

    def with_transform(self, transform: Transform | None) -> PooledImages:
        """The same images (their bytes shared, not read again) under another transform."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = Image.open(io.BytesIO(self._jpgs[i])).convert("RGB")
        return (self.transform(img) if self.transform else img), self.labels[i]


def epoch_loader(
    dataset: Dataset, batch_size: int, seed: int, workers: int, rank: int = 0, world: int = 1,
    collate: Callable[[list[Any]], Any] | None = None,
) -> Callable[[int], Any]:  # fmt: skip
    """``epoch -> batches`` for :func:`subind.train.fit` (``len()``: batches per epoch): epoch
    e's order is a function of (seed, e) alone (DistributedSampler's rule), so a resumed run
    sees the same batches; each rank gets its own share. The last short batch is dropped when a
    rank has a full one. A dataset that makes its own epochs (``epoch_batches``: images held as
    tensors, benchmarks.vision.tensors) makes them."""
    if hasattr(dataset, "epoch_batches"):
        return dataset.epoch_batches(batch_size, seed, rank, world)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=len(dataset) // world >= batch_size,
        persistent_workers=workers > 0,
        collate_fn=collate,
    )
    return LoaderEpochs(loader)


def in_order(dataset: Dataset, batch_size: int, workers: int = 0) -> Iterable[Any]:
    """Batches of ``dataset`` in its order (evaluation, feature extraction); a dataset that
    batches itself (``in_order``) does."""
    if hasattr(dataset, "in_order"):
        return dataset.in_order(batch_size)
    return DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, pin_memory=torch.cuda.is_available()
    )


# ------------------------------------------------------------------------------ a run's image sets
@dataclass
class ImageSets:
    """The image sets of one model. Stages 2-3 (adaptation, discovery) see images through the
    model's own preprocessing (``source_*``, ``pooled_discovery``); the strategies' training and
    curves through the transfer transforms (``transfer_transforms``). Training items exclude the
    evaluation subset; validation items are ImageNet's val split."""

    train: Dataset  # original 16-class train images minus the evaluation subset (transfer)
    evaluation: Dataset  # the evaluation subset, originals (strategies' selection, Figure 5)
    val: Dataset  # ImageNet's val split, originals (selection on val: select_on)
    pooled_evaluation: Dataset  # its pooled versions (Figure 5's pooled curve; never trained on)
    pooled_training: Dataset  # the pooled discovery images under the training transform
    source_evaluation: Dataset  # the evaluation subset, the model's preprocessing (adaptation)
    source_pooled_evaluation: Dataset  # its pooled versions (discovery's selection)
    pooled_discovery: Dataset  # augmented or not, as discovery_augment says
    root: Path
    train_items: list[Item]
    discovery_items: list[Item]  # the discovery subset, original images (adaptation)
    evaluation_items: list[Item]
    val_items: list[Item]
    # (items, train) -> those originals under the model's own preprocessing (adaptation, its
    # selection), augmented when ``train``
    originals: Callable[[Sequence[Item], bool], Dataset]


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
    transfer: Transforms,
) -> ImageSets:
    """The image sets of ``arch`` from the run's ``index`` of the ImageNet tree at ``root`` and
    its ``pooled`` "discovery" and "evaluation" builds (loaded once per run, shared here),
    checked: the pooled evaluation build holds exactly the index's evaluation images, none of
    which is trained on. ``augment_discovery``: discovery sees the training augmentation (else
    the evaluation transform); ``transfer``: the strategies' transforms."""
    train, evaluation, val = split_items(index)
    pooled_eval = pooled["evaluation"]
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
            f"{len(pooled_eval.sources)} images, not the {len(want)} of this index (selection "
            f"{index_config.selection}{how}); build it with the same `meanpool index` settings"
        )
    trained = {it.rel for it in train} | set(pooled["discovery"].sources)
    leaked = trained & set(pooled_eval.sources)
    assert not leaked, f"evaluation images in the training set: {sorted(leaked)[:3]}"
    source_eval = eval_transform(arch)
    discovery_transform = train_transform(arch) if augment_discovery else source_eval

    def originals(items: Sequence[Item], transform: Transform) -> FileImages:
        return FileImages(root, [(it.rel, it.label) for it in items], transform)

    def source_originals(items: Sequence[Item], train: bool) -> FileImages:
        return originals(items, train_transform(arch) if train else source_eval)

    return ImageSets(
        train=originals(train, transfer.train),
        evaluation=originals(evaluation, transfer.eval),
        val=originals(val, transfer.eval),
        pooled_evaluation=pooled_eval.with_transform(transfer.eval),
        pooled_training=pooled["discovery"].with_transform(transfer.train),
        source_evaluation=originals(evaluation, source_eval),
        source_pooled_evaluation=pooled_eval.with_transform(source_eval),
        pooled_discovery=pooled["discovery"].with_transform(discovery_transform),
        root=root,
        train_items=train,
        discovery_items=list(index["discovery"]),
        evaluation_items=evaluation,
        val_items=val,
        originals=source_originals,
    )


def training_set(data: ImageSets, pooled_in_training: bool) -> Dataset:
    """The original training images, plus (data mixture) the pooled discovery images, really
    added to the stream. Never the pooled evaluation images: Figure 5's pooled curve and every
    pooled selection are measured on them."""
    if not pooled_in_training:
        return data.train
    if hasattr(data.train, "concat"):  # images held as tensors: one tensor set
        return data.train.concat(data.pooled_training)
    return ConcatDataset([data.train, data.pooled_training])
