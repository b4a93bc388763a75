"""Vision architectures (a registry, and any library classifier by name), weight files,
classifier heads and the masking preset.

The paper's models are torchvision's ``resnet18`` and ``vit_b_16``. The ``-mini`` versions are
built from the same torchvision classes (``ResNet``/``BasicBlock``, ``VisionTransformer``) with
fewer channels, blocks and layers and a 32 px input, so that module and parameter names follow
the same pattern and the same masking preset applies; they run the whole experiment on a CPU.
:func:`arch_for` also builds ``torchvision:NAME``, ``timm:NAME`` and ``hf:ORG/NAME`` classifiers
(``benchmarks.vision.libraries``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.vision_transformer import VisionTransformer

from benchmarks.vision.preprocessing import Preprocessing
from subind.masks import MaskSelection
from subind.registry import Registry


@dataclass(frozen=True)
class ResNetSpec:
    """A ResNet of ``BasicBlock``s. ``stem``: "imagenet" (7x7 stride-2 conv + 3x3 max pool, as
    resnet18) or "small" (3x3 stride-2 conv, no pooling: for 32 px inputs)."""

    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    stem: str = "imagenet"


@dataclass(frozen=True)
class ViTSpec:
    """A torchvision ``VisionTransformer`` (image size comes from the ``VisionArch``)."""

    patch_size: int = 16
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    mlp_dim: int = 3072


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


@dataclass(frozen=True)
class LibrarySpec:
    """A classifier another library builds by name: ``library`` "torchvision"
    (``torchvision.models.get_model``), "timm" (``timm.create_model``) or "hf" (transformers
    ``AutoModelForImageClassification`` from the config in ``folder``, answering plain logits)."""

    library: str
    name: str
    folder: str | None = None  # hf: the checkpoint folder (local, or a Hugging Face cache snapshot)


TRAIN_CROPS = ("random-resized", "pad", "none", "resize-crop")


@dataclass(frozen=True)
class VisionArch:
    """One architecture: how to build it, what its inputs are and what the masks cover.

    Evaluation follows ``preprocessing`` (None: ImageNet's: the shorter side resized to
    ``round(image_size * resize_ratio)`` px, a centre crop of ``image_size`` px, ImageNet
    mean/std); a weight source brings its own (``benchmarks.vision.sources.load_pretrained``).
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
    spec: ResNetSpec | ViTSpec | LibrarySpec = field(default_factory=ResNetSpec)
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
        """ "vit" or "resnet": which of the paper's recipes (batch size, weights) applies;
        "other" for a library classifier (``torchvision:``, ``timm:``, ``hf:`` names)."""
        if isinstance(self.spec, LibrarySpec):
            return "other"
        return "vit" if isinstance(self.spec, ViTSpec) else "resnet"

    def build(self, num_classes: int) -> nn.Module:
        """A fresh model with its library's initialisation (deterministic under
        ``torch.manual_seed``) and a ``num_classes``-way head; input (B, 3, S, S), S = image_size;
        output logits (B, num_classes)."""
        assert num_classes >= 1, f"expected num_classes >= 1, got {num_classes}"
        model = self._build(num_classes)
        if self.layer_norm_eps is not None:
            for module in model.modules():
                if isinstance(module, nn.LayerNorm):
                    module.eps = self.layer_norm_eps
        return model

    def _build(self, num_classes: int) -> nn.Module:
        if isinstance(self.spec, LibrarySpec):
            from benchmarks.vision.libraries import build_library_model

            return build_library_model(self.spec, num_classes)
        if isinstance(self.spec, ViTSpec):
            s = self.spec
            return VisionTransformer(
                image_size=self.image_size,
                patch_size=s.patch_size,
                num_layers=s.num_layers,
                num_heads=s.num_heads,
                hidden_dim=s.hidden_dim,
                mlp_dim=s.mlp_dim,
                num_classes=num_classes,
            )
        return _ResNet(self.spec, num_classes)


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

LIBRARY_PREFIXES = ("torchvision:", "timm:", "hf:")


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
        from benchmarks.vision.libraries import library_arch

        return library_arch(name)
    if name not in ARCHS:
        raise ValueError(
            ARCHS.unknown_message(name)
            + f" Or a library classifier: {', '.join(p + 'NAME' for p in LIBRARY_PREFIXES)}."
        )
    return ARCHS.get(name)


# ------------------------------------------------------------------------------ weights, heads
class WeightsError(ValueError):
    """A weight file cannot be read or does not fit the architecture (one-line message)."""


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict {name: tensor} from ``path``: ``.safetensors``, or a ``torch.save`` file read
    with ``weights_only=True`` (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper and DDP's
    ``module.`` prefix are taken off). Raises WeightsError."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist; pass a torchvision state dict file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch/safetensors raise many types; all mean "unreadable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"{path} cannot be read as weights ({first}); save the state dict with "
            f"torch.save(model.state_dict(), path) or safetensors"
        ) from None
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise WeightsError(
            f"{path} holds a {type(obj).__name__}, not a state dict (parameter name -> tensor); "
            f"save it with torch.save(model.state_dict(), path)"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def head_outputs(state_dict: Mapping[str, torch.Tensor], arch: VisionArch) -> int:
    """Number of classes of the head stored in ``state_dict`` (rows of ``<head>.weight``)."""
    key = f"{arch.head}.weight"
    if key not in state_dict or state_dict[key].ndim != 2:
        raise WeightsError(
            f"the weights have no 2-D {key!r}, so they are not a torchvision {arch.name} state "
            f"dict; check --arch"
        )
    return int(state_dict[key].shape[0])


def load_weights(
    model: nn.Module,
    path: str | Path | Mapping[str, torch.Tensor],
    *,
    name: str | None = None,
) -> None:
    """Load a state dict (a file as in :func:`read_weights`, or a dict) into ``model`` strictly.

    Raises WeightsError naming the first missing key, mismatched shape or unexpected key (in the
    model's parameter order) before anything is copied, so a failed load leaves ``model`` as it was.
    ``name``: how messages call the weights (default: the path, or "the state dict").
    """
    sd = read_weights(path) if isinstance(path, str | Path) else dict(path)
    where = name or (f"{path}" if isinstance(path, str | Path) else "the state dict")
    expected = model.state_dict()
    fix = "pass weights of the same architecture and size (check --arch)"
    # BatchNorm fills in a missing num_batches_tracked itself (torchvision's 2017 ResNet files
    # predate that buffer), so only the other keys must be present.
    needed = [k for k in expected if not k.endswith("num_batches_tracked")]
    for key in needed:
        tensor = expected[key]
        if key not in sd:
            more = sum(k not in sd for k in needed) - 1
            extra = f" (and {more} more)" if more else ""
            raise WeightsError(f"{where} does not fit: missing key {key!r}{extra}; {fix}")
        if tuple(sd[key].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"{where} does not fit: {key!r} has shape {tuple(sd[key].shape)} in the file but "
                f"{tuple(tensor.shape)} in the model; {fix}"
            )
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        raise WeightsError(
            f"{where} does not fit: unexpected key {unexpected[0]!r}"
            + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
            + f"; {fix}"
        )
    model.load_state_dict(sd, strict=True)


def set_head(model: nn.Module, arch: VisionArch, head: nn.Module) -> None:
    """Put ``head`` in place of the module ``arch.head`` (e.g. ``nn.Identity()`` to read the
    backbone's features)."""
    parent_name, _, child = arch.head.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, head)


def replace_head(model: nn.Module, arch: VisionArch, num_classes: int) -> nn.Module:
    """Put a new ``nn.Linear(in_features, num_classes)`` (PyTorch's default initialisation, drawn
    from the global torch generator) in place of ``arch.head``, on the old head's device and dtype;
    returns ``model``."""
    old = model.get_submodule(arch.head)
    assert isinstance(old, nn.Linear), f"expected {arch.head} to be nn.Linear, got {type(old)}"
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    set_head(model, arch, new)
    return model


def num_outputs(model: nn.Module, arch: VisionArch) -> int:
    """Number of classes the model's head outputs."""
    return int(model.get_submodule(arch.head).out_features)
