"""The registry of vision training strategies (paper Table 1): each turns the pretrained model, its
16-class "Linear FT" version, a freshly initialised model and the discovered subnetwork into the
16-class model that is then trained on the original 16-class images (or not trained at all).

Strategies that transfer weights delegate to ``subind.conditions.CONDITIONS``, so the
count-matched random control and the unmasked policy are the same code as in the arithmetic
experiments. ``STRATEGIES`` is the single list the CLI, the harness and the test matrix use.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import nn

from subind.conditions import CONDITIONS
from subind.registry import Registry
from subind.subnetwork import Subnetwork


@dataclass(frozen=True)
class StrategyInputs:
    pretrained: nn.Module  # the pretrained model with its own (e.g. 1000-class) head
    linear: nn.Module  # the pretrained backbone with the trained 16-class head (stage 2)
    fresh: nn.Module  # a newly initialised 16-class model of the same architecture
    subnetwork: Subnetwork | None
    unmasked: str = "inherit"
    trainable_subnetwork: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Strategy:
    name: str
    doc: str
    # How the starting model is made: a transfer condition's name, "linear" (the Linear FT model,
    # fine-tuned whole), "linear-frozen" (the Linear FT model as it is) or "pretrained".
    start: str
    trains: bool = True  # trained on the original 16-class images
    pooled_in_training: bool = False  # the pooled discovery + evaluation images join the train set
    uses_mapping: bool = False  # answers through the decision mapping (a non-16-class head)
    unmasked_modes: tuple[str, ...] | None = ("inherit",)  # None: the requested modes apply

    def modes(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        return requested if self.unmasked_modes is None else self.unmasked_modes

    @property
    def uses_subnetwork(self) -> bool:
        return self.start in CONDITIONS and CONDITIONS.get(self.start).uses_subnetwork

    def build(self, inputs: StrategyInputs) -> tuple[nn.Module, dict[str, Any]]:
        """(model to train or evaluate, record of what it took from the pretrained model)."""
        if self.start in CONDITIONS:
            return CONDITIONS.get(self.start).build(
                inputs.linear,
                inputs.fresh,
                inputs.subnetwork,
                inputs.unmasked,
                inputs.trainable_subnetwork,
                seed=inputs.seed,
            )
        source = inputs.pretrained if self.start == "pretrained" else inputs.linear
        model = copy.deepcopy(source)
        train_all = self.start == "linear"
        for p in model.parameters():
            p.requires_grad_(train_all)
        return model, {
            "unmasked": "inherit",
            "subnetwork_trainable": None,
            "subnetwork_density": 1.0,
        }


STRATEGIES: Registry[Strategy] = Registry("strategy")


def _add(s: Strategy) -> None:
    STRATEGIES.register(s.name, s.doc)(s)


_add(
    Strategy(
        "subtask-induction",
        "the discovered subnetwork, frozen, in a re-initialised model trained on original images",
        "subtask-induction",
        unmasked_modes=None,
    )
)
_add(Strategy("scratch", "a freshly initialised model trained on original images", "scratch",
              unmasked_modes=("reinit",)))  # fmt: skip
_add(
    Strategy(
        "data-mixture",
        "the pretrained model fine-tuned on original images plus the pooled discovery and "
        "evaluation images",
        "linear",
        pooled_in_training=True,
    )
)
_add(
    Strategy(
        "linear-ft",
        "the pretrained backbone, frozen, with a 16-class head trained on original images",
        "linear-frozen",
        trains=False,
    )
)
_add(
    Strategy(
        "random-subnetwork",
        "per tensor, k random entries of the pretrained model (k = the subnetwork's count)",
        "random-subnetwork",
        unmasked_modes=None,
    )
)
_add(
    Strategy(
        "unmasked-only",
        "no masked entry; only norms, biases, BatchNorm statistics, tokens and the head inherited",
        "unmasked-only",
    )
)
_add(
    Strategy(
        "pretrained",
        "reference row: the unmodified pretrained model answering through the decision mapping",
        "pretrained",
        trains=False,
        uses_mapping=True,
    )
)
