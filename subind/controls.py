"""Control masks with the discovered subnetwork's per-tensor counts (paper Section 4.3, B.2).

For a tensor with N entries of which the discovered subnetwork keeps k:
- ``random_masks``: exactly k entries drawn uniformly from all N;
- ``complement_masks``: exactly k entries drawn uniformly from the N - k outside the subnetwork;
- ``inverted_random_masks``: N - k random entries. This is what the paper's released code
  transferred for its "random" control (an inverted count); it exists only to reproduce that
  figure beside the correct control.
"""

from __future__ import annotations

import torch


def _draw(pool: torch.Tensor, count: int, numel: int, generator: torch.Generator) -> torch.Tensor:
    """A flat bool mask of ``numel`` entries with ``count`` entries set, drawn from ``pool``
    (flat indices) uniformly without replacement."""
    assert 0 <= count <= pool.numel(), f"expected 0 <= count <= {pool.numel()}, got {count}"
    chosen = pool[torch.randperm(pool.numel(), generator=generator)[:count]]
    flat = torch.zeros(numel, dtype=torch.bool)
    flat[chosen] = True
    return flat


def random_masks(masks: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Per tensor, k = masks[name].sum() entries drawn uniformly at random."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in masks.items():
        n = m.numel()
        out[name] = _draw(torch.arange(n), int(m.sum()), n, gen).view(m.shape)
    return out


def complement_masks(masks: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Per tensor, k entries drawn only from outside the subnetwork (disjoint from it)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in masks.items():
        k, outside = int(m.sum()), (~m.flatten()).nonzero().flatten()
        if k > outside.numel():
            raise ValueError(
                f"complement control impossible for {name!r}: the subnetwork keeps {k} of "
                f"{m.numel()} entries, more than the {outside.numel()} outside it; "
                "use random-subnetwork for dense tensors"
            )
        out[name] = _draw(outside, k, m.numel(), gen).view(m.shape)
    return out


def inverted_random_masks(masks: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Per tensor, N - k random entries: the released code's inverted control."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in masks.items():
        n = m.numel()
        out[name] = _draw(torch.arange(n), n - int(m.sum()), n, gen).view(m.shape)
    return out
