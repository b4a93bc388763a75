"""Numbers every report shows: mean +- std over seeds, and subtask induction minus each
control paired by seed (the same fresh initialisation and the same evaluation sets), which asks
whether the discovered subnetwork itself carries the benefit."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]
TREATMENT = "subtask-induction"


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cell(values: list[float], signed: bool = False) -> str:
    """'mean +- std (count)' or '-' when there is no value."""
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{m:{'+' if signed else ''}.3f} +- {s:.3f} ({len(values)})"


@dataclass(frozen=True)
class Pairing:
    """The runs of one control paired with subtask induction's runs in one group."""

    group: Hashable  # what both share besides the seed, e.g. (layers, n) or model
    mode: str  # subtask induction's unmasked mode
    control: str
    control_mode: str
    pairs: tuple[tuple[Record, Record], ...]  # (subtask induction, control), in record order

    def differences(self, metric: Callable[[Record], float | None]) -> list[float]:
        """Subtask induction minus the control, one value per pair where both have the metric."""
        out = []
        for a, b in self.pairs:
            x, y = metric(a), metric(b)
            if x is not None and y is not None:
                out.append(x - y)
        return out


def paired_by_seed(
    records: Iterable[Record],
    group: Callable[[Record], Hashable],
    arm: str,
    seedless: frozenset[str] = frozenset(),
) -> list[Pairing]:
    """Subtask induction paired with every other arm (``record[arm]``: a condition or strategy)
    of the same ``group(record)``, seed by seed.

    A control is compared like with like: in subtask induction's unmasked mode when it was run
    in that mode, otherwise in whatever modes it was run in (controls with a single mode, such
    as scratch, pair with every mode). A control in ``seedless`` (e.g. an untrained model, run
    once) pairs with every seed of subtask induction; others only with the same seed."""
    groups: dict[Hashable, dict[tuple[str, str], list[Record]]] = {}
    for r in records:
        groups.setdefault(group(r), {}).setdefault((r[arm], r["unmasked"]), []).append(r)
    out = []
    for g, arms in groups.items():
        for (name, mode), treated in arms.items():
            if name != TREATMENT:
                continue
            for (control, cmode), runs in arms.items():
                if control == TREATMENT or (cmode != mode and (control, mode) in arms):
                    continue
                by_seed = {r["seed"]: r for r in runs}
                pairs = []
                for a in {r["seed"]: r for r in treated}.values():  # a record given twice: once
                    b = runs[0] if control in seedless else by_seed.get(a["seed"])
                    if b is not None:
                        pairs.append((a, b))
                if pairs:
                    out.append(Pairing(g, mode, control, cmode, tuple(pairs)))
    return out
