"""Where the paper's text and its released code differ for Table 1, the setting that chooses
between them: the single list that ``--plan`` prints and docs/table1-fidelity.md explains
(a test checks that the page covers every row)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.vision.config import Table1Config


@dataclass(frozen=True)
class Choice:
    item: str
    setting: str  # a Table1Config field
    text: str  # what the paper's text says ("-": it does not say)
    released: str  # what the released code did


FIDELITY: tuple[Choice, ...] = (
    Choice("image sets", "selection", "213k train; 13.9k / 1.54k balanced subsets",
           "paper (Geirhos' 213,555 files; fixed 13,929 / 1,549 lists)"),
    Choice("ResNet18 weights", "weights_resnet18", "official released weights",
           "transformers microsoft/resnet-18"),
    Choice("ViT weights", "weights_vit", "original authors' (ImageNet-21k)",
           "transformers google/vit-base-patch16-224"),
    Choice("ResNet18 adaptation", "adapt_resnet", "head", "full"),
    Choice("ViT adaptation", "adapt_vit", "head", "head"),
    Choice("adaptation images", "adapt_images", "-", "discovery"),
    Choice("adaptation optimizer", "adapt_optimizer", "-", "adamw"),
    Choice("adaptation lr", "adapt_lr", "-", "0.002"),
    Choice("adaptation schedule", "adapt_lr_schedule", "-", "linear"),
    Choice("adaptation epochs", "adapt_epochs", "-", "5"),
    Choice("adaptation batch", "adapt_batch_size", "-", "64"),
    Choice("discovery optimizer", "discovery_optimizer", "-", "adamw"),
    Choice("discovery epochs (ResNet18)", "discovery_epochs_resnet", "100", "100"),
    Choice("discovery epochs (ViT)", "discovery_epochs_vit", "100", "200"),
    Choice("discovery batch (ResNet18)", "discovery_batch_size_resnet", "32", "32"),
    Choice("discovery batch (ViT)", "discovery_batch_size_vit", "32", "128"),
    Choice("discovery augmentation", "discovery_augment", "-", "none"),
    Choice("ViT classifier masked", "mask_classifier", "False", "True"),
    Choice("subnetwork transferred", "transfer_penalty", "None (the most accurate)", "1e-08"),
    Choice("unmasked parameters", "unmasked", "reinit", "inherit"),
    Choice("transfer batch (ResNet18)", "batch_size_resnet", "128", "128"),
    Choice("transfer batch (ViT)", "batch_size_vit", "512", "128"),
    Choice("transfer steps", "steps", "33160", "20 epochs (ResNet18)"),
    Choice("transfer steps (ViT)", "steps_vit", "None (33160)", "40 epochs at batch 128"),
    Choice("training crop", "train_crop", "-", "resize-crop"),
    Choice("class-weighted loss", "class_weighted_loss", "-", "True"),
    Choice("cue-conflict scoring", "cue_conflict_scoring", "standard", "released"),
)  # fmt: skip


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "None" if value is None else str(value)


def fidelity_rows(cfg: Table1Config) -> list[dict[str, str]]:
    """Every choice with the value ``cfg`` takes."""
    return [
        {
            "item": c.item,
            "setting": c.setting,
            "value": _show(getattr(cfg, c.setting)),
            "text": c.text,
            "released": c.released,
        }  # fmt: skip
        for c in FIDELITY
    ]
