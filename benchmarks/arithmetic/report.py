"""Tables and plots of the arithmetic experiments from results.jsonl: mean +- std over seeds,
per condition and size; subtask induction minus each control, paired by seed; densities."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.stats import Pairing, cell, mean_std, paired_by_seed
from subind.conditions import CONDITIONS
from subind.io import write_text_atomic, write_with_atomic
from subind.subnetwork import Subnetwork


def arm_label(condition: str, unmasked: str) -> str:
    """'subtask-induction (inherit)' for conditions with an unmasked choice, else the name."""
    if condition in CONDITIONS and CONDITIONS.get(condition).unmasked_modes:
        return condition
    return f"{condition} ({unmasked})"


def label(rec: dict[str, Any]) -> str:
    """The row label of a record (:func:`arm_label` of its condition and mode)."""
    return arm_label(rec["condition"], rec["unmasked"])


def aggregate(
    records: Iterable[dict[str, Any]], metric: str = "test_accuracy"
) -> dict[tuple[Any, str, int], list[float]]:
    """{(layers, label, n): [metric per seed]}."""
    groups: dict[tuple[Any, str, int], list[float]] = defaultdict(list)
    for r in records:
        groups[(r["layers"], label(r), r["n_disambiguation"])].append(r[metric])
    return groups


def ordered_labels(labels: Iterable[str]) -> list[str]:
    """Row labels in report order: subtask induction, full transfer, scratch, random, others."""
    first = ["subtask-induction", "full-transfer", "scratch", "random-subnetwork"]
    return sorted(
        set(labels), key=lambda s: (next((i for i, f in enumerate(first) if s.startswith(f)), 9), s)
    )


def table_md(records: list[dict[str, Any]], title: str = "Test accuracy") -> str:
    """One markdown table per depth: rows = condition, columns = n, cells mean +- std (runs)."""
    groups = aggregate(records)
    lines = [
        f"# {title}",
        "",
        "mean +- std over seeds (number of runs); columns: n disambiguating rows",
        "",
    ]
    for layers in sorted({k[0] for k in groups}):
        sizes = sorted({k[2] for k in groups if k[0] == layers})
        labels = ordered_labels(k[1] for k in groups if k[0] == layers)
        lines += [f"## {layers} layers", ""]
        lines.append("| condition | " + " | ".join(f"n={n}" for n in sizes) + " |")
        lines.append("|---|" + "---|" * len(sizes))
        for lab in labels:
            cells = []
            for n in sizes:
                cells.append(cell(groups.get((layers, lab, n), [])))
            lines.append(f"| {lab} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def pairings(records: Iterable[dict[str, Any]]) -> list[Pairing]:
    """Subtask induction paired with each control by seed, per depth and size (group:
    (layers, n))."""
    return paired_by_seed(records, lambda r: (r["layers"], r["n_disambiguation"]), "condition")


def paired_differences(
    records: Iterable[dict[str, Any]], metric: str = "test_accuracy"
) -> dict[tuple[Any, str, str, int], list[float]]:
    """{(layers, subtask-induction label, control label, n): [per-seed difference]}."""
    return {
        (p.group[0], arm_label("subtask-induction", p.mode),
         arm_label(p.control, p.control_mode), p.group[1]): p.differences(lambda r: r[metric])
        for p in pairings(records)
    }  # fmt: skip


def paired_md(records: list[dict[str, Any]]) -> str:
    """Subtask induction minus each control, paired by seed: mean +- std (seeds) per depth."""
    diffs = paired_differences(records)
    lines = ["# Subtask induction minus control (paired by seed)", ""]
    for layers in sorted({k[0] for k in diffs}):
        sizes = sorted({k[3] for k in diffs if k[0] == layers})
        rows = {k[1:3] for k in diffs if k[0] == layers}
        order = {lab: i for i, lab in enumerate(ordered_labels(x for pair in rows for x in pair))}
        lines += [f"## {layers} layers", ""]
        lines.append("| difference | " + " | ".join(f"n={n}" for n in sizes) + " |")
        lines.append("|---|" + "---|" * len(sizes))
        for si, other in sorted(rows, key=lambda pair: (order[pair[0]], order[pair[1]])):
            cells = [cell(diffs.get((layers, si, other, n), []), signed=True) for n in sizes]
            lines.append(f"| {si} - {other} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def subnetworks_md(subnetworks: dict[int, Subnetwork]) -> str:
    """Density per depth, as the paper's Table 3."""
    lines = [
        "# Discovered subnetworks",
        "",
        "Density = kept / total entries of the masked tensors (attention and MLP weights).",
        "",
        "| layers | density | kept / total | val acc | test acc | best epoch | lambda | epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for layers, sub in sorted(subnetworks.items()):
        m = sub.meta
        lines.append(
            f"| {layers} | {100 * sub.density:.2f}% | {sub.kept:,} / {sub.total:,} | "
            f"{m.get('val_accuracy', float('nan')):.3f} | {m.get('test_accuracy') or float('nan'):.3f} | "
            f"{m.get('best_epoch')} | {m.get('lambda')} | {m.get('epochs')} |"
        )
    return "\n".join(lines) + "\n"


def plot_fig3(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Accuracy vs n (symlog x so n = 0 shows), one line per condition, std bands; one panel
    per depth plus the mean over depths when there are several."""
    import matplotlib  # heavy (a second at start-up): only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = aggregate(records)
    depths = sorted({k[0] for k in groups})
    panels = depths + (["all"] if len(depths) > 1 else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 2.6, 4.2), squeeze=False)
    labels = ordered_labels(k[1] for k in groups)
    conditions = list(dict.fromkeys(lab.split(" (")[0] for lab in labels))
    palette = dict(zip(conditions, plt.cm.tab10.colors, strict=False))
    colors = {lab: palette[lab.split(" (")[0]] for lab in labels}  # one colour per condition
    for ax, panel in zip(axes[0], panels, strict=True):
        for lab in labels:
            if panel == "all":
                per_n: dict[int, list[float]] = defaultdict(list)
                for (_, lb, n), vals in groups.items():
                    if lb == lab:
                        per_n[n].append(statistics.fmean(vals))
            else:
                per_n = {n: v for (d, lb, n), v in groups.items() if d == panel and lb == lab}
            if not per_n:
                continue
            ns = sorted(per_n)
            stats = [mean_std(per_n[n]) for n in ns]
            mean = [s[0] for s in stats]
            std = [s[1] for s in stats]
            style = "--" if "reinit" in lab else "-"
            ax.plot(ns, mean, style, marker="o", ms=3, label=lab, color=colors[lab])
            ax.fill_between(
                ns,
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                alpha=0.15,
                color=colors[lab],
            )
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlabel("disambiguating training rows n")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{panel} layers" if panel != "all" else "mean over depths")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # off the lines
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    write_with_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def write_reports(
    records: list[dict[str, Any]], subnetworks: dict[int, Subnetwork], out: Path, title: str
) -> None:
    text = table_md(records, f"Test accuracy: {title}") + "\n" + paired_md(records)
    write_text_atomic(out / "table.md", text)
    write_text_atomic(out / "subnetworks.md", subnetworks_md(subnetworks))
    plot_fig3(records, out / "fig3.png", title)
