"""Where pretrained weights come from, and the preprocessing that comes with them.

A weight source is one of

- a state dict file (``.pth``/``.pt``/``.bin`` or ``.safetensors``) with the architecture's own
  parameter names (torchvision's for the registered architectures): the architecture's
  preprocessing (ImageNet's for the registered ones, the library default's for library ones);
- a transformers checkpoint: a local folder with ``config.json`` and ``model.safetensors`` or
  ``pytorch_model.bin`` (sharded or not), or ``hf://ORG/NAME[@REV]`` found in the LOCAL
  Hugging Face cache (nothing is downloaded). Its ``preprocessor_config.json`` gives the
  preprocessing. ``ResNetForImageClassification`` and ``ViTForImageClassification`` are
  converted to torchvision's ``ResNet`` / ``VisionTransformer`` names (same logits), so the
  masking presets, transfer and saving work as with torchvision weights; an ``hf:`` architecture
  loads its checkpoints as they are;
- nothing (``None``), for a library architecture: its default weights from the local caches.

:func:`load_pretrained` resolves a source, builds the model and returns it with the architecture
adapted to the weights (preprocessing, LayerNorm eps).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.vision.models.arch import VisionArch
from benchmarks.vision.models.convert import check_heads, convert_checkpoint, read_checkpoint
from benchmarks.vision.models.libraries import (
    LibrarySpec,
    default_weights,
    hf_from_pretrained,
    hf_snapshot,
)
from benchmarks.vision.models.preprocessing import Preprocessing, from_transformers
from benchmarks.vision.models.weights import WeightsError, head_outputs, load_weights, read_weights

HF_PREFIX = "hf://"


@dataclass(frozen=True)
class WeightSource:
    """A resolved weight source. ``kind``: "file" (a state dict file) or "transformers" (a
    checkpoint folder); ``path``: the file or folder; ``given``: as the user wrote it
    ("pretrained" for a library architecture's default weights); ``tag``: a default name for
    outputs (the file's stem, the folder's, repository's or model's name)."""

    kind: str
    path: Path
    given: str
    tag: str


def _last_name(name: str) -> str:
    """'hf://org/name@rev' / 'hf:org/name' / 'torchvision:resnet18' / '/a/b/' -> 'name' ..."""
    return name.split(":", 1)[-1].split("@")[0].rstrip("/").split("/")[-1]


def resolve_weights(weights: str | Path | None, arch: VisionArch) -> WeightSource:
    """``weights`` (a file, a transformers folder, ``hf://ORG/NAME[@REV]``; None or "pretrained"
    for a library architecture's default weights) -> a :class:`WeightSource`. Raises
    WeightsError (one line)."""
    given = "pretrained" if weights is None else str(weights)
    if given == "pretrained":
        if not isinstance(arch.spec, LibrarySpec):
            raise WeightsError(
                f"{arch.name} needs weights: pass a torchvision state dict file, a transformers "
                f"checkpoint folder or hf://ORG/NAME"
            )
        path = default_weights(arch)
        kind = "transformers" if path.is_dir() else "file"
        return WeightSource(kind, path, given, _last_name(arch.name))
    if given.startswith(HF_PREFIX):
        repo, _, revision = given[len(HF_PREFIX) :].strip("/").partition("@")
        return WeightSource(
            "transformers", hf_snapshot(repo, revision or None), given, _last_name(given)
        )
    path = Path(given).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightsError(
                f"{path} is a folder without config.json; pass a state dict file or a "
                f"transformers checkpoint folder (config.json + model.safetensors)"
            )
        return WeightSource("transformers", path, given, _last_name(str(path.resolve())))
    if not path.is_file():
        raise WeightsError(
            f"weight file {path} does not exist; pass a torchvision state dict file, a "
            f"transformers checkpoint folder or hf://ORG/NAME"
        )
    return WeightSource("file", path, given, path.stem)


# ------------------------------------------------------------------------------ loading
@dataclass(frozen=True)
class Pretrained:
    """A pretrained model (eval mode, CPU) and the architecture adapted to its weights: the
    source's preprocessing and LayerNorm eps (``dataclasses.replace`` of the one asked for, same
    name). ``classes``: outputs of its head. Use ``arch`` wherever the pipeline passes one."""

    model: nn.Module
    arch: VisionArch
    classes: int
    source: WeightSource

    @property
    def preprocessing(self) -> Preprocessing:
        return self.arch.resolved_preprocessing


def _checkpoint_preprocessing(folder: Path, arch: VisionArch) -> Preprocessing | None:
    """The checkpoint's own preprocessing (preprocessor_config.json), or the architecture's."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return arch.preprocessing
    return from_transformers(json.loads(path.read_text()), str(path))


def _adapted(
    arch: VisionArch, pre: Preprocessing | None, eps: float | None, where: str
) -> VisionArch:
    if pre is not None and pre.size != arch.image_size:
        raise WeightsError(
            f"{where} comes with {pre.size} px preprocessing ({pre.describe()}) but {arch.name} "
            f"takes {arch.image_size} px images; choose the matching --arch"
        )
    return dataclasses.replace(
        arch, preprocessing=pre, layer_norm_eps=arch.layer_norm_eps if eps is None else eps
    )


def _load_file(arch: VisionArch, source: WeightSource) -> Pretrained:
    state = read_weights(source.path)
    classes = head_outputs(state, arch)
    model = arch.build(classes)
    load_weights(model, state, name=f"{source.given} (for --arch {arch.name})")
    return Pretrained(model.eval(), arch, classes, source)


def _load_hf_arch(arch: VisionArch, source: WeightSource) -> Pretrained:
    """An ``hf:`` architecture from a checkpoint folder: transformers loads it as it is."""
    where = f"{source.given} (for --arch {arch.name})"
    model = hf_from_pretrained(source.path)
    with torch.device("meta"):
        expected = set(arch.build(1).state_dict())
    got = set(model.state_dict())
    head = arch.head + "."
    if {k for k in got if not k.startswith(head)} != {
        k for k in expected if not k.startswith(head)
    }:
        raise WeightsError(f"{where} does not fit: another architecture; check --arch")
    classes = int(model.get_submodule(arch.head).out_features)
    pre = _checkpoint_preprocessing(source.path, arch)
    return Pretrained(model.eval(), _adapted(arch, pre, None, where), classes, source)


def load_pretrained(arch: VisionArch, weights: str | Path | None) -> Pretrained:
    """Resolve ``weights`` (see :func:`resolve_weights`), build ``arch`` with the head size the
    weights have, load them strictly, and adapt ``arch`` to them (a transformers checkpoint's
    preprocessing and LayerNorm eps). Raises WeightsError / PreprocessingError (one line)."""
    source = resolve_weights(weights, arch)
    if source.kind == "file":
        return _load_file(arch, source)
    if isinstance(arch.spec, LibrarySpec) and arch.spec.library == "hf":
        return _load_hf_arch(arch, source)
    where = f"{source.given} (for --arch {arch.name})"
    config, hf_state = read_checkpoint(source.path)
    state, eps = convert_checkpoint(config, hf_state, where)
    adapted = _adapted(arch, _checkpoint_preprocessing(source.path, arch), eps, where)
    classes = head_outputs(state, adapted)
    model = adapted.build(classes)
    load_weights(model, state, name=where)
    check_heads(model, config, where)
    return Pretrained(model.eval(), adapted, classes, source)
