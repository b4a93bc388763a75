"""How a table1 strategy's model trains (paper C.1): the step budget and optimizer of its recipe
family, the class-weighted loss, each DDP rank's share of the batch, the evaluation curves of
Figure 5 and the choice of the best state."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from benchmarks.vision.config import Table1Config
from benchmarks.vision.data import ImageSets, epoch_loader
from benchmarks.vision.evaluate import accuracy
from benchmarks.vision.grid import Run
from benchmarks.vision.inputs import ModelEntry
from benchmarks.vision.stages import NUM_CLASSES, ce_loss
from subind.train import TrainConfig, fit


def rank_batch(cfg: Table1Config, family: str, model: str, world: int) -> int:
    """Each DDP rank's share of the global batch of ``family`` (the paper's 128 / 512 are
    global); ValueError (one line) when it does not split over ``world`` ranks."""
    batch = cfg.batch_size(family)
    if batch % world:
        raise ValueError(f"the batch size {batch} of {model} does not split over {world} ranks; "
                         f"set --set batch_size_resnet/batch_size_vit to a multiple of {world}")  # fmt: skip
    return batch // world


def best_step(history: list[dict[str, Any]]) -> int | None:
    """The step of the first evaluation with the best validation accuracy (fit's choice)."""
    if not history:
        return None
    best = max(range(len(history)), key=lambda i: (history[i]["val_accuracy"], -i))
    return history[best].get("step")


def train_config(
    cfg: Table1Config, family: str, checkpoint: Path | None, ddp: bool = False
) -> TrainConfig:
    """How a strategy's model of ``family`` trains: the step budget ends training; evaluation
    (and the choice of the best state) every eval_every steps."""
    steps = cfg.train_steps(family)
    return TrainConfig(
        epochs=10**9,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        max_steps=steps,
        eval_every=min(cfg.eval_every, steps),
        checkpoint_dir=str(checkpoint) if checkpoint else None,
        amp=cfg.amp,
        ddp=ddp,
    )


def dataset_labels(dataset: Dataset) -> list[int]:
    """The labels of a dataset of (image, label) items, without loading an image."""
    if isinstance(dataset, ConcatDataset):
        return [y for part in dataset.datasets for y in dataset_labels(part)]
    return list(dataset.labels)


def class_weights(labels: list[int], num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """(C,) loss weights N / N_c, scaled to unit L2 norm (the released code's weighting of
    16-class ImageNet, where dogs are half of the images); 0 for a class with no image."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes).double()
    w = torch.where(counts > 0, counts.sum() / counts.clamp(min=1), torch.zeros_like(counts))
    return (w / w.norm()).float()


def ddp_ready(cfg: Table1Config, net: nn.Module, device: torch.device, world: int) -> nn.Module:
    """With DDP on GPUs and ``sync_batchnorm``: BatchNorm over the global batch."""
    if world > 1 and cfg.sync_batchnorm and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net


def train_run(
    cfg: Table1Config, run: Run, entry: ModelEntry, net: nn.Module, train_set: Dataset,
    data: ImageSets, out: Path, device: torch.device, rank: int, world: int, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """Train ``run``'s model ``net`` on ``train_set`` (the family's step budget; evaluation
    every eval_every steps: selection on the original evaluation subset, the pooled one only
    recorded; resumable from ``out/checkpoints/{tag}``); return the record's training fields
    (train_images, curve, best_step)."""
    weight = class_weights(dataset_labels(train_set)) if cfg.class_weighted_loss else None
    tag, seed, family = run.tag(), run.seed, entry.family
    ckpt = out / "checkpoints" / tag

    def evaluate(m: nn.Module) -> dict[str, float]:
        w, bs = cfg.loader_workers, cfg.eval_batch_size
        return {
            "val_accuracy": accuracy(m, data.evaluation, device, bs, w),
            "pooled_accuracy": accuracy(m, data.pooled_evaluation, device, bs, w),
        }

    torch.manual_seed(seed)
    result = fit(
        ddp_ready(cfg, net, device, world),
        epoch_loader(
            train_set,
            rank_batch(cfg, family, run.model, world),
            seed,
            cfg.loader_workers,
            rank,
            world,
        ),  # fmt: skip
        ce_loss(device, weight),
        evaluate,
        train_config(cfg, family, ckpt, ddp=world > 1),
        desc=tag,
        progress=progress,
    )
    shutil.rmtree(ckpt, ignore_errors=True)
    return {
        "train_images": len(train_set),
        "curve": [  # Figure 5; fit's history survives a resume
            {"step": h["step"], "original": h["val_accuracy"], "pooled": h["pooled_accuracy"]}
            for h in result.history
        ],
        "best_step": best_step(result.history),
    }
