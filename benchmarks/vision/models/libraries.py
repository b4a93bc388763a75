"""Classifiers of other libraries by name: ``torchvision:NAME``, ``timm:NAME``, ``hf:ORG/NAME``,
and the local caches their weights come from.

:func:`library_arch` turns such a name into a :class:`~benchmarks.vision.models.arch.VisionArch`
whose spec is a :class:`LibrarySpec`: it
builds the model once on the meta device (no memory, no initialisation) to find its classifier
(the Linear whose rows are the classes) and the parameters the generic masking preset covers,
and reads the preprocessing of the library's default weights. Nothing is downloaded: weights
come from a file, a transformers folder, or the local caches (torch hub's for torchvision and
timm URLs, Hugging Face's for timm hub weights and transformers checkpoints).

timm and transformers are optional (``pip install 'subind[timm]'`` / ``'subind[hf]'``) and
imported only when such a name is used (``_import``).
"""

from __future__ import annotations

import difflib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from huggingface_hub import snapshot_download, try_to_load_from_cache
from torch import nn

from benchmarks.vision.models.arch import VisionArch
from benchmarks.vision.models.preprocessing import (
    Preprocessing,
    from_timm_config,
    from_torchvision_preset,
    from_transformers,
)
from benchmarks.vision.models.weights import WeightsError
from subind.masks import MaskSelection

LIBRARIES = ("torchvision", "timm", "hf")
LIBRARY_PREFIXES = tuple(f"{library}:" for library in LIBRARIES)
_EXTRAS = {"timm": "timm", "transformers": "hf"}
# The head size models are probed with: unusual, so that the classifier is told apart from other
# Linear layers by its number of outputs.
_PROBE_CLASSES = 997
# Module types whose weights the generic preset masks (subclasses count: timm's and torchvision's
# own Linear and convolution classes); MultiheadAttention holds a packed in_proj_weight.
_MASKED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.MultiheadAttention)


class LibraryError(ValueError):
    """A library classifier cannot be built or found (one-line message)."""


@dataclass(frozen=True)
class LibrarySpec:
    """A classifier another library builds by name: ``library`` "torchvision"
    (``torchvision.models.get_model``), "timm" (``timm.create_model``) or "hf" (transformers
    ``AutoModelForImageClassification`` from the config in ``folder``, answering plain logits)."""

    library: str
    name: str
    folder: str | None = None  # hf: the checkpoint folder (local, or a Hugging Face cache snapshot)
    family = "other"  # no paper recipe of its own (it follows the ResNet's)

    def build(self, image_size: int, num_classes: int) -> nn.Module:
        """The library's fresh model (its own input size: ``image_size`` is its preprocessing's)."""
        return build_library_model(self, num_classes)


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = _EXTRAS[module]
        raise LibraryError(
            f"{module} is not installed; install it with pip install 'subind[{extra}]'"
        ) from None


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


# ------------------------------------------------------------------------------ names -> specs
def library_spec(name: str) -> LibrarySpec:
    """``torchvision:NAME`` / ``timm:NAME`` / ``hf:ORG/NAME[@REV]`` / ``hf:PATH`` -> its spec,
    the name checked against the library (hf: the checkpoint found locally)."""
    library, _, model = name.partition(":")
    if library not in LIBRARIES or not model:
        raise LibraryError(
            f"{name!r} is not a library classifier; use torchvision:NAME, timm:NAME or hf:ORG/NAME"
        )
    if library == "torchvision":
        known = torchvision.models.list_models(module=torchvision.models)
        if model not in known:
            raise LibraryError(
                f"torchvision has no classification model {model!r}.{_suggest(model, known)}"
            )
        return LibrarySpec("torchvision", model)
    if library == "timm":
        timm = _import("timm")
        if not timm.is_model(model):
            raise LibraryError(
                f"timm has no model {model!r}.{_suggest(model, timm.list_models())} "
                f"(timm.list_models() lists them)"
            )
        return LibrarySpec("timm", model)
    return LibrarySpec("hf", model, str(_hf_folder(model)))


def _hf_folder(model: str) -> Path:
    """A local folder, or ORG/NAME[@REV] in the local Hugging Face cache."""
    if Path(model).is_dir():
        folder = Path(model).resolve()
    elif model.startswith((".", "/", "~")):
        raise LibraryError(f"hf:{model}: no such folder; give hf:ORG/NAME or an existing folder")
    else:
        repo, _, revision = model.partition("@")
        folder = hf_snapshot(repo, revision or None)
    if not (folder / "config.json").is_file():
        raise LibraryError(f"{folder} has no config.json, so it is not a transformers checkpoint")
    return folder


# ------------------------------------------------------------------------------ building
def build_library_model(spec: LibrarySpec, num_classes: int) -> nn.Module:
    """A fresh ``num_classes``-way classifier with the library's initialisation; input
    (B, 3, S, S) normalised images, output logits (B, num_classes) (transformers models answer
    plain logits instead of their output objects)."""
    if spec.library == "torchvision":
        return torchvision.models.get_model(spec.name, weights=None, num_classes=num_classes)
    if spec.library == "timm":
        return _import("timm").create_model(spec.name, pretrained=False, num_classes=num_classes)
    transformers = _import("transformers")
    config = transformers.AutoConfig.from_pretrained(spec.folder, local_files_only=True)
    config.num_labels = num_classes
    return logits_only(transformers.AutoModelForImageClassification.from_config(config))


def hf_from_pretrained(folder: str | Path) -> nn.Module:
    """The transformers classifier saved in ``folder`` (its own head), answering plain logits."""
    transformers = _import("transformers")
    model = transformers.AutoModelForImageClassification.from_pretrained(
        str(folder), local_files_only=True
    )
    return logits_only(model)


_LOGITS_CLASSES: dict[type, type] = {}


def logits_only(model: nn.Module) -> nn.Module:
    """Make a transformers ``*ForImageClassification`` answer ``model(x)`` with its logits tensor
    (B, classes). Its class is swapped for a subclass whose forward differs, so parameter names
    stay transformers' own and its state dicts load as they are."""
    cls = type(model)
    if cls not in _LOGITS_CLASSES:

        def forward(self: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
            return cls.forward(self, pixel_values=pixel_values).logits

        _LOGITS_CLASSES[cls] = type(f"{cls.__name__}Logits", (cls,), {"forward": forward})
    model.__class__ = _LOGITS_CLASSES[cls]
    return model


# ------------------------------------------------------------------------------ heads, masks
def find_head(model: nn.Module, num_classes: int, where: str) -> str:
    """Module name of the classifier: timm's ``get_classifier()``, otherwise the last
    ``nn.Linear`` in module order; it must output ``num_classes``."""
    head = None
    if hasattr(model, "get_classifier"):  # timm
        target = model.get_classifier()
        head = next((n for n, m in model.named_modules() if m is target), None)
    if head is None:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    module = model.get_submodule(head) if head else None
    if not isinstance(module, nn.Linear) or module.out_features != num_classes:
        raise LibraryError(
            f"{where}: cannot find its classifier (an nn.Linear with one output per class); "
            f"only models whose last layer is a Linear are supported"
        )
    return head


def generic_masking(model: nn.Module, head: str) -> MaskSelection:
    """The generic preset: the weights of every convolution and Linear (and attention's packed
    in-projection), the classifier ``head`` excluded; biases and norm layers never."""
    types = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _MASKED_TYPES)})
    return MaskSelection(module_types=tuple(types), exclude=(f"{head}.*", "*.bias_k", "*.bias_v"))


# ------------------------------------------------------------------------------ preprocessing
def default_preprocessing(spec: LibrarySpec, model: nn.Module) -> Preprocessing:
    """The preprocessing of the library's default weights: torchvision's weight metadata, timm's
    pretrained_cfg, the checkpoint's preprocessor_config.json (none: ImageNet's at the config's
    image_size, else 224 px)."""
    if spec.library == "torchvision":
        weights = torchvision.models.get_model_weights(spec.name).DEFAULT
        return from_torchvision_preset(weights.transforms())
    if spec.library == "timm":
        timm = _import("timm")
        return from_timm_config(timm.data.resolve_data_config(model=model), f"timm:{spec.name}")
    folder = Path(str(spec.folder))
    if (folder / "preprocessor_config.json").is_file():
        config = json.loads((folder / "preprocessor_config.json").read_text())
        return from_transformers(config, str(folder / "preprocessor_config.json"))
    size = json.loads((folder / "config.json").read_text()).get("image_size", 224)
    return Preprocessing.imagenet(int(size), 256 / 224)


def library_arch(name: str) -> VisionArch:
    """The :class:`VisionArch` of a library classifier (see :func:`library_spec`): family
    "other", its classifier as ``head``, the generic masking preset, the preprocessing of its
    default weights, RandomResizedCrop training."""
    spec = library_spec(name)
    with torch.device("meta"):
        model = build_library_model(spec, _PROBE_CLASSES)
    head = find_head(model, _PROBE_CLASSES, name)
    pre = default_preprocessing(spec, model)
    return VisionArch(
        name=name,
        image_size=pre.size,
        resize_ratio=pre.resize / pre.size if isinstance(pre.resize, int) else 1.0,
        head=head,
        masked=generic_masking(model, head),
        spec=spec,
        preprocessing=pre,
    )


# ------------------------------------------------------------------------------ cached weights
def default_weights(arch: VisionArch) -> Path:
    """Where a library classifier's default pretrained weights lie in the local caches: a state
    dict file (torchvision, timm) or the transformers folder (hf). Raises WeightsError saying how
    to fetch them when they are not there; nothing is downloaded."""
    spec = arch.spec
    assert isinstance(spec, LibrarySpec), f"{arch.name} is not a library classifier"
    if spec.library == "hf":
        return Path(str(spec.folder))
    if spec.library == "torchvision":
        url = torchvision.models.get_model_weights(spec.name).DEFAULT.url
        fetch = f"torchvision.models.get_model('{spec.name}', weights='DEFAULT')"
        return _hub_file(url, arch.name, f'python -c "import torchvision; {fetch}"')
    timm = _import("timm")
    with torch.device("meta"):
        cfg: dict[str, Any] = dict(timm.create_model(spec.name, pretrained=False).pretrained_cfg)
    fetch = f"python -c \"import timm; timm.create_model('{spec.name}', pretrained=True)\""
    if cfg.get("hf_hub_id"):
        return _timm_hub_file(cfg, arch.name, fetch)
    if cfg.get("url"):
        return _hub_file(cfg["url"], arch.name, fetch)
    raise WeightsError(f"{arch.name} has no pretrained weights in timm; pass --weights FILE")


def _hub_file(url: str, name: str, fetch: str) -> Path:
    """torch.hub's cache file of ``url`` (what load_state_dict_from_url would download)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if not path.is_file():
        raise WeightsError(
            f"{name}'s default weights are not in the torch hub cache ({path} is missing); "
            f"fetch them with {fetch} where there is internet, or pass --weights FILE"
        )
    return path


def _timm_hub_file(cfg: dict[str, Any], name: str, fetch: str) -> Path:
    repo, _, revision = str(cfg["hf_hub_id"]).partition("@")
    names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else []
    for filename in names + ["model.safetensors", "pytorch_model.bin"]:
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    raise WeightsError(
        f"{name}'s default weights ({repo}) are not in the local Hugging Face cache; fetch them "
        f"with hf download {repo} (or {fetch}) where there is internet, or pass --weights FILE"
    )


def hf_snapshot(repo_id: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """The folder of ``repo_id`` (a model repository, ``ORG/NAME``) at ``revision`` (default:
    main) in the local Hugging Face cache (``cache_dir``, default ``HF_HUB_CACHE``). Never
    downloads: a cache miss raises WeightsError saying how to fetch it."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise WeightsError(f"{repo_id!r} is not a Hugging Face repository id; use ORG/NAME")
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True
        )
    except Exception:  # LocalEntryNotFoundError and friends: all mean "not cached"
        at = f"@{revision}" if revision else ""
        rev = f" --revision {revision}" if revision else ""
        raise WeightsError(
            f"{repo_id}{at} is not in the local Hugging Face cache; if the name is right, fetch "
            f"it first with hf download {repo_id}{rev} (huggingface-cli download in older "
            f"huggingface_hub) where there is internet, or give a local folder; if not, check "
            f"it on huggingface.co (e.g. microsoft/resnet-18, google/vit-base-patch16-224)"
        ) from None
    return Path(folder)
