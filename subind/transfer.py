"""Subnetwork transfer (paper Section 3.2, Equation 1).

The new model's masked tensors become ``gamma * theta_original + (1 - gamma) * theta_new`` with
theta_new from the architecture's own initialiser (pass a freshly constructed model). With a
frozen subnetwork (the default) the entries where gamma = 1 are a parametrization
``torch.where(gamma, theta_original, theta)``: they get no gradient and weight decay cannot touch
them, so they stay bit-for-bit equal to the original after any training.

Parameters outside the masked tensors (embeddings, norms, biases, heads) and buffers follow
``unmasked``: ``"inherit"`` copies them from the base model (what the paper's released arithmetic
code did), ``"reinit"`` keeps the fresh model's initialisation (what the paper's text says).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from subind.masks import split_name

UNMASKED_MODES = ("inherit", "reinit")


class _FrozenEntries(nn.Module):
    """Parametrization theta -> where(mask, original, theta): masked entries are constants."""

    def __init__(self, original: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(device=original.device, dtype=torch.bool))
        self.register_buffer("original", original.detach().clone())

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, self.original, theta)


def _check_unmasked(unmasked: str) -> None:
    if unmasked not in UNMASKED_MODES:
        raise ValueError(f"unmasked must be one of {UNMASKED_MODES}, got {unmasked!r}")


def transfer(
    base: nn.Module,
    fresh: nn.Module,
    masks: dict[str, torch.Tensor],
    unmasked: str = "inherit",
    trainable_subnetwork: bool = False,
) -> nn.Module:
    """Transfer the entries of ``base`` selected by ``masks`` ({parameter name: bool tensor})
    into ``fresh`` (a newly initialised model of the same architecture), in place; return it.
    """
    _check_unmasked(unmasked)
    base_params = dict(base.named_parameters())
    fresh_params = dict(fresh.named_parameters())
    for name, m in masks.items():
        if name not in base_params or name not in fresh_params:
            raise ValueError(
                f"mask {name!r} names no parameter of both models; base and fresh model must be "
                "the same architecture the subnetwork was found on"
            )
        if not base_params[name].shape == m.shape == fresh_params[name].shape:
            raise ValueError(
                f"mask {name!r} has shape {tuple(m.shape)}, the models' parameter has "
                f"{tuple(base_params[name].shape)} / {tuple(fresh_params[name].shape)}: build the "
                "same architecture the subnetwork was found on"
            )
    with torch.no_grad():
        if unmasked == "inherit":
            for name, p in fresh_params.items():
                if name not in masks:
                    p.copy_(base_params[name])
            base_buffers = dict(base.named_buffers())
            for name, b in fresh.named_buffers():
                if name in base_buffers:
                    b.copy_(base_buffers[name])
        for name, m in masks.items():
            theta_new, theta_orig = fresh_params[name], base_params[name].detach()
            m = m.to(theta_new.device)
            if trainable_subnetwork:
                theta_new.copy_(torch.where(m, theta_orig, theta_new))
            else:
                module_name, pname = split_name(name)
                frozen = _FrozenEntries(theta_orig, m)
                parametrize.register_parametrization(
                    fresh.get_submodule(module_name), pname, frozen, unsafe=True
                )
    return fresh


def bake(model: nn.Module) -> nn.Module:
    """Remove transfer parametrizations in place, leaving plain parameters with the frozen
    entries written in (e.g. before saving a transferred model)."""
    for module in list(model.modules()):
        plist = getattr(module, "parametrizations", None)
        if plist is None:
            continue
        for pname in list(plist.keys()):
            if any(isinstance(p, _FrozenEntries) for p in plist[pname]):
                parametrize.remove_parametrizations(module, pname, leave_parametrized=True)
    return model


def _clean_names(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """{parameter name as in the un-parametrized model: (owning module, attribute)}."""
    out = {}
    for name, _ in model.named_parameters():
        if ".parametrizations." in name:
            if not name.endswith(".original"):
                continue  # a parametrization's own parameter (e.g. mask scores)
            module_name, _, rest = name.partition(".parametrizations.")
            pname = rest[: -len(".original")]
        else:
            module_name, _, pname = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        out[f"{module_name}.{pname}" if module_name else pname] = (module, pname)
    return out


def parameter_entries(
    model: nn.Module,
) -> dict[str, tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """{name as in the un-parametrized model: (theta, frozen mask, frozen values)} of a model
    :func:`transfer` made: theta is the tensor the optimizer sees; for a transferred tensor the
    forward pass uses ``where(mask, values, theta)``, for any other tensor mask and values are
    None. Raises ValueError for a parametrization other than transfer's."""
    out = {}
    for name, (module, pname) in _clean_names(model).items():
        plist = getattr(module, "parametrizations", None)
        if plist is not None and pname in plist:
            stack = list(plist[pname])
            if len(stack) != 1 or not isinstance(stack[0], _FrozenEntries):
                raise ValueError(
                    f"{name}: only the transfer parametrization (frozen entries) is understood "
                    "here; bake or remove other parametrizations first"
                )
            out[name] = (plist[pname].original, stack[0].mask, stack[0].original)
        else:
            out[name] = (getattr(module, pname), None, None)
    return out


def effective_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """{name in the un-parametrized model: the tensor the forward pass uses}."""
    return {n: getattr(m, p).detach() for n, (m, p) in _clean_names(model).items()}


def describe_transfer(
    model: nn.Module, masks: dict[str, torch.Tensor], unmasked: str, trainable_subnetwork: bool
) -> dict[str, Any]:
    """Which parameters a transferred model took from the base model, for the results record."""
    _check_unmasked(unmasked)
    outside = [n for n in _clean_names(model) if n not in masks]
    return {
        "masked_tensors": sorted(masks),
        "unmasked": unmasked,
        "subnetwork_trainable": trainable_subnetwork,
        "inherited_unmasked": sorted(outside) if unmasked == "inherit" else [],
        "reinitialized_unmasked": sorted(outside) if unmasked == "reinit" else [],
    }
