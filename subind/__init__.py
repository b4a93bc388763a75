"""subind: Subtask Induction for any PyTorch model.

    from subind import MaskSelection, select_parameters, discover, DiscoveryConfig, transfer

Masks (continuous sparsification), subnetwork discovery, subnetwork transfer and controls.
See README.md for an example on your own model.
"""

from subind.conditions import CONDITIONS, DEFAULT_CONDITIONS, Condition
from subind.controls import complement_masks, inverted_random_masks, random_masks
from subind.discover import DiscoveryConfig, discover
from subind.masks import MaskSelection, MaskSet, add_masks, beta_schedule, select_parameters
from subind.stacked import fit_stacked
from subind.subnetwork import Subnetwork
from subind.train import TrainConfig, fit
from subind.transfer import UNMASKED_MODES, bake, describe_transfer, transfer

__version__ = "0.1.0"

__all__ = [
    "CONDITIONS",
    "DEFAULT_CONDITIONS",
    "UNMASKED_MODES",
    "Condition",
    "DiscoveryConfig",
    "MaskSelection",
    "MaskSet",
    "Subnetwork",
    "TrainConfig",
    "add_masks",
    "bake",
    "beta_schedule",
    "complement_masks",
    "describe_transfer",
    "discover",
    "fit",
    "fit_stacked",
    "inverted_random_masks",
    "random_masks",
    "select_parameters",
    "transfer",
]
