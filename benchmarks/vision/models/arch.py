"""What a vision architecture is: how to build it (a spec), its input size and preprocessing, its
classifier head and the masking preset, and which of the paper's recipes it follows.

The paper's models are torchvision's ``resnet18`` and ``vit_b_16``. The ``-mini`` versions are
built from the same torchvision classes (``ResNet``/``BasicBlock``, ``VisionTransformer``) with
fewer channels, blocks and layers and a 32 px input, so that module and parameter names follow
the same pattern and the same masking preset applies; they run the whole experiment on a CPU.
A spec builds its own model (:class:`ModelSpec`): another library's classifier brings its own
spec (:class:`benchmarks.vision.models.libraries.LibrarySpec`), so this module needs no library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.vision_transformer import VisionTransformer

from benchmarks.vision.models.preprocessing import Preprocessing
from subind.masks import MaskSelection

# The families whose recipes (batch sizes, epochs, weights options) the paper gives; any other
# classifier follows the ResNet's (see :func:`recipe_family`).
RECIPE_FAMILIES = ("resnet", "vit")


class ModelSpec(Protocol):
    """How to build one architecture's model; ``family``: "resnet", "vit" or "other"."""

    family: str

    def build(self, image_size: int, num_classes: int) -> nn.Module:
        """A fresh model: input (B, 3, image_size, image_size), logits (B, num_classes)."""
        ...


@dataclass(frozen=True)
class ResNetSpec:
    """A ResNet of ``BasicBlock``s. ``stem``: "imagenet" (7x7 stride-2 conv + 3x3 max pool, as
    resnet18) or "small" (3x3 stride-2 conv, no pooling: for 32 px inputs)."""

    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    stem: str = "imagenet"
    family = "resnet"  # a class attribute, not a field

    def build(self, image_size: int, num_classes: int) -> nn.Module:
        return _ResNet(self, num_classes)  # any input size: the pooling is adaptive


@dataclass(frozen=True)
class ViTSpec:
    """A torchvision ``VisionTransformer`` (image size comes from the ``VisionArch``)."""

    patch_size: int = 16
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    mlp_dim: int = 3072
    family = "vit"

    def build(self, image_size: int, num_classes: int) -> nn.Module:
        return VisionTransformer(
            image_size=image_size,
            patch_size=self.patch_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            mlp_dim=self.mlp_dim,
            num_classes=num_classes,
        )


# Paper preset (C.1): every layer except the classifier. ResNet: every Conv2d (the stem, every
# block convolution and every downsample 1x1). ViT: the patch embedding, every attention in- and
# out-projection and both Linear layers of every MLP. Biases and norm layers are never masked.
RESNET_MASKED = MaskSelection(module_types=("Conv2d",))
VIT_MASKED = MaskSelection(
    include=(
        "conv_proj.weight",
        "encoder.layers.*.self_attention.in_proj_weight",
        "encoder.layers.*.self_attention.out_proj.weight",
        "encoder.layers.*.mlp.0.weight",
        "encoder.layers.*.mlp.3.weight",
    ),
    exclude=("heads.*",),
)


TRAIN_CROPS = ("random-resized", "pad", "none", "resize-crop")


@dataclass(frozen=True)
class VisionArch:
    """One architecture: how to build it, what its inputs are and what the masks cover.

    Evaluation follows ``preprocessing`` (None: ImageNet's: the shorter side resized to
    ``round(image_size * resize_ratio)`` px, a centre crop of ``image_size`` px, ImageNet
    mean/std); a weight source brings its own
    (``benchmarks.vision.models.sources.load_pretrained``).
    Training augments with ``train_crop`` ("random-resized": RandomResizedCrop as torchvision's
    ImageNet recipe; "pad": a random crop after reflect-padding by image_size // 16 px; "none";
    "resize-crop": the evaluation resize then a random crop, the released ResNet recipe) and a
    horizontal flip when ``train_flip``. ``layer_norm_eps``: set on every ``nn.LayerNorm`` after
    building (transformers' ViT uses 1e-12 where torchvision's uses 1e-6); None keeps the
    architecture's own.
    """

    name: str
    image_size: int
    resize_ratio: float
    head: str  # module name of the classifier Linear
    masked: MaskSelection
    spec: ModelSpec = field(default_factory=ResNetSpec)
    train_crop: str = "random-resized"
    train_flip: bool = True
    preprocessing: Preprocessing | None = None
    layer_norm_eps: float | None = None

    def __post_init__(self) -> None:
        if self.train_crop not in TRAIN_CROPS:
            raise ValueError(
                f"{self.name}: unknown train_crop {self.train_crop!r}; use one of "
                f"{', '.join(TRAIN_CROPS)}"
            )
        if self.preprocessing is not None and self.preprocessing.size != self.image_size:
            raise ValueError(
                f"{self.name} takes {self.image_size} px images but its preprocessing gives "
                f"{self.preprocessing.size} px ({self.preprocessing.describe()}); make them agree"
            )

    @property
    def resolved_preprocessing(self) -> Preprocessing:
        """``preprocessing``, or ImageNet's from ``image_size`` and ``resize_ratio``."""
        return self.preprocessing or Preprocessing.imagenet(self.image_size, self.resize_ratio)

    @property
    def family(self) -> str:
        """ "vit" or "resnet", or "other" for a library classifier (``torchvision:``, ``timm:``,
        ``hf:`` names)."""
        return self.spec.family

    def build(self, num_classes: int) -> nn.Module:
        """A fresh model with its library's initialisation (deterministic under
        ``torch.manual_seed``) and a ``num_classes``-way head; input (B, 3, S, S), S = image_size;
        output logits (B, num_classes)."""
        assert num_classes >= 1, f"expected num_classes >= 1, got {num_classes}"
        model = self.spec.build(self.image_size, num_classes)
        if self.layer_norm_eps is not None:
            for module in model.modules():
                if isinstance(module, nn.LayerNorm):
                    module.eps = self.layer_norm_eps
        return model


def recipe_family(arch: VisionArch) -> str:
    """Whose recipe (batch sizes, epochs, weights option) ``arch`` follows: its family, or the
    ResNet's for a library classifier (family "other")."""
    return arch.family if arch.family in RECIPE_FAMILIES else "resnet"


class _ResNet(ResNet):
    """torchvision's ``ResNet`` with configurable widths and stem, same module names as resnet18
    (conv1, bn1, relu, maxpool, layer1..4, avgpool, fc) and the same initialisation."""

    def __init__(self, spec: ResNetSpec, num_classes: int) -> None:
        # ResNet.__init__ hard-codes widths 64..512, so set up its attributes here and reuse its
        # _make_layer and forward.
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = spec.widths[0], 1, 1, 64
        if spec.stem == "imagenet":
            self.conv1 = nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        elif spec.stem == "small":
            self.conv1 = nn.Conv2d(3, self.inplanes, 3, stride=2, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"unknown ResNet stem {spec.stem!r}; use 'imagenet' or 'small'")
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(BasicBlock, spec.widths[0], spec.blocks[0])
        self.layer2 = self._make_layer(BasicBlock, spec.widths[1], spec.blocks[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, spec.widths[2], spec.blocks[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, spec.widths[3], spec.blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(spec.widths[3] * BasicBlock.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
