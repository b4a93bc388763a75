"""How a table1 strategy's model trains (paper C.1): the step budget and optimizer of its recipe
family, the class-weighted loss, each DDP rank's share of the batch, the evaluation curves of
Figure 5 and the choice of the best state."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from benchmarks.vision.config import Table1Config
from benchmarks.vision.data import ImageSets, epoch_loader
from benchmarks.vision.decode import DeviceDecoded, EncodedImages, encoded_batch
from benchmarks.vision.evaluate import accuracy
from benchmarks.vision.grid import Run
from benchmarks.vision.inputs import ModelEntry
from benchmarks.vision.stages import NUM_CLASSES, ce_loss
from benchmarks.vision.strategies import STRATEGIES
from subind.stacked import fit_stacked
from subind.train import FitResult, TrainConfig, fit

# The released data-mixture recipe (resnet_16_class_adapt.py, vit_augment.py): transformers'
# Trainer defaults (AdamW, weight decay 0, linear decay to 0, no warm-up) at lr 1e-3, batch 128,
# 5 epochs for the ResNet and 1 for the ViT, the best epoch kept (on select_on).
MIXTURE_RELEASED = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0,
                    "lr_schedule": "linear", "batch_size": 128, "epochs": {"resnet": 5, "vit": 1}}  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """How one strategy's model trains: the optimizer and its settings, the global batch, the
    budget (``steps``; or ``epochs`` over the training set), how often it is evaluated (every
    ``eval_every`` steps; None: after each epoch) and where its best state is chosen
    (``select_on``: "evaluation" or "val")."""

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    lr_schedule: str
    batch_size: int
    steps: int | None
    epochs: int | None
    eval_every: int | None
    select_on: str


def recipe(cfg: Table1Config, kind: str, family: str) -> Recipe:
    """The recipe of a strategy's ``kind`` ("transfer", "scratch", "mixture": see
    ``Strategy.recipe``) for a model of ``family``."""
    if kind == "mixture" and cfg.mixture_recipe == "released":
        m = MIXTURE_RELEASED
        return Recipe(m["optimizer"], m["lr"], cfg.momentum, m["weight_decay"], m["lr_schedule"],
                      m["batch_size"], None, m["epochs"][family], None, cfg.select_on)  # fmt: skip
    steps = cfg.scratch_steps(family) if kind == "scratch" else cfg.train_steps(family)
    return Recipe(cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, "constant",
                  cfg.batch_size(family), steps, None, min(cfg.eval_every, steps), "evaluation")  # fmt: skip


def run_cost(cfg: Table1Config, run: Run, family: str, train_images: int) -> int:
    """The images ``run`` trains on (its recipe's steps x batch, or epochs over
    ``train_images``; 0 for an untrained strategy): the order in which local workers take the
    runs, the costliest first, so that they finish together."""
    strat = STRATEGIES.get(run.strategy)
    if not strat.trains:
        return 0
    r = recipe(cfg, strat.recipe, family)
    return r.steps * r.batch_size if r.steps is not None else r.epochs * train_images


def rank_batch(batch: int, model: str, world: int) -> int:
    """Each DDP rank's share of the global ``batch`` (the paper's 128 / 512 are global);
    ValueError (one line) when it does not split over ``world`` ranks."""
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
    r: Recipe, batches_per_epoch: int, checkpoint: Path | None, amp: str | None, ddp: bool = False
) -> TrainConfig:
    """``fit``'s config of recipe ``r``: the step budget (or its epochs) ends training;
    evaluation (and the choice of the best state) every eval_every steps or after each epoch."""
    steps = r.steps if r.steps is not None else r.epochs * batches_per_epoch
    return TrainConfig(
        epochs=10**9 if r.epochs is None else r.epochs,
        lr=r.lr,
        optimizer=r.optimizer,
        momentum=r.momentum,
        weight_decay=r.weight_decay,
        lr_schedule=r.lr_schedule,
        max_steps=steps,
        eval_every=r.eval_every,
        checkpoint_dir=str(checkpoint) if checkpoint else None,
        amp=amp,
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


def train_loader(
    cfg: Table1Config, train_set: Dataset, batch: int, seed: int, rank: int, world: int,
    device: torch.device,
) -> Callable[[int], Any]:  # fmt: skip
    """``epoch -> batches`` of ``train_set``: read and transformed by the data loader's
    workers, or (``image_decoding="device"``, with the released transforms) decoded and
    transformed on ``device`` (benchmarks.vision.decode)."""
    if cfg.image_decoding == "device":
        encoded = EncodedImages.of(train_set)
        epochs = epoch_loader(encoded, batch, seed, cfg.loader_workers, rank, world,
                              collate=encoded_batch)  # fmt: skip
        return DeviceDecoded(epochs, device)
    return epoch_loader(train_set, batch, seed, cfg.loader_workers, rank, world)


def loss_weights(cfg: Table1Config, train_set: Dataset) -> torch.Tensor | None:
    """The cross-entropy's class weights for ``train_set`` (``class_weighted_loss``), or None."""
    return class_weights(dataset_labels(train_set)) if cfg.class_weighted_loss else None


def ddp_ready(cfg: Table1Config, net: nn.Module, device: torch.device, world: int) -> nn.Module:
    """With DDP on GPUs and ``sync_batchnorm``: BatchNorm over the global batch."""
    if world > 1 and cfg.sync_batchnorm and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net


def _evaluator(
    cfg: Table1Config, r: Recipe, data: ImageSets, device: torch.device, rank: int, world: int
) -> Callable[[nn.Module], dict[str, float]]:
    """``fit``'s evaluation: selection on the recipe's ``select_on`` images, the pooled
    evaluation subset only recorded."""
    select = data.evaluation if r.select_on == "evaluation" else data.val

    def evaluate(m: nn.Module) -> dict[str, float]:
        # under DDP each rank evaluates its share of the images; the counts are summed
        w, bs = cfg.loader_workers, cfg.eval_batch_size
        return {
            "val_accuracy": accuracy(m, select, device, bs, w, rank, world),
            "pooled_accuracy": accuracy(m, data.pooled_evaluation, device, bs, w, rank, world),
        }

    return evaluate


def _fields(train_set: Dataset, tc: TrainConfig, r: Recipe, result: FitResult) -> dict[str, Any]:
    """A trained run's record fields (train_images, steps, recipe, curve, best_step)."""
    return {
        "train_images": len(train_set),
        "steps": tc.max_steps,
        "recipe": dataclasses.asdict(r),
        "curve": [  # Figure 5; fit's history survives a resume
            {"step": h["step"], "original": h["val_accuracy"], "pooled": h["pooled_accuracy"]}
            for h in result.history
        ],
        "best_step": best_step(result.history),
    }


def train_run(
    cfg: Table1Config, run: Run, entry: ModelEntry, net: nn.Module, train_set: Dataset,
    data: ImageSets, out: Path, device: torch.device, rank: int, world: int, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """Train ``run``'s model ``net`` on ``train_set`` by its strategy's :func:`recipe`
    (evaluation: selection on the recipe's ``select_on`` images, the pooled evaluation subset
    only recorded; resumable from ``out/checkpoints/{tag}``); return the record's training
    fields (train_images, steps, recipe, curve, best_step)."""
    r = recipe(cfg, STRATEGIES.get(run.strategy).recipe, entry.family)
    weight = loss_weights(cfg, train_set)
    tag, seed = run.tag(), run.seed
    ckpt = out / "checkpoints" / tag
    if entry.family == "resnet" and device.type == "cpu":
        # channels_last: a resnet18-mini training step on one CPU thread 75 ms instead of 92
        # (docs/speed.md); on GPUs the layout stays torch's choice
        net.to(memory_format=torch.channels_last)
    torch.manual_seed(seed)
    batch = rank_batch(r.batch_size, run.model, world)
    loader = train_loader(cfg, train_set, batch, seed, rank, world, device)
    tc = train_config(r, len(loader), ckpt, cfg.amp, ddp=world > 1)
    evaluate = _evaluator(cfg, r, data, device, rank, world)
    result = fit(ddp_ready(cfg, net, device, world), loader, ce_loss(device, weight), evaluate,
                 tc, desc=tag, progress=progress)  # fmt: skip
    shutil.rmtree(ckpt, ignore_errors=True)
    return _fields(train_set, tc, r, result)


def train_stacked(
    cfg: Table1Config, runs: Sequence[Run], entry: ModelEntry, nets: Sequence[nn.Module],
    train_set: Dataset, data: ImageSets, device: torch.device, progress: bool,
) -> list[dict[str, Any]]:  # fmt: skip
    """Train ``runs`` (of one model, with one recipe, on ``train_set``; their models ``nets``
    train the same tensors) together, stacked (:func:`subind.stacked.fit_stacked`): run r as
    :func:`train_run` in one process would train it, up to float rounding. No checkpoint: an
    interrupted group trains again from its start. Returns each run's record fields, with
    ``stacked``: how many runs trained together."""
    kinds = {STRATEGIES.get(run.strategy).recipe for run in runs}
    assert len(kinds) == 1 and len({run.model for run in runs}) == 1, "one model and recipe"
    r = recipe(cfg, kinds.pop(), entry.family)
    loaders = [train_loader(cfg, train_set, r.batch_size, run.seed, 0, 1, device) for run in runs]
    tc = train_config(r, len(loaders[0]), None, cfg.amp)
    evaluate = _evaluator(cfg, r, data, device, 0, 1)
    tag = f"{runs[0].model} {'+'.join(dict.fromkeys(run.strategy for run in runs))} x{len(runs)}"
    results = fit_stacked(list(nets), loaders, ce_loss(device, loss_weights(cfg, train_set)),
                          [evaluate] * len(runs), tc, [run.seed for run in runs], desc=tag,
                          progress=progress)  # fmt: skip
    return [{**_fields(train_set, tc, r, res), "stacked": len(runs)} for res in results]
