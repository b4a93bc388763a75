"""Tables and plots of the vision experiments from results.jsonl: table1.md/.csv (mean +- std over
seeds; cue-conflict under the standard scoring and, in a second table, the paper's released
one), the paired differences that ask whether the subnetwork matters, table2.md (discovery),
per-class tables and fig5.png (accuracy against steps)."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.stats import mean_std, paired_by_seed
from benchmarks.vision.cue_conflict import scoring as scoring_by_name
from benchmarks.vision.strategies import STRATEGIES
from subind.io import write_json_atomic, write_text_atomic, write_with_atomic


def _cue(metric: str, scoring: str = "standard") -> Callable[[dict[str, Any]], Any]:
    """Getter of one cue-conflict metric of a record under ``scoring`` (its ``key`` in the
    record); None when the record lacks it (older results have no released metrics)."""
    record_key = scoring_by_name(scoring).key
    return lambda r: (r.get(record_key) or {}).get(metric)


def _accuracy(source: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r.get(f"{source}_accuracy")


# (column title, getter) of Table 1, cue-conflict metrics under the standard scoring.
_COLUMNS = [
    ("original", _accuracy("original")),
    ("pooled", _accuracy("pooled")),
    ("cue-conflict accuracy", _cue("accuracy")),
    ("robustness", _cue("robustness")),
    ("shape bias", _cue("shape_bias")),
]
# The columns of the paper's Table 1, cue-conflict scored as its released code did.
_RELEASED_COLUMNS = [
    ("original", _accuracy("original")),
    ("pooled", _accuracy("pooled")),
    ("cue-conflict accuracy", _cue("accuracy", "released")),
    ("robustness", _cue("robustness", "released")),
]
_ORDER = [
    "subtask-induction",
    "random-subnetwork",
    "unmasked-only",
    "scratch",
    "data-mixture",
    "linear-ft",
    "pretrained",
]


def row_label(r: dict[str, Any]) -> tuple[str, str, str]:
    return r["model"], r["strategy"], r["unmasked"]


def _sort_key(label: tuple[str, str, str]) -> tuple:
    model, strategy, unmasked = label
    rank = _ORDER.index(strategy) if strategy in _ORDER else len(_ORDER)
    return model, rank, strategy, unmasked


def _groups(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[row_label(r)].append(r)
    return dict(sorted(groups.items(), key=lambda kv: _sort_key(kv[0])))


def _cell(values: list[float | None], pct: bool = True) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    m, s = mean_std(vals)
    scale = 100.0 if pct else 1.0
    spread = f" +- {s * scale:.1f}" if len(vals) > 1 else ""
    return f"{m * scale:.1f}{spread}"


def _train_size(runs: list[dict[str, Any]]) -> str:
    """What a row was trained on: its training images, or (untrained rows) the pretraining set
    and, for the adapted model, what its adaptation saw."""
    r = runs[0]
    if r.get("train_images"):
        return f"{r['train_images']:,}"
    adapted = r.get("adapted") if r["strategy"] == "linear-ft" else None
    if not adapted:
        return "pretraining set"
    what = "head" if adapted["adapt"] == "head" else "whole model"
    return (f"pretraining set; {what} adapted on {adapted['train_images']:,} "
            f"{adapted['adapt_images']} images")  # fmt: skip


def _unmasked(strategy: str, unmasked: str) -> str:
    """The unmasked mode, for the strategies that transfer masked tensors ("-" for the ones
    that take a whole model or none: scratch, data mixture, Linear FT, pretrained)."""
    known = strategy in STRATEGIES
    return unmasked if not known or STRATEGIES.get(strategy).uses_subnetwork else "-"


def _control_label(strategy: str, unmasked: str) -> str:
    """'random-subnetwork (reinit)', or the name alone for a strategy that transfers no
    subnetwork."""
    mode = _unmasked(strategy, unmasked)
    return strategy if mode == "-" else f"{strategy} ({mode})"


# The paper's Table 1 (percent; cue-conflict under its released scoring): (model, strategy) ->
# original, pooled, cue-conflict accuracy, robustness. Only the paper's two models have them.
PAPER_TABLE1: dict[tuple[str, str], tuple[float, float, float, float]] = {
    ("resnet18", "subtask-induction"): (80.7, 55.6, 27.1, 77.4),
    ("resnet18", "scratch"): (68.9, 24.7, 15.9, 75.3),
    ("resnet18", "data-mixture"): (91.9, 38.3, 18.9, 55.3),
    ("resnet18", "linear-ft"): (95.4, 36.8, 18.9, 56.0),
    ("vit_b_16", "subtask-induction"): (83.4, 66.0, 20.0, 72.1),
    ("vit_b_16", "scratch"): (58.4, 23.4, 12.1, 70.3),
    ("vit_b_16", "data-mixture"): (84.3, 35.1, 15.0, 64.7),
    ("vit_b_16", "linear-ft"): (97.1, 57.3, 28.5, 73.8),
}
# The paper's Table 2: model -> (% of parameters kept, pooled accuracy of the original model,
# of the subnetwork).
PAPER_TABLE2 = {"resnet18": (14.9, 36.8, 73.8), "vit_b_16": (14.6, 57.3, 76.1)}


def _rows_md(
    records: list[dict[str, Any]], columns: list, paper: dict[tuple[str, str], tuple] | None = None
) -> list[str]:
    """Header and one row per model x strategy x unmasked mode: runs, train set size, then
    ``columns`` (percent; mean +- std over seeds), each followed by ``[the paper's value]``
    where ``paper`` has the row (its values in the order of ``columns``)."""
    lines = [
        "| model | strategy | unmasked | runs | train images | "
        + " | ".join(c for c, _ in columns)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(columns),
    ]
    for (model, strategy, unmasked), runs in _groups(records).items():
        cells = [_cell([get(r) for r in runs]) for _, get in columns]
        theirs = (paper or {}).get((model, strategy))
        if theirs:
            cells = [f"{c} [{v:.1f}]" for c, v in zip(cells, theirs, strict=False)]
        lines.append(
            f"| {model} | {strategy} | {_unmasked(strategy, unmasked)} | {len(runs)} | "
            f"{_train_size(runs)} | " + " | ".join(cells) + " |"
        )
    return lines


def data_note(world: str | None) -> str:
    """What the numbers were measured on."""
    if world is None:
        return ("16-class ImageNet: accuracy on its validation images (original) and their "
                "mean-pooled versions (pooled); Geirhos et al.'s cue-conflict stimuli")  # fmt: skip
    return (f"the synthetic shape/texture world {world!r} (generated, 32 px; not ImageNet: "
            "its validation images, their mean-pooled versions and its own cue-conflict "
            "stimuli)")  # fmt: skip


def table1_md(records: list[dict[str, Any]], title: str, data: str = "") -> str:
    """Rows: model x strategy x unmasked mode; columns: train set size, original, pooled,
    cue-conflict accuracy, robustness, shape bias (percent; mean +- std over seeds), cue-conflict
    under the standard scoring. ``data``: what the numbers were measured on."""
    lines = [
        f"# {title}",
        "",
        (f"Measured on {data}. " if data else "")
        + "Percent, mean +- std over seeds (runs). original / pooled: validation images and their "
        "mean-pooled versions; cue-conflict: accuracy by shape, robustness (1 - decided by "
        "texture), shape bias (shape / (shape + texture) decisions; same-class stimuli left "
        "out). unmasked: what a transferred model takes from the adapted model outside the "
        "masked tensors: `reinit` (fresh) is what the paper's text describes, `inherit` (norms, "
        'biases, BatchNorm statistics, tokens, head) what its released code ran; "-": the '
        "strategy transfers no subnetwork.",
        "",
    ]
    paper = {k: v[:2] for k, v in PAPER_TABLE1.items()}  # its cue-conflict: the released scoring
    if any((r["model"], r["strategy"]) in paper for r in records):
        lines += ["[In brackets: the paper's Table 1, original and pooled; its cue-conflict "
                  "numbers are beside the released scoring's table below.]", ""]  # fmt: skip
    return "\n".join(lines + _evaluated(records) + _empty_notes(records)
                     + _rows_md(records, _COLUMNS, paper)) + "\n"  # fmt: skip


def _evaluated(records: list[dict[str, Any]]) -> list[str]:
    """Which images the original and pooled columns were measured on, with their counts."""
    seen = sorted({(r.get("eval_set") or "paper", r.get("averaging") or "images",
                    r.get("original_n"), r.get("pooled_n")) for r in records}, key=str)  # fmt: skip
    return [f"Original and pooled columns: {o if o is not None else '-'} / "
            f"{p if p is not None else '-'} images (eval_set {s}, accuracy averaged over {a}).\n"
            for s, a, o, p in seen]  # fmt: skip


def _empty_notes(records: list[dict[str, Any]]) -> list[str]:
    """A warning per model whose transferred subnetwork kept no masked weight: its subtask
    induction, random-subnetwork and unmasked-only rows are then one model."""
    empty = sorted({r["model"] for r in records if r["strategy"] == "subtask-induction"
                    and r.get("subnetwork_density") == 0})  # fmt: skip
    return [f"**Warning: the {m} subnetwork is empty** (0.0% of the masked weights kept): its "
            "subtask-induction, random-subnetwork and unmasked-only rows are the same model, and "
            "their differences measure nothing.\n" for m in empty]  # fmt: skip


def released_md(records: list[dict[str, Any]]) -> str:
    """The paper's Table 1 layout (original, pooled, cue-conflict accuracy and robustness) with
    cue-conflict scored as the paper's released code did: over every stimulus, same-class ones
    included ("-" for results recorded before the released metrics existed)."""
    lines = [
        "## Cue-conflict as the paper's released code scored it (the paper's Table 1)",
        "",
        "Percent, mean +- std over seeds. Cue-conflict accuracy = shape decisions / all stimuli "
        "and robustness = 1 - texture decisions / all stimuli, same-class stimuli included (never "
        "texture decisions); see docs/cue-conflict-scoring.md.",
        "",
    ]
    if any((r["model"], r["strategy"]) in PAPER_TABLE1 for r in records):
        lines += ["[In brackets: the paper's Table 1.]", ""]
    return "\n".join(lines + _rows_md(records, _RELEASED_COLUMNS, PAPER_TABLE1)) + "\n"


def table1_csv(records: list[dict[str, Any]]) -> str:
    """One row per run: the standard columns of table1.md, then the released scoring's
    cue-conflict accuracy and robustness (fractions; empty where a record lacks them)."""
    columns = _COLUMNS + [(f"{c} (released)", get) for c, get in _RELEASED_COLUMNS[2:]]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "strategy", "unmasked", "seed", "train_images"] + [c for c, _ in columns])
    for r in sorted(records, key=lambda r: (_sort_key(row_label(r)), r["seed"])):
        w.writerow(
            [r["model"], r["strategy"], r["unmasked"], r["seed"], r.get("train_images", 0)]
            + ["" if get(r) is None else f"{get(r):.6f}" for _, get in columns]
        )
    return buf.getvalue()


def paired_md(records: list[dict[str, Any]], scoring: str = "standard") -> str:
    """Subtask induction minus each other strategy, paired by (model, seed): does the discovered
    subnetwork itself carry the bias? A control run in the same unmasked mode is compared like
    with like; a control with one mode (scratch, data mixture, ...) pairs with both; an untrained
    row (one run) pairs with every seed. Cue-conflict metrics under ``scoring`` ("standard" or
    "released"; CueConflictError for another name)."""
    sc = scoring_by_name(scoring)
    untrained = frozenset(n for n in STRATEGIES if not STRATEGIES.get(n).trains)
    pairings = paired_by_seed(records, lambda r: r["model"], "strategy", untrained)
    pairings.sort(key=lambda p: (_sort_key((p.group, "subtask-induction", p.mode)),
                                 _sort_key((p.group, p.control, p.control_mode))))  # fmt: skip
    # Shape bias is the same under both scorings (the released code has none): the standard one.
    metrics = [("pooled", _accuracy("pooled")), ("shape bias", _cue("shape_bias")),
               ("original", _accuracy("original")),
               ("cue-conflict accuracy", _cue("accuracy", sc.name)),
               ("robustness", _cue("robustness", sc.name))]  # fmt: skip
    lines = [
        "## Subtask induction minus each control, paired by seed (percentage points)",
        "",
        f"Cue-conflict accuracy and robustness under the {sc.name} scoring (same-class stimuli "
        f"{sc.same_class}; the table1 setting cue_conflict_scoring); shape bias as in Table 1.",
        "",
        "| model | unmasked | control | pairs | " + " | ".join(f"{m}" for m, _ in metrics) + " |",
        "|---|---|---|---|" + "---|" * len(metrics),
    ]
    for p in pairings:
        cells = []
        for _, get in metrics:
            d = [100 * x for x in p.differences(get)]
            if not d:
                cells.append("-")
                continue
            m, sd = mean_std(d)
            cells.append(f"{m:+.1f}" + (f" +- {sd:.1f}" if len(d) > 1 else ""))
        lines.append(
            f"| {p.group} | {p.mode} | {_control_label(p.control, p.control_mode)} | "
            f"{len(p.pairs)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def table2_rows(stages: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per discovery run: model, kind (pretrained / random-init), lambda, density, pooled
    evaluation accuracy of the whole model and of the subnetwork, and whether it was selected."""
    rows = []
    for model, st in stages.items():
        whole = st.adapted_meta["pooled_evaluation_accuracy"]
        for lam, sub in sorted(st.by_penalty.items(), reverse=True):
            rows.append(
                {
                    "model": model,
                    "kind": "pretrained",
                    "lambda": lam,
                    "density": sub.density,
                    "pooled_whole_model": whole,
                    "pooled_subnetwork": sub.meta["val_accuracy"],
                    "best_epoch": sub.meta.get("best_epoch"),
                    "selected": sub is st.subnetwork,
                    "warnings": st.warnings() if sub is st.subnetwork else [],
                }
            )
        if st.random_init is not None:
            rows.append(
                {
                    "model": model,
                    "kind": "random-init",
                    "lambda": st.random_init.meta.get("penalty"),
                    "density": st.random_init.density,
                    "pooled_whole_model": None,
                    "pooled_subnetwork": st.random_init.meta["val_accuracy"],
                    "best_epoch": st.random_init.meta.get("best_epoch"),
                    "selected": False,
                }
            )
    return rows


def table2_md(rows: list[dict[str, Any]]) -> str:
    """The paper's Table 2 (density; pooled accuracy of the original model vs the subnetwork) with
    every lambda tried and Figure 11's random-init control."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    lines = [
        "# Table 2: discovery on mean-pooled images",
        "",
        "Pooled accuracy on the pooled evaluation subset (model selection set). The original model "
        "is the Linear FT model; random-init: discovery on a randomly initialised model of the "
        "same architecture (paper Figure 11).",
        "",
        "| model | discovered in | lambda | % of masked weights kept | pooled: original model | "
        "pooled: subnetwork | best epoch | selected |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['lambda']:g} | {100 * r['density']:.1f}% | "
            f"{pct(r['pooled_whole_model'])} | {pct(r['pooled_subnetwork'])} | "
            f"{r['best_epoch']} | {'yes' if r['selected'] else ''} |"
        )
    for model in dict.fromkeys(r["model"] for r in rows):
        if model in PAPER_TABLE2:
            kept, whole, sub = PAPER_TABLE2[model]
            lines.append(f"| {model} | the paper's Table 2 | - | {kept:.1f}% of all parameters "
                         f"| {whole:.1f}% | {sub:.1f}% | - | - |")  # fmt: skip
    warnings = [w for r in rows for w in r.get("warnings", [])]
    if warnings:
        lines += ["", "**Warnings** (the run went on: require_subnetwork_gain=false):", ""]
        lines += [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


_PER_CLASS = [
    ("original", "original_accuracy"),
    ("pooled", "pooled_accuracy"),
    ("cue-conflict accuracy", "cue_conflict_accuracy"),
    ("shape bias", "cue_conflict_shape_bias"),
]


def per_class_md(records: list[dict[str, Any]]) -> str:
    """Per-class results (paper C.3) for every row, percent, mean over seeds: accuracy on
    original and pooled images, and cue-conflict accuracy and shape bias by shape class."""
    lines = ["# Per-class results (paper Appendix C.3)", ""]
    for (model, strategy, unmasked), runs in _groups(records).items():
        tables = [r["per_class"] for r in runs if r.get("per_class")]
        if not tables:
            continue
        lines += [f"## {model} / {strategy} ({unmasked}), {len(tables)} run(s)", ""]
        lines.append("| class | " + " | ".join(t for t, _ in _PER_CLASS) + " |")
        lines.append("|---|" + "---|" * len(_PER_CLASS))
        for c in tables[0]:
            cells = [_cell([t.get(c, {}).get(k) for t in tables]) for _, k in _PER_CLASS]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _curves(runs: list[dict[str, Any]]) -> tuple[list[int], dict[str, list[float]]]:
    """(steps, {"original": ys, "pooled": ys}) of one row's runs: percent, mean over seeds."""
    steps = [p["step"] for p in runs[0]["curve"]]
    ys = {
        metric: [
            100 * statistics.fmean(r["curve"][i][metric] for r in runs if len(r["curve"]) > i)
            for i in range(len(steps))
        ]
        for metric in ("original", "pooled")
    }
    return steps, ys


def fig5_lines(
    records: list[dict[str, Any]], model: str
) -> list[tuple[list[int], dict[str, list[float]], list[str]]]:
    """The lines of one model's column of Figure 5: (steps, {"original", "pooled": percent},
    the labels of every row with exactly these curves), in table order."""
    drawn: dict[str, tuple[list[int], dict[str, list[float]], list[str]]] = {}
    mine = [r for r in records if r.get("curve") and r["model"] == model]
    for (_, strategy, unmasked), runs in _groups(mine).items():
        steps, ys = _curves(runs)
        key = repr((steps, [round(v, 9) for m in ys.values() for v in m]))
        drawn.setdefault(key, (steps, ys, []))[2].append(_control_label(strategy, unmasked))
    return list(drawn.values())


def fig5(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Figure 5: original (top) and pooled (bottom) evaluation accuracy (percent) against
    training steps, mean over seeds, one column per model; subtask induction and scratch drawn
    solid, every other trained strategy dashed, each with its own marker. Rows whose curves are
    identical (e.g. the transfers of an empty subnetwork) are drawn once, labelled together. The
    title says ``title`` (the run), the seeds and the evaluation set."""
    import matplotlib  # heavy (a second at start-up): only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    trained = [r for r in records if r.get("curve")]
    models = sorted({r["model"] for r in trained})
    if not models:
        return
    fig, axes = plt.subplots(2, len(models), figsize=(5 * len(models) + 4, 7), squeeze=False)
    markers = "osD^v<>ph*"
    for col, model in enumerate(models):
        drawn: dict[str, tuple[list[int], dict[str, list[float]], list[str]]] = {}
        for (_, strategy, unmasked), runs in _groups(
            [r for r in trained if r["model"] == model]
        ).items():
            steps, ys = _curves(runs)
            key = repr((steps, [round(v, 9) for m in ys.values() for v in m]))
            label = _control_label(strategy, unmasked)
            drawn.setdefault(key, (steps, ys, []))[2].append(label)
        for i, (steps, ys, labels) in enumerate(drawn.values()):
            solid = any(lab.startswith(("subtask-induction", "scratch")) for lab in labels)
            for row, metric in enumerate(("original", "pooled")):
                axes[row][col].plot(steps, ys[metric], "-" if solid else "--",
                                    marker=markers[i % len(markers)], markersize=4,
                                    label=" = ".join(labels))  # fmt: skip
        for row, metric in enumerate(("original", "pooled")):
            ax = axes[row][col]
            ax.set_title(f"{model}: {metric} evaluation images")
            ax.set_xlabel("training step")
            ax.set_ylabel("accuracy (%)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        handles, labels = axes[0][col].get_legend_handles_labels()
        axes[0][col].legend(handles, labels, fontsize=7, loc="best")
    seeds = sorted({r["seed"] for r in trained})
    fig.suptitle(
        f"Figure 5: {title or 'Table 1 runs'}\nmean over {len(seeds)} seed(s) "
        f"({', '.join(map(str, seeds))}); accuracy on the evaluation images (model selection "
        "set): originals and their mean-pooled versions; identical curves share a line",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    write_with_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def saved_scoring(out: Path) -> str:
    """The cue_conflict_scoring of the run in ``out`` (its config.json); "standard" when the
    file or the setting is absent (runs made before the setting existed)."""
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "standard"
    return (saved.get("config") or {}).get("cue_conflict_scoring") or "standard"


def write_reports(
    records: list[dict[str, Any]],
    out: Path,
    title: str,
    table2: list[dict[str, Any]] | None,
    scoring: str | None = None,
    data: str = "",
) -> None:
    """table1.md (standard scoring, the released scoring's table, the paired differences under
    ``scoring``: None = the run's own setting, ``saved_scoring(out)``), table1.csv, table2.md
    (+ table2.json, so that `subind-bench report` can rewrite it), per_class.md and fig5.png.
    ``data``: what the numbers were measured on (:func:`data_note`)."""
    paired = paired_md(records, scoring or saved_scoring(out))  # an unknown name fails first
    write_text_atomic(
        out / "table1.md",
        "\n".join([table1_md(records, title, data), released_md(records), paired]),
    )
    write_text_atomic(out / "table1.csv", table1_csv(records))
    if table2 is not None:
        write_json_atomic(out / "table2.json", table2)
        write_text_atomic(out / "table2.md", table2_md(table2))
    write_text_atomic(out / "per_class.md", per_class_md(records))
    fig5(records, out / "fig5.png", title)
