"""The paper's Appendix B.4 experiments (Figures 8-10): the Figure 3 pipeline (base model ->
discovery -> transfer grid, :mod:`benchmarks.arithmetic.runs`) on other (source task, subtask,
target task) triples, and a summary across triples.

All triples of one experiment share one output directory: base models and subnetworks are cached
by their own settings, so a source task / subtask pair used by two triples is trained once, and
every transfer record names its triple. Reports go to one folder per triple:

    out/<triple slug>/    table.md, fig3.png, subnetworks.md (as fig3's)
    out/summary.md        subtask induction minus the random and complement controls, per triple
    out/experiment.json   experiment, preset, triples and the resolved config of each
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.arithmetic.config import Fig3Config
from benchmarks.arithmetic.report import arm_label, ordered_labels, write_reports
from benchmarks.arithmetic.runs import run_fig3
from benchmarks.stats import cell, mean_std, paired_by_seed
from subind.io import write_json_atomic, write_text_atomic
from subind.provenance import provenance
from subind.subnetwork import Subnetwork


@dataclass(frozen=True)
class Triple:
    """Discover ``subtask`` in a model trained on ``source_task``, transfer it to ``target_task``."""

    source_task: str
    subtask: str
    target_task: str

    def __str__(self) -> str:
        return f"{self.source_task} -> {self.subtask} -> {self.target_task}"

    @property
    def slug(self) -> str:
        """A folder name: 'a+ab -> ab -> a^2+ab' -> 'a+ab_ab_a2+ab'."""
        parts = (self.source_task, self.subtask, self.target_task)
        return "_".join(re.sub(r"[^A-Za-z0-9+\-]", "", p.replace("*", "")) for p in parts)

    def apply(self, cfg: Fig3Config) -> Fig3Config:
        return dataclasses.replace(
            cfg, source_task=self.source_task, subtask=self.subtask, target_task=self.target_task
        )


def triple_of(record: dict[str, Any]) -> Triple:
    """The triple a results record (or subnetwork meta with a target) belongs to."""
    return Triple(record["source_task"], record["subtask"], record["target_task"])


# --- running ------------------------------------------------------------------------------------
def run_triples(
    name: str,
    triples: tuple[Triple, ...],
    preset: str,
    cfg: Fig3Config,
    out: Path,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every triple with ``cfg`` (its tasks replaced by each triple's) through
    :func:`benchmarks.arithmetic.runs.run_fig3` into ``out``; return all their records."""
    records: list[dict[str, Any]] = []
    for triple in triples:
        records += run_fig3(triple.apply(cfg), out, progress, preset, experiment=name)[0]
    write_json_atomic(
        out / "experiment.json",
        {
            "experiment": name,
            "preset": preset,
            "triples": [dataclasses.asdict(t) for t in triples],
            "configs": [dataclasses.asdict(t.apply(cfg)) for t in triples],
            "provenance": provenance(),
        },
    )
    return records


def load_subnetworks(out: Path) -> dict[tuple[str, str], dict[int, Any]]:
    """{(source task, subtask): {layers: Subnetwork}} from ``out/subnetworks``."""
    subs: dict[tuple[str, str], dict[int, Any]] = {}
    for d in sorted((out / "subnetworks").glob("*/")):
        sub = Subnetwork.load(d)
        key = (sub.meta.get("source_task"), sub.meta.get("subtask"))
        subs.setdefault(key, {})[sub.meta.get("layers", d.name)] = sub
    return subs


def write_triple_reports(
    records: list[dict[str, Any]], out: Path, subnetworks: dict[tuple[str, str], dict[int, Any]]
) -> str:
    """fig3's reports for each triple in ``out/<slug>/`` and the cross-triple summary in
    ``out/summary.md`` and ``out/summary.json``; returns the summary's markdown."""
    for triple in dict.fromkeys(triple_of(r) for r in records):
        mine = [r for r in records if triple_of(r) == triple]
        subs = subnetworks.get((triple.source_task, triple.subtask), {})
        title = f"{triple} (mod {mine[0]['modulus']})"
        write_reports(mine, subs, out / triple.slug, title)
    text = summary_md(records)
    write_text_atomic(out / "summary.md", text)
    write_json_atomic(out / "summary.json", summary_rows(records))
    return text


# --- summary across triples ---------------------------------------------------------------------
SUMMARY_CONTROLS = ("random-subnetwork", "complement-subnetwork")


def summary_rows(
    records: list[dict[str, Any]], controls: tuple[str, ...] = SUMMARY_CONTROLS
) -> list[dict[str, Any]]:
    """Per triple (and settings hash), depth, unmasked mode, control and size: subtask induction
    minus the control of the same unmasked mode, paired by seed. Each row: triple, layers,
    unmasked, control, n, mean, std, seeds (count) and diffs (per seed)."""
    # Runs of one triple under different settings (e.g. quick and paper folders) are not
    # paired with each other: group by the settings' hash too, and name it when it matters.
    groups = list(dict.fromkeys((triple_of(r), r.get("config_digest")) for r in records))
    several = {t for t, _ in groups if sum(t == u for u, _ in groups) > 1}
    rows = []
    for triple, digest in groups:
        mine = [r for r in records if (triple_of(r), r.get("config_digest")) == (triple, digest)]
        name = f"{triple} [{digest}]" if triple in several else str(triple)
        pairings = paired_by_seed(mine, lambda r: (r["layers"], r["n_disambiguation"]), "condition")
        order = ordered_labels(arm_label(p.control, p.control_mode) for p in pairings)
        for p in sorted(pairings, key=lambda p: (p.group[0], p.mode,
                        order.index(arm_label(p.control, p.control_mode)), p.group[1])):  # fmt: skip
            diffs = p.differences(lambda r: r["test_accuracy"])
            if p.control not in controls or p.control_mode != p.mode or not diffs:
                continue
            mean, std = mean_std(diffs)
            rows.append({"triple": name, "layers": p.group[0], "unmasked": p.mode,
                         "control": p.control, "n": p.group[1], "mean": mean, "std": std,
                         "seeds": len(diffs), "diffs": diffs})  # fmt: skip
    return rows


def summary_md(records: list[dict[str, Any]]) -> str:
    """One markdown table: a row per (triple, depth, unmasked mode, control), a column per n,
    cells 'mean +- std (seeds)' of subtask induction minus the control, paired by seed."""
    rows = summary_rows(records)
    sizes = sorted({r["n"] for r in rows})
    cells: dict[tuple[str, Any, str, str], dict[int, list[float]]] = {}
    for r in rows:
        cells.setdefault((r["triple"], r["layers"], r["unmasked"], r["control"]), {})[r["n"]] = r[
            "diffs"
        ]
    lines = [
        "# Subtask induction minus the count-matched controls, across triples",
        "",
        "test accuracy difference, paired by seed: mean +- std over seeds (number of seeds); "
        "positive: the discovered subnetwork transfers better than the control",
        "",
        "| triple | layers | unmasked | minus | " + " | ".join(f"n={n}" for n in sizes) + " |",
        "|---|---|---|---|" + "---|" * len(sizes),
    ]
    for (triple, layers, mode, control), by_n in cells.items():
        vals = " | ".join(cell(by_n.get(n, []), signed=True) for n in sizes)
        lines.append(f"| {triple} | {layers} | {mode} | {control} | {vals} |")
    return "\n".join(lines) + "\n"
