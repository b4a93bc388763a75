"""The experiments ``subind-bench`` runs: ``EXPERIMENTS``, name -> :class:`~benchmarks.base.Experiment`,
the single list that ``subind-bench run``, ``report`` and ``ls`` dispatch through (and the test
matrix iterates over)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.arithmetic.experiment import ARITHMETIC_EXPERIMENTS
from benchmarks.base import ConfigError, Experiment
from benchmarks.harness import CONFIG_FILE
from benchmarks.vision.experiment import TABLE1
from subind.io import read_jsonl
from subind.registry import Registry

EXPERIMENTS: Registry[Experiment] = Registry("experiment")
for _exp in (*ARITHMETIC_EXPERIMENTS, TABLE1):
    EXPERIMENTS.register(_exp.name, _exp.doc)(_exp)


def experiment_of(out: Path) -> Experiment:
    """The experiment whose outputs ``out`` holds, from its config.json (or, for folders
    written before config.json named it, from experiment.json and the records)."""
    config = out / CONFIG_FILE
    name = json.loads(config.read_text()).get("experiment") if config.is_file() else None
    if name is None and (out / "experiment.json").is_file():  # triples, older layout
        name = json.loads((out / "experiment.json").read_text())["experiment"]
    if name is None:
        records = read_jsonl(out / "results.jsonl")
        name = records[0].get("experiment", "fig3") if records else None
    if name is None or name not in EXPERIMENTS:
        raise ConfigError(
            f"{out} holds no results of a known experiment: give an output folder of "
            "`subind-bench run`"
        )
    return EXPERIMENTS.get(name)
