"""Continuous-sparsification masks on any parameters of any ``nn.Module`` (paper Appendix A).

One mechanism for every layer type: a mask is a ``torch.nn.utils.parametrize`` parametrization
registered on the parameter itself, so ``nn.Linear.weight``, ``nn.Conv2d.weight``, transformers'
GPT-2 ``Conv1D.weight`` and ``nn.MultiheadAttention.in_proj_weight`` are all masked the same way.

    soft mask (training):   theta * sigmoid(beta * s)
    hard mask (evaluation): theta * 1[s > 0]
    penalty:                lambda * sum over all masked entries of sigmoid(beta * s)

The base weights are frozen; only the scores ``s`` are trainable.

A training step should run its forward and penalty inside ``MaskSet.cached()``: the gates of all
masks are then computed together (a few foreach ops instead of several ops per tensor) and each
masked weight once, with results bitwise equal to the uncached path on CPU (tested; CUDA's fused
foreach kernels may round differently in the last bit).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize


@dataclass(frozen=True)
class MaskSelection:
    """Which parameters to mask.

    A parameter is selected when its owning module's class name is in ``module_types`` (empty:
    any type) and its full name matches one of ``include`` (fnmatch patterns; empty: any name),
    and it matches none of ``exclude``. Biases (names ending in ``bias``) are skipped unless
    ``mask_bias``; parameters with fewer than ``min_ndim`` dimensions are skipped too.
    """

    module_types: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    mask_bias: bool = False
    min_ndim: int = 1


def select_parameters(model: nn.Module, selection: MaskSelection) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the parameters ``selection`` picks."""
    names = []
    for module_name, module in model.named_modules():
        if selection.module_types and type(module).__name__ not in selection.module_types:
            continue
        for pname, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{pname}" if module_name else pname
            if pname.endswith("bias") and not selection.mask_bias:
                continue
            if p.ndim < selection.min_ndim:
                continue
            if selection.include and not any(
                fnmatch.fnmatch(full, pat) for pat in selection.include
            ):
                continue
            if any(fnmatch.fnmatch(full, pat) for pat in selection.exclude):
                continue
            names.append(full)
    # A tied parameter is reported once by named_parameters(); keep those names only.
    canonical = {n for n, _ in model.named_parameters()}
    names = [n for n in names if n in canonical]
    if not names:
        raise ValueError(
            f"the mask selection {selection} matches no parameter of {type(model).__name__}; "
            "check module_types / include patterns against model.named_parameters()"
        )
    return names


def split_name(name: str) -> tuple[str, str]:
    """'h.0.attn.c_attn.weight' -> ('h.0.attn.c_attn', 'weight')."""
    module_name, _, pname = name.rpartition(".")
    return module_name, pname


class _BetaState:
    """The temperature shared by every mask of one MaskSet (a plain object, not a tensor, so it
    never ends up in a state dict)."""

    def __init__(self) -> None:
        self.beta = 1.0
        self.hard = False
        self.cache: _StepCache | None = None  # set inside MaskSet.cached()


def _soft_gates(scores: list[torch.Tensor], beta: float) -> list[torch.Tensor]:
    """[sigmoid(beta * s) for s in scores] as two foreach ops (one autograd node each). On CPU
    these run the per-tensor kernels, so values and gradients are bitwise those of the
    per-tensor ops; on CUDA they are fused multi-tensor kernels (far fewer launches)."""
    return list(torch._foreach_sigmoid(torch._foreach_mul(scores, beta)))


class _StepCache:
    """One step's soft gates of every mask (computed together on first use) and each masked
    weight theta * gate (computed once however often the module reads it)."""

    def __init__(self, masks: list[_SoftMask], beta: float) -> None:
        self.masks, self.beta = masks, beta
        self._gates: dict[int, torch.Tensor] | None = None
        self._weights: dict[int, torch.Tensor] = {}

    def weight(self, mask: _SoftMask, theta: torch.Tensor) -> torch.Tensor:
        w = self._weights.get(id(mask))
        if w is None:
            if self._gates is None:
                gates = _soft_gates([m.scores for m in self.masks], self.beta)
                self._gates = {id(m): g for m, g in zip(self.masks, gates, strict=True)}
            w = self._weights[id(mask)] = theta * self._gates[id(mask)]
        return w


class _SoftMask(nn.Module):
    """Parametrization theta -> theta * sigmoid(beta * s) (or theta * 1[s > 0] when hard)."""

    def __init__(self, shape: torch.Size, init: float, state: _BetaState, device, dtype) -> None:
        super().__init__()
        self.scores = nn.Parameter(torch.full(shape, float(init), device=device, dtype=dtype))
        self._state = state

    def gate(self) -> torch.Tensor:
        if self._state.hard:
            return (self.scores > 0).to(self.scores.dtype)
        return torch.sigmoid(self._state.beta * self.scores)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        cache = self._state.cache
        if cache is None or self._state.hard or cache.beta != self._state.beta:
            return theta * self.gate()
        return cache.weight(self, theta)


class MaskSet:
    """The masks put on one model by :func:`add_masks`.

    Use ``set_beta`` once per epoch, ``penalty()`` in the loss, ``hard()`` for evaluation,
    ``binary()`` for the discovered subnetwork, and ``remove()`` to restore the plain model.
    """

    def __init__(self, model: nn.Module, names: list[str], init: float = -0.1) -> None:
        self.model = model
        self.names = list(names)
        self._state = _BetaState()
        self._masks: dict[str, _SoftMask] = {}
        self._frozen: list[nn.Parameter] = []
        for p in model.parameters():  # base weights frozen: only mask scores train
            if p.requires_grad:
                p.requires_grad_(False)
                self._frozen.append(p)
        for name in self.names:
            module_name, pname = split_name(name)
            module = model.get_submodule(module_name)
            theta = getattr(module, pname)
            mask = _SoftMask(theta.shape, init, self._state, theta.device, theta.dtype)
            parametrize.register_parametrization(module, pname, mask, unsafe=True)
            self._masks[name] = mask

    # --- schedule -----------------------------------------------------------------------------
    @property
    def beta(self) -> float:
        return self._state.beta

    def set_beta(self, beta: float) -> None:
        self._state.beta = float(beta)

    @contextmanager
    def cached(self) -> Iterator[None]:
        """Inside: the soft gates of all masks are computed once, together, and each masked
        weight once (GPT-2's Conv1D reads its weight twice per forward). Wrap one training
        step's forward and penalty (not the backward or the optimizer step) in it; the results
        equal the uncached path's (bitwise on CPU). Hard masks and a changed beta bypass the
        cache."""
        before = self._state.cache
        self._state.cache = _StepCache(list(self._masks.values()), self._state.beta)
        try:
            yield
        finally:
            self._state.cache = before

    def hard(self, enabled: bool = True) -> _HardContext:
        """Context manager: inside it the masks are binary 1[s > 0] (evaluation)."""
        return _HardContext(self._state, enabled)

    # --- training -----------------------------------------------------------------------------
    def parameters(self) -> Iterator[nn.Parameter]:
        for mask in self._masks.values():
            yield mask.scores

    def penalty(self) -> torch.Tensor:
        """sum over all masked entries of sigmoid(beta * s) (multiply by lambda in the loss)."""
        gates = _soft_gates([m.scores for m in self._masks.values()], self._state.beta)
        # Its own gates, not the weights' (the two gradients reach s through separate sigmoid
        # backwards, as in the per-tensor formulation). The L1 norm is the sum (gates are >= 0)
        # in one foreach op; its gradient sign(g) = 1 (0 where g == 0, where sigmoid's own
        # derivative is 0 too) leaves the gradient exactly that of the sum.
        return torch.stack(torch._foreach_norm(gates, 1)).sum()

    # --- results ------------------------------------------------------------------------------
    def binary(self) -> dict[str, torch.Tensor]:
        """{parameter name: bool tensor 1[s > 0]} on the CPU."""
        return {n: (m.scores.detach() > 0).cpu() for n, m in self._masks.items()}

    def load_binary(self, binary: dict[str, torch.Tensor]) -> None:
        """Set the scores to +1 where ``binary`` is True and -1 elsewhere (so the hard mask is
        ``binary``), e.g. to evaluate a mask selected at an earlier epoch."""
        for name, m in binary.items():
            scores = self._masks[name].scores
            scores.data = torch.where(m.to(scores.device), 1.0, -1.0).to(scores)

    def num_masked(self) -> int:
        return sum(m.scores.numel() for m in self._masks.values())

    def remove(self) -> None:
        """Take the masks off (the base weights are kept unmasked) and restore requires_grad."""
        for name in self.names:
            module_name, pname = split_name(name)
            parametrize.remove_parametrizations(
                self.model.get_submodule(module_name), pname, leave_parametrized=False
            )
        for p in self._frozen:
            p.requires_grad_(True)
        self._masks.clear()


class _HardContext:
    def __init__(self, state: _BetaState, enabled: bool) -> None:
        self._state, self._enabled, self._before = state, enabled, state.hard

    def __enter__(self) -> None:
        self._state.hard = self._enabled

    def __exit__(self, *exc) -> None:
        self._state.hard = self._before


def add_masks(model: nn.Module, names: Iterable[str], init: float = -0.1) -> MaskSet:
    """Put a trainable continuous-sparsification mask (scores initialised to ``init``) on each
    named parameter and freeze every base parameter of ``model``."""
    return MaskSet(model, list(names), init)


BETA_SCHEDULES = ("per-epoch", "reaches-final")


def beta_schedule(epoch: int, epochs: int, beta_final: float, kind: str = "per-epoch") -> float:
    """beta during 0-based ``epoch`` of ``epochs``: 1 at epoch 0, then growing exponentially.

    "per-epoch": multiplied by beta_final**(1/epochs) after each epoch, so it would reach
    beta_final after the last one (the last epoch trains at beta_final**((epochs-1)/epochs)).
    "reaches-final": beta_final**((epoch+1)/epochs) from epoch 1 on, so the last epoch trains at
    beta_final exactly (the Subtask Induction paper's released code, whose temperature setter
    multiplies twice on its first step: 1, beta_final**(2/epochs), beta_final**(3/epochs)...).
    """
    assert epochs > 0, f"expected epochs > 0, got {epochs}"
    assert beta_final >= 1, f"expected beta_final >= 1, got {beta_final}"
    if kind == "per-epoch":
        return math.exp(math.log(beta_final) * epoch / epochs)
    if kind == "reaches-final":
        return 1.0 if epoch == 0 else math.exp(math.log(beta_final) * (epoch + 1) / epochs)
    raise ValueError(f"unknown beta schedule {kind!r}; use {' or '.join(BETA_SCHEDULES)}")
