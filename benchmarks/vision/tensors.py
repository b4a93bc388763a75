"""Images decoded once and held as one uint8 tensor, augmented and normalised a batch at a time:
the synthetic world's fast path (its images are small and already the models' size, so decoding
and transforming them one by one in PIL cost more than training on them: 66% of a mini ResNet
run before). A :class:`ImageTensors` behaves as the file and pooled datasets do (items, labels,
sources), and also gives ``fit`` its epochs and evaluation its batches directly
(:func:`benchmarks.vision.data.epoch_loader` and :func:`~benchmarks.vision.data.in_order` ask for
them), with DistributedSampler's order and drop-last rule.

It applies only where the per-image transforms are exact no-ops but for augmentation and
normalisation (:func:`supports`): images of the architecture's size, a preprocessing that
neither resizes nor crops them, and the "pad" or "none" training crop. The augmentation draws
from the global torch generator when the batch is drawn, so ``fit``'s resume replays it.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from benchmarks.vision.data import FileImages, PooledImages
from benchmarks.vision.models import VisionArch


def supports(arch: VisionArch, image_size: int) -> bool:
    """Whether images of ``image_size`` px go through ``arch``'s transforms as a normalisation
    and (training) a "pad" or "none" augmentation only."""
    p = arch.resolved_preprocessing
    same = p.resize in (image_size, (image_size, image_size)) and p.crop in (None, image_size)
    return same and arch.image_size == image_size and arch.train_crop in ("pad", "none")


@dataclass(frozen=True)
class Augment:
    """The "pad" training crop (reflect-pad by ``pad`` px, a random crop back to the size) and
    a horizontal flip with probability 1/2, on a uint8 batch (B, 3, S, S)."""

    pad: int  # 0: no crop ("none")
    flip: bool

    @classmethod
    def of(cls, arch: VisionArch) -> Augment:
        pad = max(1, arch.image_size // 16) if arch.train_crop == "pad" else 0
        return cls(pad, arch.train_flip)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, s, _ = x.shape
        if self.pad:
            p = self.pad
            padded = torch.nn.functional.pad(x.float(), (p, p, p, p), mode="reflect")
            dy, dx = torch.randint(0, 2 * p + 1, (2, b)).tolist()
            x = torch.stack([padded[i, :, dy[i] : dy[i] + s, dx[i] : dx[i] + s] for i in range(b)])
            x = x.round().to(torch.uint8)
        if self.flip:
            flip = torch.rand(b) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        return x


class ImageTensors(Dataset):
    """``images`` uint8 (N, 3, S, S) and ``labels`` (N,) int64, normalised with ``mean``/``std``
    (per RGB channel, on values in [0, 1]) and, for training, augmented by ``augment``.
    ``sources``: each image's original path, as :class:`PooledImages` has them."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Augment | None = None,
        sources: list[str] | None = None,
    ) -> None:
        assert images.dtype == torch.uint8 and images.ndim == 4 and len(images) == len(labels)
        self.images, self.label_tensor, self.augment = images, labels, augment
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.sources = sources or []

    def __len__(self) -> int:
        return len(self.label_tensor)

    @property
    def labels(self) -> list[int]:
        return self.label_tensor.tolist()

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` as model input (B, 3, S, S) float32, and their labels."""
        x = self.images[idx]
        if self.augment is not None:
            x = self.augment(x)
        # as ToTensor then Normalize: x / 255, then (x - mean) / std
        return (x.float().div(255) - self.mean) / self.std, self.label_tensor[idx]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.batch(torch.tensor([i]))
        return x[0], int(y[0])

    def normalised(
        self, mean: Sequence[float], std: Sequence[float], augment: Augment | None = None
    ) -> ImageTensors:
        """The same images (shared) under another normalisation and augmentation."""
        return ImageTensors(self.images, self.label_tensor, mean, std, augment, self.sources)

    def with_augment(self, augment: Augment | None) -> ImageTensors:
        """The same images (shared) with another augmentation (None: evaluation)."""
        other = copy.copy(self)
        other.augment = augment
        return other

    def concat(self, other: ImageTensors) -> ImageTensors:
        """Both sets, ``self``'s images first (this one's normalisation and augmentation)."""
        out = copy.copy(self)
        out.images = torch.cat([self.images, other.images])
        out.label_tensor = torch.cat([self.label_tensor, other.label_tensor])
        out.sources = self.sources + other.sources
        return out

    def epoch_batches(self, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> Epochs:
        return Epochs(self, batch_size, seed, rank, world)

    def in_order(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            yield self.batch(torch.arange(start, min(start + batch_size, len(self))))


class Epochs:
    """``epoch -> batches`` for ``fit``, with ``torch.utils.data.DistributedSampler``'s order
    (a permutation seeded by seed + epoch, padded to a multiple of ``world``, every world-th
    index from ``rank``) and ``benchmarks.vision.data.epoch_loader``'s drop-last rule."""

    def __init__(self, data: ImageTensors, batch_size: int, seed: int, rank: int, world: int):
        self.data, self.batch_size, self.seed, self.rank, self.world = (
            data, batch_size, seed, rank, world
        )  # fmt: skip
        n = len(data)
        self.per_rank = -(-n // world)
        self.drop_last = n // world >= batch_size

    def indices(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.data), generator=g)
        total = self.per_rank * self.world
        if total > len(order):  # padded with the first indices, as DistributedSampler
            order = torch.cat([order, order[: total - len(order)]])
        return order[self.rank : total : self.world]

    def __call__(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.indices(epoch)
        for start in range(0, len(idx), self.batch_size):
            chunk = idx[start : start + self.batch_size]
            if self.drop_last and len(chunk) < self.batch_size:
                return
            yield self.data.batch(chunk)

    def __len__(self) -> int:
        full, rest = divmod(self.per_rank, self.batch_size)
        return full + (0 if self.drop_last or not rest else 1)


def _decode(data: bytes | Path) -> np.ndarray:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
        return np.asarray(img.convert("RGB"))


def from_files(images: FileImages, arch: VisionArch, train: bool) -> ImageTensors:
    """A :class:`FileImages` dataset decoded once (its own transform dropped: see
    :func:`supports`); ``train``: with ``arch``'s augmentation."""
    arrays = [_decode(images.root / rel) for rel, _ in images.items]
    return _tensors(arrays, images.labels, arch, train, [rel for rel, _ in images.items])


def from_pooled(images: PooledImages, arch: VisionArch, train: bool) -> ImageTensors:
    """A :class:`PooledImages` dataset's JPEG bytes decoded once."""
    arrays = [_decode(b) for b in images.encoded]
    return _tensors(arrays, images.labels, arch, train, list(images.sources))


def _tensors(
    arrays: list[np.ndarray], labels: list[int], arch: VisionArch, train: bool, sources: list[str]
) -> ImageTensors:
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    p = arch.resolved_preprocessing
    return ImageTensors(x, torch.tensor(labels, dtype=torch.long), p.mean, p.std,
                        Augment.of(arch) if train else None, sources)  # fmt: skip
