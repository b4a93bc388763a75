"""A discovered subnetwork: one 0/1 mask per masked parameter, plus what produced it.

On disk (a directory):
    subnetwork.safetensors  one uint8 0/1 tensor per masked parameter, keyed by its name in
                            ``model.named_parameters()``
    subnetwork.json         base model, subtask, hyper-parameters, per-tensor kept/total,
                            density, accuracies, versions, git commit
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from subind.io import write_json_atomic, write_with_atomic

WEIGHTS_FILE = "subnetwork.safetensors"
META_FILE = "subnetwork.json"


@dataclass
class Subnetwork:
    """``masks``: {parameter name: bool tensor of the parameter's shape}; ``meta``: provenance."""

    masks: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.masks = {n: m.detach().to("cpu", torch.bool) for n, m in self.masks.items()}

    # --- statistics ---------------------------------------------------------------------------
    def per_tensor(self) -> dict[str, dict[str, float]]:
        """{name: {"kept": k, "total": N, "density": k / N}} for every masked tensor."""
        out = {}
        for name, m in self.masks.items():
            kept, total = int(m.sum()), m.numel()
            out[name] = {"kept": kept, "total": total, "density": kept / total}
        return out

    @property
    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    @property
    def total(self) -> int:
        return sum(m.numel() for m in self.masks.values())

    @property
    def density(self) -> float:
        """Fraction of the masked entries kept (the paper's Table 3 percentage / 100)."""
        return self.kept / max(self.total, 1)

    # --- compatibility ------------------------------------------------------------------------
    def check_compatible(self, model: nn.Module) -> None:
        """Raise ValueError unless every mask names a parameter of ``model`` with its shape."""
        params = dict(model.named_parameters())
        missing = [n for n in self.masks if n not in params]
        if missing:
            raise ValueError(
                f"subnetwork masks {missing[:3]}{'...' if len(missing) > 3 else ''} name no "
                f"parameter of {type(model).__name__}; it was found on "
                f"{self.meta.get('base_model', 'another model')}: build the same architecture"
            )
        for name, m in self.masks.items():
            if tuple(params[name].shape) != tuple(m.shape):
                raise ValueError(
                    f"subnetwork mask {name!r} has shape {tuple(m.shape)} but the model's "
                    f"parameter has shape {tuple(params[name].shape)}: build the same architecture"
                )

    # --- files --------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {"kept": self.kept, "total": self.total, "density": self.density}

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {n: m.to(torch.uint8).contiguous() for n, m in self.masks.items()}
        write_with_atomic(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
        meta = dict(self.meta)
        meta.update(self.summary())
        meta["per_tensor"] = self.per_tensor()
        write_json_atomic(directory / META_FILE, meta)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Subnetwork:
        directory = Path(directory)
        weights = directory / WEIGHTS_FILE
        if not weights.exists():
            raise FileNotFoundError(
                f"no {WEIGHTS_FILE} in {directory}: pass a directory written by discovery"
            )
        tensors = load_file(str(weights))
        bad = [n for n, t in tensors.items() if t.numel() and int(t.max()) > 1]
        if bad:
            raise ValueError(f"{weights}: tensors {bad[:3]} are not 0/1 masks")
        meta_path = directory / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        return cls({n: t.bool() for n, t in tensors.items()}, meta)
