"""The registry of transfer conditions: Subtask Induction and its controls.

Each condition turns (base model, freshly initialised model, discovered subnetwork) into the
model that is then trained on the target task. ``CONDITIONS`` is the single list the CLI, the
benchmarks and the test matrix iterate over.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from subind.controls import complement_masks, inverted_random_masks, random_masks
from subind.registry import Registry
from subind.subnetwork import Subnetwork
from subind.transfer import describe_transfer, transfer

MaskFn = Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Condition:
    """A way to make the model trained on the target task; subclasses say how (``_start``)."""

    name: str
    doc: str
    # None: the caller's unmasked mode applies; else the only mode that makes sense.
    unmasked_modes: tuple[str, ...] | None = None

    @property
    def uses_subnetwork(self) -> bool:
        """Needs a discovered subnetwork (its per-tensor counts or its entries)."""
        return False

    def modes(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        """The unmasked modes to run this condition with, given the ones requested."""
        return requested if self.unmasked_modes is None else self.unmasked_modes

    def build(
        self,
        base: nn.Module,
        fresh: nn.Module,
        subnetwork: Subnetwork | None,
        unmasked: str = "inherit",
        trainable_subnetwork: bool = False,
        seed: int = 0,
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Return (model to train, record of what it took from ``base``)."""
        if self.unmasked_modes is not None:
            unmasked = self.unmasked_modes[0]
        return self._start(base, fresh, subnetwork, unmasked, trainable_subnetwork, seed)

    def _start(
        self,
        base: nn.Module,
        fresh: nn.Module,
        subnetwork: Subnetwork | None,
        unmasked: str,
        trainable_subnetwork: bool,
        seed: int,
    ) -> tuple[nn.Module, dict[str, Any]]:
        raise NotImplementedError


@dataclass(frozen=True)
class _Scratch(Condition):
    """The fresh model as it is: nothing taken from the base model."""

    def _start(self, base, fresh, subnetwork, unmasked, trainable_subnetwork, seed):
        return fresh, {"unmasked": unmasked, "subnetwork_trainable": None,
                       "subnetwork_density": 0.0}  # fmt: skip


@dataclass(frozen=True)
class _FullTransfer(Condition):
    """A copy of the whole base model, every parameter trainable."""

    def _start(self, base, fresh, subnetwork, unmasked, trainable_subnetwork, seed):
        model = copy.deepcopy(base)
        for p in model.parameters():
            p.requires_grad_(True)
        return model, {"unmasked": unmasked, "subnetwork_trainable": True,
                       "subnetwork_density": 1.0}  # fmt: skip


@dataclass(frozen=True)
class _MaskTransfer(Condition):
    """The entries of the base model a mask selects, transferred into the fresh model
    (:func:`subind.transfer.transfer`); the mask is derived from the subnetwork's."""

    mask_fn: MaskFn | None = None

    @property
    def uses_subnetwork(self) -> bool:
        return True

    def _start(self, base, fresh, subnetwork, unmasked, trainable_subnetwork, seed):
        assert subnetwork is not None, f"condition {self.name!r} needs a discovered subnetwork"
        assert self.mask_fn is not None
        subnetwork.check_compatible(fresh)
        masks = self.mask_fn(subnetwork.masks, seed)
        model = transfer(base, fresh, masks, unmasked, trainable_subnetwork)
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        info = describe_transfer(fresh, masks, unmasked, trainable_subnetwork)
        info["subnetwork_density"] = kept / total
        info["masked_tensors"] = len(info["masked_tensors"])  # names live in subnetwork.json
        info["inherited_unmasked"] = len(info["inherited_unmasked"])
        info["reinitialized_unmasked"] = len(info["reinitialized_unmasked"])
        return model, info


CONDITIONS: Registry[Condition] = Registry("condition")


def _add(cond: Condition) -> None:
    CONDITIONS.register(cond.name, cond.doc)(cond)


def _no_entries(masks: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    return {n: torch.zeros_like(v) for n, v in masks.items()}


_add(_MaskTransfer("subtask-induction", "transfer the discovered subnetwork",
                   mask_fn=lambda m, s: m))  # fmt: skip
_add(_Scratch("scratch", "train a freshly initialised model", unmasked_modes=("reinit",)))
_add(_FullTransfer("full-transfer", "fine-tune the whole base model", unmasked_modes=("inherit",)))
_add(
    _MaskTransfer(
        "random-subnetwork",
        "per tensor, k uniformly random entries (k = the subnetwork's count)",
        mask_fn=random_masks,
    )
)
_add(
    _MaskTransfer(
        "complement-subnetwork",
        "per tensor, k random entries from outside the subnetwork",
        mask_fn=complement_masks,
    )
)
_add(
    _MaskTransfer(
        "random-subnetwork-inverted",
        "per tensor, N-k random entries (the released code's inverted control)",
        mask_fn=inverted_random_masks,
    )
)
_add(
    _MaskTransfer(
        "unmasked-only",
        "no masked entry; only the unmasked parameters (embeddings, norms, biases) inherited",
        unmasked_modes=("inherit",),
        mask_fn=_no_entries,
    )
)

# The five conditions of the paper's Figure 3 with the correct random control.
DEFAULT_CONDITIONS = (
    "subtask-induction",
    "scratch",
    "full-transfer",
    "random-subnetwork",
    "complement-subnetwork",
)
