"""JPEG bytes decoded on the run's device and transformed as tensors there: the option
(``image_decoding="device"``) that takes ImageNet's JPEG decoding and the released training
transform off the CPU cores, which docs/reproduce-table1.md's projection needs at ~16 cores per
GPU otherwise.

The tensor transform is the released one (benchmarks.vision.data.released_train_transform:
ToTensor, Resize(256) bilinear without antialiasing, RandomHorizontalFlip, RandomCrop(224),
ImageNet normalisation) step for step, drawing its flips and crops from the global torch
generator in the same order, so on the same decoded pixels it gives the same tensors; decoding
is ``torchvision.io.decode_jpeg`` (libjpeg-turbo on the CPU, nvJPEG on CUDA).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import functional as TF

from benchmarks.vision.data import RELEASED_SIZE, FileImages, PooledImages
from benchmarks.vision.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD

IMAGE_DECODINGS = ("pil", "device")


class EncodedImages(Dataset):
    """Images as their encoded bytes: item i -> (uint8 1-D tensor of the JPEG file, label), read
    from files (a :class:`FileImages` set's items) or held in memory (a :class:`PooledImages`
    set's)."""

    def __init__(self, root: Path | None, rels: Sequence[str], blobs: Sequence[bytes] | None,
                 labels: Sequence[int]) -> None:  # fmt: skip
        self.root, self.rels, self.blobs = root, list(rels), blobs
        self._labels = [int(y) for y in labels]

    @classmethod
    def of(cls, dataset: Dataset) -> EncodedImages:
        """The encoded form of a file or pooled dataset (ConcatDataset parts concatenated)."""
        if isinstance(dataset, FileImages):
            return cls(dataset.root, [r for r, _ in dataset.items], None, dataset.labels)
        if isinstance(dataset, PooledImages):
            return cls(None, list(dataset.sources), dataset.encoded, dataset.labels)
        parts = [cls.of(d) for d in getattr(dataset, "datasets", [])]
        if not parts:
            raise TypeError(f"cannot read {type(dataset).__name__} as encoded images")
        blobs = [parts[i].read(j) for i in range(len(parts)) for j in range(len(parts[i]))]
        return cls(None, [r for p in parts for r in p.rels], blobs,
                   [y for p in parts for y in p.labels])  # fmt: skip

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> list[int]:
        return self._labels

    def read(self, i: int) -> bytes:
        if self.blobs is not None:
            return self.blobs[i]
        return (Path(self.root) / self.rels[i]).read_bytes()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        data = torch.frombuffer(bytearray(self.read(i)), dtype=torch.uint8)
        return data, self._labels[i]


def encoded_batch(items: list[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """DataLoader ``collate_fn``: (the encoded images as a list, labels (B,))."""
    return [x for x, _ in items], torch.tensor([y for _, y in items])


def released_train_tensor(image: torch.Tensor) -> torch.Tensor:
    """The released training transform on a decoded uint8 (3, H, W) image (any device): its
    ToTensor, Resize(256), flip and crop draws and normalisation, in that order."""
    x = image.float().div(255)  # ToTensor
    x = TF.resize(x, 256, interpolation=T.InterpolationMode.BILINEAR, antialias=False)
    if torch.rand(1) < 0.5:  # RandomHorizontalFlip's draw
        x = TF.hflip(x)
    i, j, h, w = T.RandomCrop.get_params(x, (RELEASED_SIZE, RELEASED_SIZE))
    x = TF.crop(x, i, j, h, w)
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def decode_batch(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """uint8 (3, H, W) RGB images on ``device`` from JPEG bytes (nvJPEG on CUDA, in one call)."""
    if device.type == "cuda":
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    return [decode_jpeg(e, mode=ImageReadMode.RGB) for e in encoded]


class DeviceDecoded:
    """``epoch -> batches`` of decoded, transformed images on ``device``, from ``epochs`` (an
    ``epoch -> batches`` of encoded images: :func:`encoded_batch`). ``len()``: its batches."""

    def __init__(self, epochs: Callable[[int], Any], device: torch.device,
                 transform: Callable[[torch.Tensor], torch.Tensor] = released_train_tensor):  # fmt: skip
        self.epochs, self.device, self.transform = epochs, device, transform

    def __call__(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for encoded, y in self.epochs(epoch):
            images = decode_batch(encoded, self.device)
            yield torch.stack([self.transform(x) for x in images]), y

    def __len__(self) -> int:
        return len(self.epochs)
