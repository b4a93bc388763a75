"""``subind-bench evaluate`` (a model you bring: original, pooled and cue-conflict accuracy,
robustness and shape bias) and ``subind-bench score cue-conflict`` (responses files).

``subind-bench`` loads this module at start-up: the modules that import torchvision (models,
evaluation) are imported inside the command that needs them, so that other commands start
without it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import click

from benchmarks.vision.cue_conflict import (
    SCORINGS,
    CueConflictError,
    same_class_note,
    scan_cue_conflict,
    score_files,
    scoring,
)
from benchmarks.vision.experiment import EVAL_OPTIONS, IMAGE_OPTIONS
from meanpool.imagenet import sixteen_classes
from subind.io import require_writable, write_json_atomic
from subind.provenance import provenance


def _fmt(x) -> str:
    """A fraction as percent with one decimal, as every table of the project prints it."""
    return "-" if x is None else f"{100 * x:.1f}"


def _cue_table(rows: list[tuple[str, dict]], same_class: str, count_key: str) -> str:
    """Markdown table of cue-conflict metrics, one row per (label, metrics); ``same_class``
    ("left out" / "included") titles the column of ``metrics[count_key]``."""
    lines = [
        f"| responses | n | same-class {same_class} | missing | accuracy % | robustness % | "
        "shape bias % |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in rows:
        lines.append(
            f"| {label} | {m['n']} | {m[count_key]} | {m['n_missing']} | "
            f"{_fmt(m['accuracy'])} | {_fmt(m['robustness'])} | {_fmt(m['shape_bias'])} |"
        )
    return "\n".join(lines)


def _scoring_option(ctx: click.Context, param: click.Parameter, name: str):
    """--cue-conflict-scoring NAME -> the Scoring ("did you mean" for an unknown name)."""
    try:
        return scoring(name)
    except CueConflictError as e:
        raise click.BadParameter(str(e)) from None


_SCORING_HELP = (
    "cue-conflict scoring printed first: standard (Geirhos et al.: same-class stimuli left out) "
    "or released (the paper's released code, its Table 1: every stimulus); docs/cue-conflict-"
    "scoring.md. Both are written to the JSON output"
)


def _scored_tables(scores: dict, paths: list, headline) -> list[str]:
    """The headline scoring's table and summary line, then every other scoring's table."""
    out = []
    for sc in [headline] + [SCORINGS.get(n) for n in SCORINGS if n != headline.name]:
        by = scores if sc.name == "standard" else scores[sc.name]
        rows = list(by["files"].items())
        if len(paths) > 1:
            rows.append((f"pooled ({len(paths)} files)", by["pooled"]))
        out.append(f"{sc.name} scoring (same-class stimuli {sc.same_class}):")
        out.append(_cue_table(rows, sc.same_class, sc.same_class_count))
        if sc is headline:
            pooled = by["pooled"]
            never = "" if sc.same_class == "left out" else " (never texture decisions)"
            out.append(
                f"{pooled[sc.same_class_count]} same-class stimuli {sc.same_class}{never}; "
                f"{pooled['n_missing']} missing (na) responses counted as wrong"
            )
        out.append("")
    return out[:-1]


@click.group("score")
def score_group() -> None:
    """Score model responses."""


@score_group.command("cue-conflict")
@click.option(
    "--responses",
    "responses",
    multiple=True,
    type=click.Path(path_type=Path),
    help="responses CSV (model-vs-human format); more files may follow",
)
@click.argument("more", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--json",
    "json_out",
    type=click.Path(path_type=Path),
    default=None,
    help="also write the metrics (with provenance) to this JSON file",
)
@click.option(
    "--cue-conflict-scoring",
    "headline",
    default="standard",
    show_default=True,
    callback=_scoring_option,
    help=_SCORING_HELP,
)
@click.option("--unknown-as-missing", is_flag=True, default=False,
              help="score answers that are not one of the 16 category names as missing (na) "
                   "instead of refusing them")  # fmt: skip
def score_cue_conflict_cmd(responses, more, json_out, headline, unknown_as_missing) -> None:
    """Cue-conflict accuracy, robustness and shape bias of each responses file and of all rows
    pooled, under both scorings (the one chosen first). Standard: same-class stimuli left out;
    released: every stimulus, a same-class one never a texture decision. `na` responses count as
    wrong (neither shape nor texture decisions)."""
    paths = list(responses) + list(more)
    if not paths:
        raise click.UsageError("give at least one file: --responses FILE.csv [FILE.csv ...]")
    try:
        scores = score_files(paths, unknown_as_missing)
    except CueConflictError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo("\n".join(_scored_tables(scores, paths, headline)))
    unknown = sum(scores["unknown_answers_as_missing"].values())
    if unknown:
        click.echo(f"{unknown} answers that are not one of the 16 category names were scored as "
                   "missing (--unknown-as-missing)")  # fmt: skip
    if json_out:
        write_json_atomic(
            json_out, {**scores, "cue_conflict_scoring": headline.name, "provenance": provenance()}
        )


def _model_and_mapping(spec, weights: str | None, decision_mapping: Path | None):
    """(the pretrained model and its adapted architecture (``sources.Pretrained``), the decision
    mapping: None for a 16-class head unless one is given)."""
    from benchmarks.vision.evaluate import check_mapping, load_decision_mapping  # torchvision
    from benchmarks.vision.models import load_pretrained

    categories = sixteen_classes()[0]
    pretrained = load_pretrained(spec, weights)
    mapping = None
    if pretrained.classes != len(categories) or decision_mapping is not None:
        mapping = load_decision_mapping(decision_mapping)
        check_mapping(mapping, categories, pretrained.classes)
    return pretrained, mapping


def _evaluate_summary(result: dict, tag: str, headline) -> str:
    """The headline table (cue-conflict under the chosen scoring), then one line per other
    scoring."""
    cue = result[headline.key]
    lines = [
        f"cue-conflict: {headline.name} scoring (same-class stimuli {headline.same_class})",
        "| model | original % | pooled % | cue-conflict accuracy % | robustness % | shape bias % |",
        "|---|---|---|---|---|---|",
        f"| {tag} | {_fmt(result['original_accuracy'])} | {_fmt(result['pooled_accuracy'])} | "
        f"{_fmt(cue['accuracy'])} | {_fmt(cue['robustness'])} | {_fmt(cue['shape_bias'])} |",
    ]
    for name in SCORINGS:
        sc = SCORINGS.get(name)
        if sc is not headline:
            m = result[sc.key]
            lines.append(
                f"{name} scoring (same-class stimuli {sc.same_class}): accuracy "
                f"{_fmt(m['accuracy'])}%, robustness {_fmt(m['robustness'])}%, shape bias "
                f"{_fmt(m['shape_bias'])}%"
            )
    return "\n".join(lines)


@click.command(
    "evaluate",
    params=[o.click_option(required=o.field == "cue_conflict_dir") for o in IMAGE_OPTIONS]
    + [o.click_option() for o in EVAL_OPTIONS],
)
@click.option(
    "--arch",
    required=True,
    help="resnet18, vit_b_16, resnet18-mini, vit_b_16-mini, or torchvision:NAME, timm:NAME, "
    "hf:ORG/NAME",
)
@click.option(
    "--weights",
    default=None,
    help="state dict (.pth/.pt or .safetensors), transformers folder or hf://ORG/NAME (local "
    "cache only), 1000- or 16-class head; default for torchvision:/timm:/hf: names: their "
    "pretrained weights from the local cache",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="output directory")
@click.option(
    "--tag", default=None, help="name of this model's outputs (default: the weight file's stem)"
)
@click.option("--device", default=None, help="auto (default), cpu, cuda, cuda:1 ...")
@click.option("--batch-size", type=int, default=None)
@click.option("--workers", type=int, default=None, help="DataLoader worker processes")
@click.option(
    "--cue-conflict-scoring",
    "headline",
    default="standard",
    show_default=True,
    callback=_scoring_option,
    help=_SCORING_HELP,
)
@click.option("--progress/--no-progress", default=True, help="progress bars on stderr")
def evaluate_cmd(imagenet_dir, val_labels, pooled, cue_conflict_dir, decision_mapping, eval_set,
                 arch, weights, out, tag, device, batch_size, workers, headline,
                 progress) -> None:  # fmt: skip
    """Evaluate a model you bring: original, mean-pooled and cue-conflict accuracy, robustness
    and shape bias (both cue-conflict scorings; the one chosen printed first); writes
    metrics/TAG.json, per_class/TAG.csv and responses/TAG.csv under OUT."""
    from benchmarks.vision.evaluate import (  # torchvision
        EVAL_SETS,
        EvalConfig,
        eval_images_of_tree,
        evaluate_model,
    )
    from benchmarks.vision.models import ARCHS, LIBRARY_PREFIXES, arch_for

    if not arch.startswith(LIBRARY_PREFIXES) and arch not in ARCHS:
        raise click.UsageError(ARCHS.unknown_message(arch))
    if batch_size is not None and batch_size < 1:
        raise click.BadParameter(f"--batch-size must be >= 1, got {batch_size}")
    eval_set = eval_set or "paper"
    if eval_set not in EVAL_SETS:
        raise click.BadParameter(f"--eval-set takes {' or '.join(EVAL_SETS)}, got {eval_set!r}")
    cfg = EvalConfig(
        **{
            k: v
            for k, v in {"batch_size": batch_size, "workers": workers, "device": device}.items()
            if v is not None
        }
    )
    cue_conflict_dir, out = Path(cue_conflict_dir), Path(out)
    imagenet_dir = None if imagenet_dir is None else Path(imagenet_dir)
    try:
        require_writable(out)  # before any work, as every input below
        stimuli = scan_cue_conflict(cue_conflict_dir)
        pretrained, mapping = _model_and_mapping(arch_for(arch), weights, decision_mapping)
        spec, classes, tag = pretrained.arch, pretrained.classes, tag or pretrained.source.tag
        images = None
        if imagenet_dir is not None or pooled is not None:
            images = eval_images_of_tree(eval_set, imagenet_dir, val_labels, pooled)
        click.echo(same_class_note(stimuli))
        start = time.perf_counter()
        result = evaluate_model(
            pretrained.model, spec, images=images, cue_conflict_dir=cue_conflict_dir,
            mapping=mapping, out_dir=out, tag=tag, cfg=cfg, progress=progress,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:  # weights, stimuli, ImageNet: one line each
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    record = {
        "arch": arch,
        "weights": pretrained.source.given,
        "weights_path": str(pretrained.source.path),
        "preprocessing": spec.resolved_preprocessing.to_dict(),
        "tag": tag,
        "head_outputs": classes,
        "decision": "direct (16-class head)" if mapping is None else "decision mapping",
        "decision_mapping": None if mapping is None else str(decision_mapping or "packaged"),
        "sources": {
            "imagenet_dir": None if imagenet_dir is None else str(imagenet_dir),
            "val_labels": None if val_labels is None else str(val_labels),
            "pooled": pooled,
            "cue_conflict_dir": str(cue_conflict_dir),
        },
        "eval_set": eval_set,
        "evaluated_on": None if images is None else images.describe(),
        "config": dataclasses.asdict(cfg),
        "cue_conflict_scoring": headline.name,  # the one printed first; both are below
        "wall_s": round(time.perf_counter() - start, 2),
        **result,
        "provenance": provenance(),
    }
    write_json_atomic(out / "metrics" / f"{tag}.json", record)
    click.echo(_evaluate_summary(result, tag, headline))
    click.echo(f"outputs in {out}/ (metrics/{tag}.json, per_class/{tag}.csv, responses/{tag}.csv)")
