"""Subnetwork discovery by continuous sparsification (paper Section 3.1, Appendix A, Algorithm 1).

The base model is frozen; a mask is trained on the subtask with loss
``subtask_loss + lambda * sum(sigmoid(beta * s))`` while beta grows exponentially from 1 to
beta_final (one step per epoch). After each epoch the hard mask 1[s > 0] is evaluated on the
subtask's validation set; the epoch with the best accuracy (ties: the sparser mask) is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from subind.masks import BETA_SCHEDULES, MaskSet, add_masks, beta_schedule
from subind.provenance import provenance
from subind.subnetwork import Subnetwork
from subind.train import Batch, EvalFn, LossFn


@dataclass(frozen=True)
class DiscoveryConfig:
    epochs: int = 50
    lr: float = 1e-3
    penalty: float = 1e-7  # lambda in the paper
    beta_final: float = 100.0
    mask_init: float = -0.1
    seed: int = 0
    optimizer: str = "adam"  # of the mask scores: "adam", or "adamw" with weight_decay
    weight_decay: float = 0.01  # adamw only (torch's default)
    beta_schedule: str = "per-epoch"  # or "reaches-final" (subind.masks.beta_schedule)

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got "
                             f"{self.beta_schedule!r}")  # fmt: skip


def _train_epoch(
    model: nn.Module,
    masks: MaskSet,
    opt: torch.optim.Optimizer,
    batches: Iterable[Batch],
    loss_fn: LossFn,
    penalty: float,
) -> float:
    """One epoch of mask training; the mean task loss (without the penalty)."""
    total, count = 0.0, 0
    for batch in batches:
        with masks.cached():  # gates once per step, for the weights and the penalty
            task_loss = loss_fn(model, batch)
            loss = task_loss + penalty * masks.penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(task_loss.detach())
        count += 1
    return total / max(count, 1)


def discover(
    model: nn.Module,
    names: list[str],
    epoch_batches: Callable[[int], Iterable[Batch]],
    loss_fn: LossFn,
    evaluate: EvalFn,
    config: DiscoveryConfig,
    evaluate_test: EvalFn | None = None,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> Subnetwork:
    """Find the subnetwork of ``model`` (masks on the parameters ``names``) that solves the
    subtask given by ``epoch_batches``/``loss_fn``; ``evaluate(model) -> accuracy`` on the
    subtask's validation set selects the epoch. ``model`` is returned to its unmasked state.

    Norm layers and dropout stay in eval mode throughout (the paper's code did the same): the
    subnetwork is a function of the frozen base model, not of batch statistics or noise.
    """
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    masks = add_masks(model, names, init=config.mask_init)
    scores = list(masks.parameters())
    if config.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            scores, lr=config.lr, weight_decay=config.weight_decay
        )
    else:
        opt = torch.optim.Adam(scores, lr=config.lr)
    model.eval()
    best: dict[str, Any] | None = None
    history = []
    bar = tqdm(range(config.epochs), desc="discover", disable=not progress, leave=False)
    try:
        for epoch in bar:
            masks.set_beta(
                beta_schedule(epoch, config.epochs, config.beta_final, config.beta_schedule)
            )
            loss = _train_epoch(model, masks, opt, epoch_batches(epoch), loss_fn, config.penalty)
            with masks.hard(), torch.no_grad():
                acc = float(evaluate(model))
            binary = masks.binary()
            kept = sum(int(m.sum()) for m in binary.values())
            density = kept / masks.num_masked()
            history.append(
                {
                    "epoch": epoch,
                    "beta": masks.beta,
                    "loss": loss,
                    "val_accuracy": acc,
                    "density": density,
                }
            )
            bar.set_postfix(val=f"{acc:.3f}", density=f"{density:.3f}")
            if best is None or (acc, -density) > (best["acc"], -best["density"]):
                best = {"acc": acc, "density": density, "epoch": epoch, "masks": binary}
        assert best is not None, "expected at least one discovery epoch"
        test_acc = None
        if evaluate_test is not None:
            masks.load_binary(best["masks"])  # evaluate the selected epoch's hard mask
            with masks.hard(), torch.no_grad():
                test_acc = float(evaluate_test(model))
    finally:
        masks.remove()
    info = {
        "base_model": f"{type(model).__name__} "
        f"({sum(p.numel() for p in model.parameters()):,} parameters)",
        "masked_tensors": list(names),
    }
    info.update(meta or {})
    info.update(
        {
            "discovery": asdict(config),
            "lambda": config.penalty,
            "beta_final": config.beta_final,
            "epochs": config.epochs,
            "seed": config.seed,
            "best_epoch": best["epoch"],
            "val_accuracy": best["acc"],
            "test_accuracy": test_acc,
            "history": history,
            "seconds": time.perf_counter() - start,
            "provenance": provenance(),
        }
    )
    return Subnetwork(best["masks"], info)
