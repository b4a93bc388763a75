"""Weight files and classifier heads: reading a state dict from any common file, loading it
strictly with one-line errors, and swapping or measuring an architecture's head."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from benchmarks.vision.models.arch import VisionArch


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
