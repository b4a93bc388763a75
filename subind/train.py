"""A plain training loop with best-on-validation model selection, shared by every stage."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

Batch = Any
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
EvalFn = Callable[[nn.Module], float]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    lr: float = 2e-4
    weight_decay: float = 0.01  # AdamW's default; decoupled, so frozen entries must be guarded
    betas: tuple[float, float] = (0.9, 0.999)
    # Stop once validation accuracy has reached this value (None: run every epoch).
    stop_at_accuracy: float | None = None


@dataclass
class FitResult:
    best_accuracy: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def fit(
    model: nn.Module,
    epoch_batches: Callable[[int], Iterable[Batch]],
    loss_fn: LossFn,
    evaluate: EvalFn,
    config: TrainConfig,
    desc: str = "train",
    progress: bool = True,
) -> FitResult:
    """Train the parameters of ``model`` that require grad with AdamW for ``config.epochs``;
    after each epoch evaluate (model in eval mode) and keep the best state. On return ``model``
    holds the state of its best-validation epoch (ties: the earliest)."""
    params = [p for p in model.parameters() if p.requires_grad]
    assert params, "expected at least one trainable parameter"
    opt = torch.optim.AdamW(
        params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    best_acc, best_epoch, best_state = -1.0, -1, None
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(range(config.epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for batch in epoch_batches(epoch):
            loss = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            count += 1
        model.eval()
        acc = float(evaluate(model))
        history.append({"epoch": epoch, "loss": total / max(count, 1), "val_accuracy": acc})
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(
            loss=f"{total / max(count, 1):.3f}", val=f"{acc:.3f}", best=f"{best_acc:.3f}"
        )
        if config.stop_at_accuracy is not None and acc >= config.stop_at_accuracy:
            break
    assert best_state is not None, "expected at least one epoch"
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_acc, best_epoch, history, time.perf_counter() - start)
