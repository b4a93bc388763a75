"""The ground floor of ``benchmarks.vision``: architectures, their weights and preprocessing.
Nothing here imports the rest of ``benchmarks.vision`` (tests/test_layers.py checks it).

Inside, each module imports only the ones above it in this list:

    preprocessing.py  Preprocessing, read from each weight source's config (no torch)
    arch.py           VisionArch, the ResNet / ViT specs, masking presets, recipe_family
    weights.py        state dict files, strict loading, classifier heads
    libraries.py      torchvision: / timm: / hf: classifiers by name, their cached weights
    convert.py        transformers ResNet / ViT checkpoints -> torchvision names
    zoo.py            ARCHS (the registry) and arch_for
    sources.py        weight sources and load_pretrained: the model and its adapted arch
"""

from benchmarks.vision.models.arch import (
    RECIPE_FAMILIES,
    RESNET_MASKED,
    TRAIN_CROPS,
    VIT_MASKED,
    ResNetSpec,
    VisionArch,
    ViTSpec,
    recipe_family,
)
from benchmarks.vision.models.libraries import LIBRARY_PREFIXES, LibraryError, LibrarySpec
from benchmarks.vision.models.preprocessing import Preprocessing, PreprocessingError
from benchmarks.vision.models.sources import Pretrained, WeightSource, load_pretrained
from benchmarks.vision.models.weights import (
    WeightsError,
    load_weights,
    num_outputs,
    read_weights,
    replace_head,
    set_head,
)
from benchmarks.vision.models.zoo import ARCHS, arch_for

__all__ = [
    "ARCHS",
    "LIBRARY_PREFIXES",
    "RECIPE_FAMILIES",
    "RESNET_MASKED",
    "TRAIN_CROPS",
    "VIT_MASKED",
    "LibraryError",
    "LibrarySpec",
    "Preprocessing",
    "PreprocessingError",
    "Pretrained",
    "ResNetSpec",
    "ViTSpec",
    "VisionArch",
    "WeightSource",
    "WeightsError",
    "arch_for",
    "load_pretrained",
    "load_weights",
    "num_outputs",
    "read_weights",
    "recipe_family",
    "replace_head",
    "set_head",
]
