"""The mini preset's "ImageNet pretraining": a fresh model trained on the synthetic world's
pretraining set (:mod:`benchmarks.vision.toyworld.world`), so that it starts texture-biased as
ImageNet models do; its weights are then what the paper preset's pretrained weights are."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.vision.models import VisionArch
from benchmarks.vision.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from benchmarks.vision.toyworld.world import ToyWorldError, World
from subind.io import save_state_dict, write_json_atomic
from subind.provenance import provenance
from subind.train import TrainConfig, fit


@dataclass(frozen=True)
class PretrainConfig:
    """AdamW training of a fresh model on the world's pretraining set (``subind.train.fit``)."""

    epochs: int = 6
    lr: float = 2e-3
    weight_decay: float = 0.05
    batch_size: int = 128
    holdout_per_class: int = 10  # held out of training; model selection on them
    seed: int = 0


def _load_images(folder: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``<folder>/<wnid>/*.png`` as (N, 3, H, W) uint8 and (N,) labels = index in classes."""
    images, labels = [], []
    for label, wnid in enumerate(classes):
        for path in sorted((folder / wnid).glob("*.png")):
            with Image.open(path) as img:
                images.append(np.asarray(img.convert("RGB")))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 normalised as the eval transform does (ImageNet mean/std)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def _augment(x: torch.Tensor, arch: VisionArch, g: torch.Generator) -> torch.Tensor:
    """The mini train transform on a uint8 batch (B, 3, S, S): a random crop after reflect
    padding by S // 16 px (``train_crop == "pad"``; other crops are not applied) and a random
    horizontal flip (``train_flip``)."""
    b, _, s, _ = x.shape
    if arch.train_crop == "pad":
        p = max(1, s // 16)
        padded = torch.nn.functional.pad(x.float(), (p, p, p, p), mode="reflect").to(x.dtype)
        dx, dy = torch.randint(0, 2 * p + 1, (2, b), generator=g).tolist()
        x = torch.stack([padded[i, :, dy[i] : dy[i] + s, dx[i] : dx[i] + s] for i in range(b)])
    if arch.train_flip:
        flip = torch.rand(b, generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    return x


def _is_cnn(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def pretrain(
    arch: VisionArch,
    world: World,
    cfg: PretrainConfig,
    out: str | Path,
    progress: bool = True,
    monitor: Callable[[torch.nn.Module], dict[str, float]] | None = None,
) -> Path:
    """Train ``arch.build(len(world.pretrain_classes))`` on ``world.pretrain_dir`` and save its
    torchvision-style state dict at ``out`` (``.safetensors`` or, otherwise, ``torch.save``),
    with ``<out>.json`` beside it (config, history, seconds, provenance). Returns ``out``.

    Images are held in memory as uint8 and augmented as the mini train transform (see
    ``_augment``). Deterministic on CPU for a given seed.
    """
    out = Path(out)
    if arch.image_size != world.config.image_size:
        raise ToyWorldError(
            f"{arch.name} takes {arch.image_size} px images but the world's are "
            f"{world.config.image_size} px; build the world with image_size={arch.image_size}"
        )
    t0 = time.perf_counter()
    x, y = _load_images(world.pretrain_dir, world.pretrain_classes)
    held = torch.zeros(len(y), dtype=torch.bool)
    for label in range(len(world.pretrain_classes)):
        held[torch.nonzero(y == label).flatten()[: cfg.holdout_per_class]] = True
    x_train, y_train, x_val, y_val = x[~held], y[~held], x[held], y[held]
    monitored: list[dict[str, float]] = []
    torch.manual_seed(cfg.seed)
    model = arch.build(len(world.pretrain_classes))
    # channels_last made resnet18-mini's CPU training step 2.5x faster (and ViT's slower)
    fmt = torch.channels_last if _is_cnn(model) else torch.contiguous_format
    model = model.to(memory_format=fmt)

    def epoch_batches(epoch: int):
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(y_train), generator=g)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            xb = normalize(_augment(x_train[idx], arch, g))
            yield xb.contiguous(memory_format=fmt), y_train[idx]

    def loss_fn(m: torch.nn.Module, batch) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    @torch.no_grad()
    def evaluate(m: torch.nn.Module) -> float:
        correct = 0
        for i in range(0, len(y_val), 256):
            logits = m(normalize(x_val[i : i + 256]).contiguous(memory_format=fmt))
            correct += int((logits.argmax(1) == y_val[i : i + 256]).sum())
        if monitor is not None:
            monitored.append(monitor(m))
        return correct / max(len(y_val), 1)

    train_cfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = fit(model, epoch_batches, loss_fn, evaluate, train_cfg, "pretrain", progress)
    save_state_dict(model, out)
    meta = {
        "arch": arch.name,
        "config": asdict(cfg),
        "world_digest": world.config.digest(),
        "num_classes": len(world.pretrain_classes),
        "train_images": len(y_train),
        "holdout_accuracy": result.best_accuracy,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "monitor": monitored,
        "seconds": round(time.perf_counter() - t0, 2),
        "provenance": provenance(),
    }
    write_json_atomic(out.with_name(out.name + ".json"), meta)
    return out
