"""Modular arithmetic sequences ``<a> <b> <sep> <c>`` (paper Section 4.1).

Tokens: numbers 0..max_number-1 are their own ids, the separator is ``max_number``; the answer c
(in [0, p)) reuses the number tokens. A pair (a, b) is identified by its flat index
``a * max_number + b``. Every training set contains each number at least once (as a and as b)
and evaluation sets never share a pair with their training set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.arithmetic.expression import Expression


@dataclass(frozen=True)
class Numbers:
    max_number: int = 1000
    modulus: int = 7

    @property
    def sep(self) -> int:
        return self.max_number

    @property
    def vocab_size(self) -> int:
        return self.max_number + 1

    @property
    def num_pairs(self) -> int:
        return self.max_number**2


def encode(numbers: Numbers, expr: Expression, pairs: np.ndarray) -> torch.Tensor:
    """Flat pair indices (N,) -> token rows (N, 4) = [a, b, sep, expr(a, b) mod p]."""
    a, b = np.divmod(np.asarray(pairs, dtype=np.int64), numbers.max_number)
    c = expr(a, b)
    sep = np.full_like(a, numbers.sep)
    return torch.from_numpy(np.stack([a, b, sep, c], axis=1))


def _take(pool: np.ndarray, n: int, rng: np.random.Generator, what: str) -> np.ndarray:
    if n > pool.size:
        raise ValueError(f"cannot draw {n} {what} from the {pool.size} pairs left; lower the size")
    return rng.choice(pool, size=n, replace=False)


def covering_pairs(numbers: Numbers, rng: np.random.Generator) -> np.ndarray:
    """max_number pairs (i, perm[i]) in which every number occurs as a and as b."""
    perm = rng.permutation(numbers.max_number)
    return np.arange(numbers.max_number) * numbers.max_number + perm


def split_pairs(
    numbers: Numbers, sizes: dict[str, int], seed: int, cover: str = "train"
) -> dict[str, np.ndarray]:
    """Disjoint random pair sets with the given sizes; the ``cover`` split starts with
    :func:`covering_pairs` so that every number appears in it."""
    rng = np.random.default_rng(seed)
    taken = np.zeros(numbers.num_pairs, dtype=bool)
    out = {}
    if cover in sizes:
        if sizes[cover] < numbers.max_number:
            raise ValueError(
                f"the {cover} split needs at least max_number={numbers.max_number} rows so that "
                f"every number appears; got {sizes[cover]}"
            )
        first = covering_pairs(numbers, rng)
        taken[first] = True
        rest = _take(np.flatnonzero(~taken), sizes[cover] - first.size, rng, cover)
        taken[rest] = True
        out[cover] = np.concatenate([first, rest])
    for name, n in sizes.items():
        if name == cover:
            continue
        out[name] = _take(np.flatnonzero(~taken), n, rng, name)
        taken[out[name]] = True
    return out


def transfer_pairs(
    numbers: Numbers, n_disambiguation: int, eval_size: int, seed: int
) -> dict[str, np.ndarray]:
    """The target-task splits of paper Section 4.2: train = the ambiguous set (all a == b) plus
    the first ``n_disambiguation`` pairs of a seeded permutation of the a != b pairs left after
    validation and test were drawn. So for one seed the evaluation sets are identical across n
    and the training sets are nested."""
    rng = np.random.default_rng(seed)
    diagonal = np.arange(numbers.max_number) * (numbers.max_number + 1)
    off = np.ones(numbers.num_pairs, dtype=bool)
    off[diagonal] = False
    val = _take(np.flatnonzero(off), eval_size, rng, "validation rows")
    off[val] = False
    test = _take(np.flatnonzero(off), eval_size, rng, "test rows")
    off[test] = False
    order = rng.permutation(np.flatnonzero(off))
    if n_disambiguation > order.size:
        raise ValueError(
            f"n_disambiguation={n_disambiguation} exceeds the {order.size} available pairs"
        )
    train = np.concatenate([diagonal, order[:n_disambiguation]])
    return {"train": train, "val": val, "test": test}


def last_token_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the answer token given ``<a> <b> <sep>``; batch: (B, 4) int64."""
    logits = model(batch[:, :3], last_only=True)  # (B, vocab)
    return F.cross_entropy(logits, batch[:, 3])


@torch.no_grad()
def accuracy(model: nn.Module, rows: torch.Tensor, batch_size: int = 8192) -> float:
    """Fraction of rows (N, 4) whose answer token is the argmax prediction."""
    correct = 0
    for i in range(0, rows.shape[0], batch_size):
        chunk = rows[i : i + batch_size]
        correct += int((model(chunk[:, :3], last_only=True).argmax(-1) == chunk[:, 3]).sum())
    return correct / max(rows.shape[0], 1)


@dataclass(frozen=True)
class Batches:
    """Picklable per-epoch batch iterator over in-memory rows, reshuffled with (seed, epoch)."""

    rows: torch.Tensor
    batch_size: int
    seed: int

    def order(self, epoch: int) -> torch.Tensor:
        """The row order of ``epoch`` (N,) int64, on the CPU."""
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.rows.shape[0], generator=gen)

    def __call__(self, epoch: int) -> Iterator[torch.Tensor]:
        order = self.order(epoch)
        for i in range(0, order.numel(), self.batch_size):
            yield self.rows[order[i : i + self.batch_size]]
