"""The architecture registry (:data:`ARCHS`: the paper's two models and their CPU-sized
versions) and :func:`arch_for`, which also builds ``torchvision:NAME``, ``timm:NAME`` and
``hf:ORG/NAME`` classifiers (:mod:`benchmarks.vision.models.libraries`)."""

from __future__ import annotations

from benchmarks.vision.models.arch import (
    RESNET_MASKED,
    VIT_MASKED,
    ResNetSpec,
    VisionArch,
    ViTSpec,
)
from benchmarks.vision.models.libraries import LIBRARY_PREFIXES, library_arch
from subind.registry import Registry

ARCHS: Registry[VisionArch] = Registry("vision architecture")
for _arch, _doc in [
    (
        VisionArch("resnet18", 224, 256 / 224, "fc", RESNET_MASKED, ResNetSpec()),
        "torchvision ResNet18 (224 px; the paper's CNN)",
    ),
    (
        VisionArch("vit_b_16", 224, 256 / 224, "heads.head", VIT_MASKED, ViTSpec()),
        "torchvision ViT-B/16 (224 px; the paper's transformer)",
    ),
    (
        VisionArch(
            "resnet18-mini",
            32,
            1.0,
            "fc",
            RESNET_MASKED,
            ResNetSpec(widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), stem="small"),
            train_crop="pad",
        ),
        "ResNet18's classes, widths 16-128, one block per stage, 32 px (CPU mini preset)",
    ),
    (
        VisionArch(
            "vit_b_16-mini",
            32,
            1.0,
            "heads.head",
            VIT_MASKED,
            ViTSpec(patch_size=4, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128),
            train_crop="pad",
        ),
        "ViT-B/16's classes, 2 layers, width 64, patch 4, 32 px (CPU mini preset)",
    ),
]:
    ARCHS.register(_arch.name, _doc)(_arch)


def arch_for(name: str) -> VisionArch:
    """The architecture called ``name``: a registered short name (:data:`ARCHS`), or a library
    classifier built on the fly: ``torchvision:NAME`` (any torchvision classification model),
    ``timm:NAME`` or ``hf:ORG/NAME`` (transformers, from the local Hugging Face cache or a local
    folder ``hf:PATH``), with family "other", the generic masking preset (every convolution and
    Linear except the classifier) and the preprocessing of the library's default weights.

    Raises ValueError (one line): an unknown short name (with "did you mean"), an unknown
    library model, a missing optional dependency (naming the extra to install), a cache miss.
    """
    if name.startswith(LIBRARY_PREFIXES):
        return library_arch(name)
    if name not in ARCHS:
        raise ValueError(
            ARCHS.unknown_message(name)
            + f" Or a library classifier: {', '.join(p + 'NAME' for p in LIBRARY_PREFIXES)}."
        )
    return ARCHS.get(name)
