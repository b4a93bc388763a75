"""subind-bench: `subind-bench ls`, `subind-bench run fig3 --preset quick --out DIR`."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import typing
from pathlib import Path

import click

from benchmarks.fig3_config import PRESETS, Fig3Config
from subind.conditions import CONDITIONS
from subind.registry import Registry
from subind.tasks.expression import ExpressionError

EXPERIMENTS: Registry[str] = Registry("experiment")
EXPERIMENTS.register("fig3", "arithmetic Subtask Induction: paper Figure 3, Table 3, Appendix B")(
    "fig3"
)


def _ints(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(x for x in text.replace(" ", "").split(",") if x)


def _coerce(field: dataclasses.Field, value: str):
    hint = typing.get_type_hints(Fig3Config)[field.name]
    if hint is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            raise click.BadParameter(f"{field.name} takes true or false, got {value!r}")
        return value.lower() in ("true", "1")
    if hint in (int, float, str):
        try:
            return hint(value)
        except ValueError:
            raise click.BadParameter(
                f"{field.name} takes a {hint.__name__}, got {value!r}"
            ) from None
    if typing.get_args(hint) and typing.get_args(hint)[0] is int:
        return _ints(value)
    return _names(value)


def resolve_config(preset: str, overrides: dict, sets: tuple[str, ...]) -> Fig3Config:
    """The preset with the options the user gave (unset ones are None and dropped)."""
    if preset not in PRESETS:
        raise click.UsageError(PRESETS.unknown_message(preset))
    fields = {f.name: f for f in dataclasses.fields(Fig3Config)}
    changes = {k: v for k, v in overrides.items() if v is not None}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            close = [f for f in fields if key in f or f in key][:3]
            raise click.BadParameter(
                f"--set takes FIELD=VALUE with a Fig3Config field, got {item!r}"
                + (f"; did you mean {', '.join(close)}?" if close else "")
            )
        changes[key] = _coerce(fields[key], value)
    return dataclasses.replace(PRESETS.get(preset), **changes)


@click.group()
def main() -> None:
    """Reproduce the paper's figures and tables."""


@main.command("ls")
def ls_cmd() -> None:
    """List experiments, presets and conditions."""
    click.echo("experiments:")
    for name in EXPERIMENTS:
        click.echo(f"  {name:28s} {EXPERIMENTS.doc(name)}")
    click.echo("fig3 presets: " + ", ".join(PRESETS.names()))
    click.echo("conditions:")
    for name in CONDITIONS:
        click.echo(f"  {name:28s} {CONDITIONS.doc(name)}")


@main.command("run")
@click.argument("experiment")
@click.option("--preset", default="quick", show_default=True, help="quick (CPU), paper, tiny")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="output directory")
@click.option("--layers", default=None, help="comma-separated depths, e.g. 2,12")
@click.option("--seeds", default=None, help="comma-separated transfer seeds")
@click.option("--sizes", default=None, help="comma-separated numbers of disambiguating rows")
@click.option("--conditions", default=None, help="comma-separated; see `subind-bench ls`")
@click.option("--unmasked", default=None, help="inherit,reinit or one of them")
@click.option("--source-task", default=None, help="base model's task, e.g. 'a+ab'")
@click.option("--subtask", default=None, help="subtask to discover, e.g. 'ab'")
@click.option("--target-task", default=None, help="transfer task, e.g. 'a^2+ab'")
@click.option("--workers", type=int, default=None, help="parallel transfer processes")
@click.option(
    "--trainable-subnetwork/--frozen-subnetwork",
    "subnetwork_trainable",
    default=None,
    help="let the transferred entries train (paper Figure 7); frozen by default",
)
@click.option("--set", "sets", multiple=True, help="any Fig3Config field: FIELD=VALUE")
@click.option("--progress/--no-progress", default=True)
def run_cmd(experiment, preset, out, layers, seeds, sizes, conditions, unmasked, source_task,
            subtask, target_task, workers, subnetwork_trainable, sets, progress) -> None:  # fmt: skip
    """Run EXPERIMENT (see `subind-bench ls`), reusing whatever OUT already holds."""
    if experiment not in EXPERIMENTS:
        raise click.UsageError(EXPERIMENTS.unknown_message(experiment))
    cfg = resolve_config(
        preset,
        {
            "layers": _ints(layers),
            "seeds": _ints(seeds),
            "sizes": _ints(sizes),
            "conditions": _names(conditions),
            "unmasked": _names(unmasked),
            "source_task": source_task,
            "subtask": subtask,
            "target_task": target_task,
            "workers": workers,
            "subnetwork_trainable": subnetwork_trainable,
        },
        sets,
    )
    for cond in cfg.conditions:
        if cond not in CONDITIONS:
            raise click.UsageError(CONDITIONS.unknown_message(cond))
    for mode in cfg.unmasked:
        if mode not in ("inherit", "reinit"):
            raise click.UsageError(f"--unmasked takes inherit and/or reinit, got {mode!r}")
    out = out or Path("runs") / f"{experiment}-{preset}"

    from benchmarks.fig3 import StageError, base_model, find_subnetwork, run_fig3
    from benchmarks.report import table_md, write_reports

    start = time.perf_counter()
    try:
        records = run_fig3(cfg, out, progress=progress)
        subs = {
            L: find_subnetwork(cfg, L, base_model(cfg, L, out, False), out, False)
            for L in cfg.layers
        }
    except (StageError, ExpressionError, ValueError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 merges the results and writes the reports
    title = f"{cfg.source_task} -> {cfg.subtask} -> {cfg.target_task} (mod {cfg.modulus}, preset {preset})"
    write_reports(records, subs, out, title)
    click.echo(table_md(records, f"Test accuracy: {title}"))
    click.echo(
        f"{len(records)} runs; wall time {time.perf_counter() - start:.0f} s; outputs in {out}/"
    )


@main.command("report")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report_cmd(out: Path) -> None:
    """Rewrite OUT's table.md, fig3.png and subnetworks.md from its results.jsonl."""
    from benchmarks.report import table_md, write_reports
    from subind.io import read_jsonl
    from subind.subnetwork import Subnetwork

    records = read_jsonl(out / "results.jsonl")
    if not records:
        raise click.UsageError(
            f"{out}/results.jsonl holds no results: run `subind-bench run` first"
        )
    subs = {}
    for d in sorted((out / "subnetworks").glob("*/")):
        sub = Subnetwork.load(d)
        subs[sub.meta.get("layers", d.name)] = sub
    r = records[0]
    title = f"{r['source_task']} -> {r['subtask']} -> {r['target_task']} (mod {r['modulus']})"
    write_reports(records, subs, out, title)
    click.echo(table_md(records, f"Test accuracy: {title}"))


# ------------------------------------------------------------------------------------ vision
def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _cue_table(rows: list[tuple[str, dict]]) -> str:
    """Markdown table of cue-conflict metrics, one row per (label, metrics)."""
    lines = [
        "| responses | n | same-class left out | missing | accuracy | robustness | shape bias |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in rows:
        lines.append(
            f"| {label} | {m['n']} | {m['n_excluded_same_class']} | {m['n_missing']} | "
            f"{_fmt(m['accuracy'])} | {_fmt(m['robustness'])} | {_fmt(m['shape_bias'])} |"
        )
    return "\n".join(lines)


@main.group("score")
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
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="also write the metrics (with provenance) to this JSON file")  # fmt: skip
def score_cue_conflict_cmd(responses, more, json_out) -> None:
    """Cue-conflict accuracy, robustness and shape bias of each responses file and of all rows
    pooled. Same-class stimuli are left out; `na` responses count as wrong (neither shape nor
    texture decisions)."""
    from subind.io import write_json_atomic
    from subind.provenance import provenance
    from subind.vision.cue_conflict import CueConflictError, score_files

    paths = list(responses) + list(more)
    if not paths:
        raise click.UsageError("give at least one file: --responses FILE.csv [FILE.csv ...]")
    try:
        scores = score_files(paths)
    except CueConflictError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    rows = list(scores["files"].items())
    if len(paths) > 1:
        rows.append((f"pooled ({len(paths)} files)", scores["pooled"]))
    click.echo(_cue_table(rows))
    pooled = scores["pooled"]
    click.echo(
        f"{pooled['n_excluded_same_class']} same-class stimuli left out; "
        f"{pooled['n_missing']} missing (na) responses counted as wrong"
    )
    if json_out:
        write_json_atomic(json_out, {**scores, "provenance": provenance()})


@main.command("evaluate")
@click.option("--arch", required=True, help="resnet18, vit_b_16, resnet18-mini, vit_b_16-mini")
@click.option(
    "--weights",
    required=True,
    type=click.Path(path_type=Path),
    help="torchvision state dict (.pth/.pt or .safetensors), 1000- or 16-class head",
)
@click.option(
    "--cue-conflict-dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Geirhos' style-transfer-preprocessed-512 folder (<shape>/<shape><n>-<texture><m>.png)",
)
@click.option(
    "--imagenet-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="ImageNet root: its 16-class val/ images are evaluated",
)
@click.option(
    "--val-labels",
    type=click.Path(path_type=Path),
    default=None,
    help="labels of a flat val/ folder (LOC_val_solution.csv or '<file> <wnid>' lines)",
)
@click.option(
    "--pooled",
    default=None,
    help="meanpool output folder (<pooled>/val/manifest.json) or hf://datasets/ORG/NAME",
)
@click.option(
    "--decision-mapping",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON category -> head indices (default: the packaged ImageNet-1k mapping)",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="output directory")
@click.option(
    "--tag", default=None, help="name of this model's outputs (default: the weight file's stem)"
)
@click.option("--device", default=None, help="auto (default), cpu, cuda, cuda:1 ...")
@click.option("--batch-size", type=int, default=None)
@click.option("--workers", type=int, default=None, help="DataLoader worker processes")
@click.option("--progress/--no-progress", default=True)  # fmt: skip
def evaluate_cmd(arch, weights, cue_conflict_dir, imagenet_dir, val_labels, pooled,
                 decision_mapping, out, tag, device, batch_size, workers, progress) -> None:  # fmt: skip
    """Evaluate a model you bring: original, mean-pooled and cue-conflict accuracy, robustness
    and shape bias; writes metrics.json, per_class/TAG.csv and responses/TAG.csv under OUT."""
    from meanpool.imagenet import ImageNetError, sixteen_classes
    from subind.io import write_json_atomic
    from subind.provenance import provenance
    from subind.vision.cue_conflict import CueConflictError
    from subind.vision.evaluate import (
        EvalConfig,
        check_mapping,
        evaluate_model,
        load_decision_mapping,
    )
    from subind.vision.models import ARCHS, WeightsError, head_outputs, load_weights, read_weights

    if arch not in ARCHS:
        raise click.UsageError(ARCHS.unknown_message(arch))
    if batch_size is not None and batch_size < 1:
        raise click.BadParameter(f"--batch-size must be >= 1, got {batch_size}")
    spec = ARCHS.get(arch)
    cfg = EvalConfig(
        **{
            k: v
            for k, v in {"batch_size": batch_size, "workers": workers, "device": device}.items()
            if v is not None
        }
    )
    tag = tag or weights.stem
    categories = sixteen_classes()[0]
    try:
        sd = read_weights(weights)
        classes = head_outputs(sd, spec)
        model = spec.build(classes)
        load_weights(model, sd, name=f"{weights} (for --arch {arch})")
        mapping = None
        if classes != len(categories) or decision_mapping is not None:
            mapping = load_decision_mapping(decision_mapping)
            check_mapping(mapping, categories, classes)
        start = time.perf_counter()
        result = evaluate_model(
            model, spec, imagenet_dir=imagenet_dir, val_labels=val_labels, pooled=pooled,
            cue_conflict_dir=cue_conflict_dir, mapping=mapping, out_dir=out, tag=tag, cfg=cfg,
            progress=progress, log=click.echo,
        )  # fmt: skip
    except (WeightsError, CueConflictError, ImageNetError, ValueError, FileNotFoundError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    record = {
        "arch": arch,
        "weights": str(weights),
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
        "config": dataclasses.asdict(cfg),
        "wall_s": round(time.perf_counter() - start, 2),
        **result,
        "provenance": provenance(),
    }
    write_json_atomic(out / "metrics" / f"{tag}.json", record)
    cue = result["cue_conflict"]
    click.echo(
        "| model | original | pooled | cue-conflict accuracy | robustness | shape bias |\n"
        "|---|---|---|---|---|---|\n"
        f"| {tag} | {_fmt(result['original_accuracy'])} | {_fmt(result['pooled_accuracy'])} | "
        f"{_fmt(cue['accuracy'])} | {_fmt(cue['robustness'])} | {_fmt(cue['shape_bias'])} |"
    )
    click.echo(f"outputs in {out}/ (metrics/{tag}.json, per_class/{tag}.csv, responses/{tag}.csv)")


if __name__ == "__main__":
    main()
