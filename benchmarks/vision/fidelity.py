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
    Choice("adaptation images (ResNet18)", "adapt_images_resnet", "-",
           "train (all 213,555 listed, the 1,549 evaluation images included)"),
    Choice("adaptation images (ViT)", "adapt_images_vit", "-", "discovery"),
    Choice("adaptation optimizer", "adapt_optimizer", "-", "adamw"),
    Choice("adaptation lr (ResNet18)", "adapt_lr_resnet", "-", "0.001"),
    Choice("adaptation lr (ViT)", "adapt_lr_vit", "-", "0.002"),
    Choice("adaptation schedule", "adapt_lr_schedule", "-", "linear"),
    Choice("adaptation epochs (ResNet18)", "adapt_epochs_resnet", "-", "5"),
    Choice("adaptation epochs (ViT)", "adapt_epochs_vit", "-", "5"),
    Choice("adaptation batch (ResNet18)", "adapt_batch_size_resnet", "-", "128"),
    Choice("adaptation batch (ViT)", "adapt_batch_size_vit", "-", "64"),
    Choice("best epoch chosen on", "select_on", "-",
           "val (ResNet18 adaptation, data mixture: the images Table 1 reports)"),
    Choice("discovery optimizer", "discovery_optimizer", "-", "adamw"),
    Choice("discovery epochs (ResNet18)", "discovery_epochs_resnet", "100", "100"),
    Choice("discovery epochs (ViT)", "discovery_epochs_vit", "100", "100 (batch 32 config)"),
    Choice("discovery batch (ResNet18)", "discovery_batch_size_resnet", "32", "32"),
    Choice("discovery batch (ViT)", "discovery_batch_size_vit", "32", "32 (vit_ablated_1e-8_b32)"),
    Choice("discovery augmentation", "discovery_augment", "-", "none"),
    Choice("mask initialisation", "mask_init", "-", "-0.1"),
    Choice("temperature schedule", "beta_schedule", "1 to 100", "reaches-final"),
    Choice("ViT classifier masked", "mask_classifier", "False", "True"),
    Choice("subnetwork transferred", "transfer_penalty", "None (the most accurate)", "1e-08"),
    Choice("subnetwork must beat the whole model", "require_subnetwork_gain", "-",
           "no such gate (this project's)"),
    Choice("unmasked parameters", "unmasked", "reinit", "inherit"),
    Choice("ViT transfer: LayerNorms, class token", "freeze_vit_norms", "-", "True (frozen)"),
    Choice("transfer optimizer", "optimizer", "sgd", "sgd"),
    Choice("transfer lr", "lr", "0.001", "0.001"),
    Choice("transfer momentum", "momentum", "0.9", "0.9"),
    Choice("transfer weight decay", "weight_decay", "0.0001", "0.0001"),
    Choice("transfer batch (ResNet18)", "batch_size_resnet", "128", "128"),
    Choice("transfer batch (ViT)", "batch_size_vit", "512", "128"),
    Choice("transfer steps", "steps", "33160", "20 epochs (ResNet18)"),
    Choice("transfer steps (ViT)", "steps_vit", "None (33160)", "40 epochs at batch 128"),
    Choice("scratch steps (ViT)", "scratch_steps_vit", "None (33160)",
           "16600 (40 epochs at batch 512)"),
    Choice("data mixture recipe", "mixture_recipe", "-", "released"),
    Choice("transfer transforms", "transfer_transforms", "-", "released"),
    Choice("training crop (source transforms)", "train_crop", "-", "resize-crop"),
    Choice("class-weighted loss", "class_weighted_loss", "-", "True"),
    Choice("evaluation images", "eval_set", "16-class ImageNet validation", "released"),
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
