"""The arithmetic experiments as ``subind-bench`` knows them: fig3 (paper Figure 3, Table 3,
Appendix B) and the Appendix B.4 triples fig8, fig9 and fig10, with their options, checks, runs
and reports (pipeline: :mod:`benchmarks.arithmetic.stages` and :mod:`benchmarks.arithmetic.runs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.arithmetic.config import FOLDER_FREE, PRESETS, Fig3Config, check_config
from benchmarks.arithmetic.report import table_md, write_reports
from benchmarks.arithmetic.runs import run_fig3
from benchmarks.arithmetic.triples import (
    Triple,
    load_subnetworks,
    run_triples,
    write_triple_reports,
)
from benchmarks.base import COMMON_OPTIONS, ConfigError, Experiment, Option, Outcome, ints, names
from benchmarks.harness import claim_folder
from subind.runtime import dist_env
from subind.subnetwork import Subnetwork

_GRID_OPTIONS = (
    Option("--layers", "layers", "comma-separated depths, e.g. 2,12", ints),
    Option("--sizes", "sizes", "comma-separated numbers of disambiguating rows", ints),
    Option("--conditions", "conditions", "comma-separated; see `subind-bench ls`", names),
    Option("--workers", "workers", "parallel transfer processes", int),
    Option("--batch-runs", "batch_runs",
           "transfer runs trained together per group (0: automatic, 1: one at a time)", int),
)  # fmt: skip
_TASK_OPTIONS = (
    Option("--source-task", "source_task", "base model's task, e.g. 'a+ab'"),
    Option("--subtask", "subtask", "subtask to discover, e.g. 'ab'"),
    Option("--target-task", "target_task", "transfer task, e.g. 'a^2+ab'"),
)


def _title(cfg: Fig3Config, preset: str | None) -> str:
    where = f"mod {cfg.modulus}" + (f", preset {preset}" if preset else "")
    return f"{cfg.source_task} -> {cfg.subtask} -> {cfg.target_task} ({where})"


@dataclass(frozen=True)
class ArithmeticExperiment(Experiment):
    """fig3: one (source task, subtask, target task) triple, given by the options."""

    def check(self, cfg: Fig3Config) -> None:
        check_config(cfg)

    def run(self, cfg: Fig3Config, out: Path, preset: str, progress: bool) -> Outcome | None:
        if dist_env()[0] == 0:
            claim_folder(out, self.name, cfg, self.free_fields)
        records, subs = run_fig3(cfg, out, progress, preset, self.name)
        if dist_env()[0] != 0:
            return None  # under torchrun, rank 0 merged the results and writes the reports
        title = _title(cfg, preset)
        write_reports(records, subs, out, title)
        return Outcome(table_md(records, f"Test accuracy: {title}"), len(records))

    def report(self, out: Path, records: list[dict[str, Any]]) -> str:
        subs = {}
        for d in sorted((out / "subnetworks").glob("*/")):
            sub = Subnetwork.load(d)
            subs[sub.meta.get("layers", d.name)] = sub
        config = out / "config.json"
        saved = json.loads(config.read_text()) if config.is_file() else {}
        r = records[0]
        cfg = Fig3Config(source_task=r["source_task"], subtask=r["subtask"],
                         target_task=r["target_task"], modulus=r["modulus"])  # fmt: skip
        title = _title(cfg, saved.get("preset"))
        write_reports(records, subs, out, title)
        return table_md(records, f"Test accuracy: {title}")


@dataclass(frozen=True)
class TriplesExperiment(ArithmeticExperiment):
    """Several triples run with fig3's presets into one folder, reports per triple and a
    summary across them (Appendix B.4)."""

    triples: tuple[Triple, ...] = ()

    def resolve(self, preset: str, overrides: dict[str, Any], sets: tuple[str, ...]) -> Any:
        tasks = {"source_task", "subtask", "target_task"}
        given = [o.flag for o in _TASK_OPTIONS if overrides.get(o.field) is not None] + [
            s.partition("=")[0] for s in sets if s.partition("=")[0] in tasks
        ]
        if given:
            raise ConfigError(
                f"{self.name} sets its own tasks (see `subind-bench ls`), so {given[0]} is not "
                "one of its options; for another triple use `subind-bench run fig3 "
                "--source-task ... --subtask ... --target-task ...`"
            )
        return super().resolve(preset, overrides, sets)

    def run(self, cfg: Fig3Config, out: Path, preset: str, progress: bool) -> Outcome | None:
        if dist_env()[0] == 0:
            claim_folder(out, self.name, cfg, self.free_fields)
        records = run_triples(self.name, self.triples, preset, cfg, out, progress)
        if dist_env()[0] != 0:
            return None  # under torchrun, rank 0 writes the reports
        return Outcome(write_triple_reports(records, out, load_subnetworks(out)), len(records))

    def report(self, out: Path, records: list[dict[str, Any]]) -> str:
        return write_triple_reports(records, out, load_subnetworks(out))


FIG3 = ArithmeticExperiment(
    "fig3",
    "arithmetic Subtask Induction: paper Figure 3, Table 3, Appendix B",
    Fig3Config,
    PRESETS,
    "quick",
    COMMON_OPTIONS + _GRID_OPTIONS + _TASK_OPTIONS,
    "table.md, fig3.png, subnetworks.md, results.jsonl",
    free_fields=FOLDER_FREE,
)

# The paper's subnetworks (Appendix B.4): ab from a base model trained on a+ab (Section 4),
# a^2 from one trained on a^2+b^2, a+b from one trained on a^2+ab.
_AB = ("a+ab", "ab")
_A2 = ("a^2+b^2", "a^2")
_APB = ("a^2+ab", "a+b")
_TRIPLES = {
    "fig8": (
        "paper Figure 8: the ab subnetwork (from a+ab) to a^2+ab+b^2 and a^3+ab",
        (Triple(*_AB, "a^2+ab+b^2"), Triple(*_AB, "a^3+ab")),
    ),
    "fig9": (
        "paper Figure 9: the a^2 subnetwork (from a^2+b^2) to a^2+ab+b^2 and a^2+ab",
        (Triple(*_A2, "a^2+ab+b^2"), Triple(*_A2, "a^2+ab")),
    ),
    "fig10": (
        "paper Figure 10: a+b and a^2 subnetworks to a^2-b^2; ab and a^2 subnetworks to a^3+ab",
        (Triple(*_APB, "a^2-b^2"), Triple(*_A2, "a^2-b^2"), Triple(*_AB, "a^3+ab"),
         Triple(*_A2, "a^3+ab")),
    ),
}  # fmt: skip

ARITHMETIC_EXPERIMENTS = (FIG3,) + tuple(
    TriplesExperiment(
        name,
        doc,
        Fig3Config,
        PRESETS,
        "quick",
        # the task options are accepted only to say that these experiments set their own
        COMMON_OPTIONS + _GRID_OPTIONS + tuple(replace(o, hidden=True) for o in _TASK_OPTIONS),
        "one folder per triple, summary.md, results.jsonl",
        free_fields=FOLDER_FREE,
        triples=triples,
    )  # fmt: skip
    for name, (doc, triples) in _TRIPLES.items()
)
