"""Image transforms, datasets (image files; meanpool shards held in memory) and a seeded loader."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import transforms as T

from subind.vision.models import VisionArch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[[Image.Image], Any]


def _rgb(img: Image.Image) -> Image.Image:
    # ImageNet holds grayscale and CMYK JPEGs; cue-conflict PNGs may carry alpha.
    return img if img.mode == "RGB" else img.convert("RGB")


def eval_transform(arch: VisionArch) -> Transform:
    """PIL image -> (3, S, S) float32 normalised with the ImageNet mean/std (S = image_size):
    shorter side resized to round(S * resize_ratio) px (bilinear, antialiased), centre crop."""
    return T.Compose(
        [
            T.Lambda(_rgb),
            T.Resize(round(arch.image_size * arch.resize_ratio), antialias=True),
            T.CenterCrop(arch.image_size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def train_transform(arch: VisionArch) -> Transform:
    """PIL image -> (3, S, S) float32, normalised, randomly augmented per ``arch.train_crop`` and
    ``arch.train_flip`` (random draws come from the torch generator of the loading process)."""
    S = arch.image_size
    steps: list[Callable] = [T.Lambda(_rgb)]
    if arch.train_crop == "random-resized":
        steps.append(T.RandomResizedCrop(S, antialias=True))
    elif arch.train_crop == "pad":
        steps += [
            T.Resize(S, antialias=True),
            T.CenterCrop(S),
            T.RandomCrop(S, padding=max(1, S // 16), padding_mode="reflect"),
        ]
    elif arch.train_crop == "none":
        steps += [T.Resize(round(S * arch.resize_ratio), antialias=True), T.CenterCrop(S)]
    else:
        raise ValueError(
            f"unknown train_crop {arch.train_crop!r}; use 'random-resized', 'pad' or 'none'"
        )
    if arch.train_flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


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
        from meanpool.loader import _samples, shard_urls

        loc = f"{str(source).rstrip('/')}/{subset}" if str(source).startswith("hf://") else None
        folder = loc or Path(source) / subset
        if loc is None and not (Path(folder) / "manifest.json").is_file():
            raise FileNotFoundError(
                f"{folder} has no manifest.json; --pooled must be a folder holding one finished "
                f"meanpool build per subset (<pooled>/{subset}/manifest.json)"
            )
        self.transform = transform
        self._jpgs: list[bytes] = []
        self.labels: list[int] = []
        self.sources: list[str] = []
        urls = shard_urls(folder, cache_dir)
        for s in _samples(({"url": u} for u in urls), cache_dir):
            self._jpgs.append(s["jpg"])
            self.labels.append(int(s["cls"]))
            self.sources.append(json.loads(s["json"])["source"])
        if not self._jpgs:
            raise ValueError(f"{folder} holds no samples; rebuild it with `meanpool build`")

    def __len__(self) -> int:
        return len(self._jpgs)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = Image.open(io.BytesIO(self._jpgs[i])).convert("RGB")
        return (self.transform(img) if self.transform else img), self.labels[i]


class _EpochLoader(DataLoader):
    """A DataLoader whose DistributedSampler moves to the next epoch each time it is iterated
    (``set_epoch`` sets the next one explicitly, e.g. after a resume)."""

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = epoch

    def __iter__(self):
        epoch = getattr(self, "_next_epoch", 0)
        self.sampler.set_epoch(epoch)
        self._next_epoch = epoch + 1
        return super().__iter__()


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset`` whose order depends only on (seed, epoch): epoch e is the
    permutation seeded by seed + e (DistributedSampler's rule), so a resumed run can replay it
    with ``loader.set_epoch(e)``. Under torch.distributed with world size > 1 each rank gets its
    slice of that permutation (padded to equal length). Worker augmentation seeds come from a
    generator seeded by ``seed``."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    world = torch.distributed.get_world_size() if distributed else 1
    rank = torch.distributed.get_rank() if distributed else 0
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
    return _EpochLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
    )
