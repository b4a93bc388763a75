"""What a table1 run trains: the grid of (model, strategy, unmasked mode, seed), each with the
stable key its result is stored under and the tag its files are named by."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.vision.config import RUN_KEYS, Table1Config
from benchmarks.vision.strategies import STRATEGIES


@dataclass(frozen=True)
class Run:
    model: str
    strategy: str
    unmasked: str
    seed: int

    def key(self, cfg: Table1Config) -> str:
        return f"{self.model}/{self.strategy}/{self.unmasked}/s{self.seed}/{cfg.digest(*RUN_KEYS)}"

    def tag(self) -> str:
        return f"{self.model}_{self.strategy}_{self.unmasked}_s{self.seed}"


def plan_runs(cfg: Table1Config) -> list[Run]:
    """Every (model, strategy, unmasked mode, seed); untrained strategies run once (seed 0)."""
    runs = []
    for model in cfg.models:
        for name in cfg.strategies:
            strat = STRATEGIES.get(name)
            seeds = cfg.seeds if strat.trains else cfg.seeds[:1]
            for seed in seeds:
                runs.extend(Run(model, name, mode, seed) for mode in strat.modes(cfg.unmasked))
    return runs
