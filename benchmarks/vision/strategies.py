"""The registry of vision training strategies (paper Table 1): each turns the pretrained model, its
16-class "Linear FT" version, a freshly initialised model and the discovered subnetwork into the
16-class model that is then trained on the original 16-class images (or not trained at all).

Strategies that transfer weights delegate to ``subind.conditions.CONDITIONS``, so the
count-matched random control and the unmasked policy are the same code as in the arithmetic
experiments. ``STRATEGIES`` is the single list the CLI, the harness and the test matrix use.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from subind.conditions import CONDITIONS
from subind.registry import Registry
from subind.subnetwork import Subnetwork


@dataclass(frozen=True)
class StrategyInputs:
    pretrained: nn.Module  # the pretrained model with its own (e.g. 1000-class) head
    adapted: nn.Module  # the pretrained model adapted to 16 classes (stage 2)
    fresh: nn.Module  # a newly initialised 16-class model of the same architecture
    subnetwork: Subnetwork | None
    unmasked: str = "inherit"
    trainable_subnetwork: bool = False
    seed: int = 0
    mixture_recipe: str = "transfer"  # data mixture's start: see MixtureStart
    # model -> the model with a new 16-way head (the released data-mixture recipe's start)
    new_head: Callable[[nn.Module], nn.Module] | None = None


@dataclass(frozen=True)
class FromCondition:
    """Start from what a transfer condition builds (base model: the adapted model)."""

    condition: str

    @property
    def uses_subnetwork(self) -> bool:
        return CONDITIONS.get(self.condition).uses_subnetwork

    def __call__(self, inputs: StrategyInputs) -> tuple[nn.Module, dict[str, Any]]:
        return CONDITIONS.get(self.condition).build(
            inputs.adapted,
            inputs.fresh,
            inputs.subnetwork,
            inputs.unmasked,
            inputs.trainable_subnetwork,
            seed=inputs.seed,
        )


@dataclass(frozen=True)
class CopyOf:
    """Start from a copy of one of the inputs' models (``source``: "adapted" or "pretrained"),
    every parameter trainable or none."""

    source: str
    trainable: bool
    uses_subnetwork = False

    def __call__(self, inputs: StrategyInputs) -> tuple[nn.Module, dict[str, Any]]:
        model = copy.deepcopy(getattr(inputs, self.source))
        for p in model.parameters():
            p.requires_grad_(self.trainable)
        return model, {
            "unmasked": "inherit",
            "subnetwork_trainable": None,
            "subnetwork_density": 1.0,
        }


@dataclass(frozen=True)
class MixtureStart:
    """Data mixture's start, by ``mixture_recipe``: the adapted model ("transfer") or the
    pretrained model with a new 16-way head ("released": resnet_16_class_adapt.py,
    vit_augment.py); every parameter trainable."""

    uses_subnetwork = False

    def __call__(self, inputs: StrategyInputs) -> tuple[nn.Module, dict[str, Any]]:
        if inputs.mixture_recipe == "released":
            assert inputs.new_head is not None, "the released mixture recipe needs new_head"
            model, start = inputs.new_head(copy.deepcopy(inputs.pretrained)), "pretrained"
        else:
            model, start = copy.deepcopy(inputs.adapted), "adapted"
        for p in model.parameters():
            p.requires_grad_(True)
        return model, {"unmasked": "inherit", "subnetwork_trainable": None,
                       "subnetwork_density": 1.0, "start": start}  # fmt: skip


@dataclass(frozen=True)
class Strategy:
    name: str
    doc: str
    start: FromCondition | CopyOf | MixtureStart  # how the starting model is made
    trains: bool = True  # trained on the original 16-class images
    pooled_in_training: bool = False  # the pooled discovery images join the train set
    uses_mapping: bool = False  # answers through the decision mapping (a non-16-class head)
    unmasked_modes: tuple[str, ...] | None = ("inherit",)  # None: the requested modes apply
    # Which training recipe (benchmarks.vision.training.recipe): "transfer" (the paper's SGD
    # recipe), "scratch" (its step budget may differ: scratch_steps_vit) or "mixture"
    # (mixture_recipe decides).
    recipe: str = "transfer"
    # Weights transferred into a fresh model: the ViT transfer's frozen LayerNorms and class
    # token (freeze_vit_norms) apply.
    transfer: bool = False

    def modes(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        return requested if self.unmasked_modes is None else self.unmasked_modes

    @property
    def uses_subnetwork(self) -> bool:
        return self.start.uses_subnetwork

    def build(self, inputs: StrategyInputs) -> tuple[nn.Module, dict[str, Any]]:
        """(model to train or evaluate, record of what it took from the pretrained model)."""
        return self.start(inputs)


STRATEGIES: Registry[Strategy] = Registry("strategy")


def _add(s: Strategy) -> None:
    STRATEGIES.register(s.name, s.doc)(s)


_add(
    Strategy(
        "subtask-induction",
        "the discovered subnetwork, frozen, in a re-initialised model trained on original images",
        FromCondition("subtask-induction"),
        unmasked_modes=None,
        transfer=True,
    )
)
_add(Strategy("scratch", "a freshly initialised model trained on original images",
              FromCondition("scratch"), unmasked_modes=("reinit",), recipe="scratch"))  # fmt: skip
_add(
    Strategy(
        "data-mixture",
        "the pretrained model with a new head (or the adapted model: mixture_recipe) fine-tuned "
        "on original images plus the pooled discovery images",
        MixtureStart(),
        pooled_in_training=True,
        recipe="mixture",
    )
)
_add(
    Strategy(
        "linear-ft",
        "the model adapted to 16 classes (the paper's Linear FT: a new head on the frozen "
        "backbone, or the whole model with adapt=full), as it is",
        CopyOf("adapted", trainable=False),
        trains=False,
    )
)
_add(
    Strategy(
        "random-subnetwork",
        "per tensor, k random entries of the pretrained model (k = the subnetwork's count)",
        FromCondition("random-subnetwork"),
        unmasked_modes=None,
        transfer=True,
    )
)
_add(
    Strategy(
        "unmasked-only",
        "no masked entry; only norms, biases, BatchNorm statistics, tokens and the head inherited",
        FromCondition("unmasked-only"),
        transfer=True,
    )
)
_add(
    Strategy(
        "pretrained",
        "reference row: the unmodified pretrained model answering through the decision mapping",
        CopyOf("pretrained", trainable=False),
        trains=False,
        uses_mapping=True,
    )
)
