"""subind-bench: `subind-bench ls`, `subind-bench run fig3 --preset quick --out DIR`,
`subind-bench run table1 --preset mini --out DIR`."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import types
import typing
from pathlib import Path

import click

from benchmarks.fig3_config import PRESETS, Fig3Config
from benchmarks.triples import TRIPLE_EXPERIMENTS
from subind.conditions import CONDITIONS
from subind.registry import Registry
from subind.tasks.expression import ExpressionError

EXPERIMENTS: Registry[str] = Registry("experiment")
EXPERIMENTS.register("fig3", "arithmetic Subtask Induction: paper Figure 3, Table 3, Appendix B")(
    "fig3"
)
EXPERIMENTS.register(
    "table1", "vision Subtask Induction: paper Tables 1-2, Figures 5 and 11, Appendix C"
)("table1")
for _name in TRIPLE_EXPERIMENTS:  # the Appendix B.4 triples, run by the same pipeline
    EXPERIMENTS.register(_name, TRIPLE_EXPERIMENTS.doc(_name))(_name)


def _ints(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(x for x in text.replace(" ", "").split(",") if x)


def _coerce(cls: type, field: dataclasses.Field, value: str):
    hint = typing.get_type_hints(cls)[field.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # "X | None": "none" unsets
        if value.lower() == "none":
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
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
    if typing.get_args(hint) and typing.get_args(hint)[0] is float:
        try:
            return tuple(float(x) for x in value.replace(" ", "").split(",") if x)
        except ValueError:
            raise click.BadParameter(f"{field.name} takes comma-separated numbers") from None
    return _names(value)


def check_names(names: tuple[str, ...], registry: Registry, unmasked: tuple[str, ...]) -> None:
    """One-line usage errors for names not in ``registry`` ("did you mean") and unknown
    ``--unmasked`` modes."""
    for name in names:
        if name not in registry:
            raise click.UsageError(registry.unknown_message(name))
    for mode in unmasked:
        if mode not in ("inherit", "reinit"):
            raise click.UsageError(f"--unmasked takes inherit and/or reinit, got {mode!r}")


def resolve_config(preset: str, overrides: dict, sets: tuple[str, ...], experiment: str = "fig3"):
    """The experiment's preset with the options the user gave (unset ones are None and
    dropped)."""
    if experiment == "table1":
        from benchmarks.table1_config import PRESETS as presets
        from benchmarks.table1_config import Table1Config as cls
    else:
        presets, cls = PRESETS, Fig3Config
    if preset not in presets:
        raise click.UsageError(presets.unknown_message(preset))
    base = (
        TRIPLE_EXPERIMENTS.get(experiment).preset(preset)
        if experiment in TRIPLE_EXPERIMENTS
        else presets.get(preset)
    )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    changes = {k: v for k, v in overrides.items() if v is not None}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            close = [f for f in fields if key in f or f in key][:3]
            raise click.BadParameter(
                f"--set takes FIELD=VALUE with a {cls.__name__} field, got {item!r}"
                + (f"; did you mean {', '.join(close)}?" if close else "")
            )
        changes[key] = _coerce(cls, fields[key], value)
    return dataclasses.replace(base, **changes)


@click.group()
def main() -> None:
    """Reproduce the paper's figures and tables."""


@main.command("ls")
def ls_cmd() -> None:
    """List experiments, presets and conditions."""
    click.echo("experiments:")
    for name in EXPERIMENTS:
        click.echo(f"  {name:28s} {EXPERIMENTS.doc(name)}")
    from benchmarks.strategies import STRATEGIES
    from benchmarks.table1_config import PRESETS as TABLE1_PRESETS

    click.echo("fig3/fig8/fig9/fig10 presets: " + ", ".join(PRESETS.names()))
    click.echo("table1 presets: " + ", ".join(TABLE1_PRESETS.names()))
    click.echo("conditions (fig3):")
    for name in CONDITIONS:
        click.echo(f"  {name:28s} {CONDITIONS.doc(name)}")
    click.echo("strategies (table1):")
    for name in STRATEGIES:
        click.echo(f"  {name:28s} {STRATEGIES.doc(name)}")


@main.command("run")
@click.argument("experiment")
@click.option(
    "--preset",
    default=None,
    help="fig3: quick (default, CPU), paper, tiny; table1: mini (default, CPU), paper",
)
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
    "--batch-runs",
    type=int,
    default=None,
    help="transfer runs trained together per group (0: automatic, 1: one at a time)",
)
@click.option(
    "--trainable-subnetwork/--frozen-subnetwork",
    "subnetwork_trainable",
    default=None,
    help="let the transferred entries train (paper Figure 7); frozen by default",
)
@click.option("--imagenet-dir", default=None, help="table1: ImageNet root (train/<wnid>/, val/)")
@click.option("--val-labels", default=None, help="table1: labels for a flat val/ folder")
@click.option(
    "--pooled", default=None, help="table1: meanpool output folder or hf://datasets/ORG/NAME"
)
@click.option("--cue-conflict-dir", default=None, help="table1: style-transfer-preprocessed-512")
@click.option("--weights-resnet18", default=None, help="table1: torchvision resnet18 state dict")
@click.option("--weights-vit", default=None, help="table1: torchvision vit_b_16 state dict")
@click.option("--models", default=None, help="table1: comma-separated, e.g. resnet18,vit_b_16")
@click.option("--strategies", default=None, help="table1: comma-separated; see `subind-bench ls`")
@click.option("--device", default=None, help="auto (CUDA when available), cpu, cuda, cuda:1")
@click.option(
    "--set", "sets", multiple=True, help="any field of the experiment's config: FIELD=VALUE"
)
@click.option("--progress/--no-progress", default=True)
def run_cmd(experiment, preset, out, layers, seeds, sizes, conditions, unmasked, source_task,
            subtask, target_task, workers, batch_runs, subnetwork_trainable, imagenet_dir,
            val_labels, pooled, cue_conflict_dir, weights_resnet18, weights_vit, models,
            strategies, device, sets, progress) -> None:  # fmt: skip
    """Run EXPERIMENT (see `subind-bench ls`), reusing whatever OUT already holds."""
    if experiment not in EXPERIMENTS:
        raise click.UsageError(EXPERIMENTS.unknown_message(experiment))
    fig3_only = {"--layers": layers, "--sizes": sizes, "--conditions": conditions,
                 "--source-task": source_task, "--subtask": subtask,
                 "--target-task": target_task, "--workers": workers,
                 "--batch-runs": batch_runs}  # fmt: skip
    table1_only = {"--imagenet-dir": imagenet_dir, "--val-labels": val_labels, "--pooled": pooled,
                   "--cue-conflict-dir": cue_conflict_dir, "--weights-resnet18": weights_resnet18,
                   "--weights-vit": weights_vit, "--models": models,
                   "--strategies": strategies}  # fmt: skip
    wrong = [k for k, v in (fig3_only if experiment == "table1" else table1_only).items() if v]
    if wrong:
        raise click.UsageError(f"{', '.join(wrong)} is not an option of {experiment}")
    if experiment == "table1":
        from benchmarks.table1_cli import run_table1_cmd

        overrides = {k[2:].replace("-", "_"): v for k, v in table1_only.items()}
        overrides.update(models=_names(models), strategies=_names(strategies), seeds=_ints(seeds),
                         unmasked=_names(unmasked), device=device,
                         subnetwork_trainable=subnetwork_trainable)  # fmt: skip
        run_table1_cmd(preset or "mini", out, overrides, sets, progress)
        return
    preset = preset or "quick"
    triples = experiment in TRIPLE_EXPERIMENTS
    if triples and any(t is not None for t in (source_task, subtask, target_task)):
        raise click.UsageError(
            f"{experiment} sets its own tasks (see `subind-bench ls`); for another triple use "
            "`subind-bench run fig3 --source-task ... --subtask ... --target-task ...`"
        )
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
            "batch_runs": batch_runs,
            "subnetwork_trainable": subnetwork_trainable,
            "device": device,
        },
        sets,
        experiment,
    )
    check_names(cfg.conditions, CONDITIONS, cfg.unmasked)
    if cfg.batch_runs < 0:
        raise click.BadParameter(f"--batch-runs takes 0 (automatic) or more, got {cfg.batch_runs}")
    out = out or Path("runs") / f"{experiment}-{preset}"

    from benchmarks.fig3 import StageError, base_model, find_subnetwork, run_fig3
    from benchmarks.report import table_md, write_reports

    start = time.perf_counter()
    if triples:
        _run_triples(experiment, preset, cfg, out, progress, start)
        return
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


def _run_triples(
    experiment: str, preset: str, cfg: Fig3Config, out: Path, progress: bool, start: float
) -> None:
    from benchmarks.fig3 import StageError
    from benchmarks.triples import load_subnetworks, run_triples, write_triple_reports

    try:
        records = run_triples(experiment, preset, cfg, out, progress=progress)
    except (StageError, ExpressionError, ValueError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 writes the reports
    click.echo(write_triple_reports(records, out, load_subnetworks(out)))
    click.echo(
        f"{len(records)} runs; wall time {time.perf_counter() - start:.0f} s; outputs in {out}/ "
        "(one folder per triple, summary.md)"
    )


@main.command("report")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report_cmd(out: Path) -> None:
    """Rewrite OUT's tables and plots from its results.jsonl (fig3: table.md, fig3.png,
    subnetworks.md; table1: table1.md/.csv, table2.md, per_class.md, fig5.png)."""
    from benchmarks.report import table_md, write_reports
    from subind.io import read_jsonl
    from subind.subnetwork import Subnetwork

    records = read_jsonl(out / "results.jsonl")
    if not records:
        raise click.UsageError(
            f"{out}/results.jsonl holds no results: run `subind-bench run` first"
        )
    if records[0].get("experiment") == "table1":
        from benchmarks.table1_cli import report_table1

        report_table1(out, records)
        return
    if (out / "experiment.json").exists():  # a triples experiment: one folder per triple
        from benchmarks.triples import load_subnetworks, write_triple_reports

        click.echo(write_triple_reports(records, out, load_subnetworks(out)))
        return
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


@main.command("summary")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="also write summary.md and summary.json into this folder",
)
def summary_cmd(dirs: tuple[Path, ...], out: Path | None) -> None:
    """Subtask induction minus the random and complement controls, paired by seed, per triple,
    depth, unmasked mode and size, from the results.jsonl of each of DIRS (runs of fig3, fig8,
    fig9, fig10...)."""
    from benchmarks.triples import summary_md, summary_rows
    from subind.io import read_jsonl, write_json_atomic, write_text_atomic

    records = []
    for d in dirs:
        path = d / "results.jsonl"
        if not path.is_file():
            raise click.UsageError(
                f"{path} does not exist: give output folders of `subind-bench run`"
            )
        records += read_jsonl(path)
    if not summary_rows(records):
        raise click.UsageError(
            "no subtask-induction run has a random- or complement-subnetwork run of the same "
            "seed, size and unmasked mode in " + ", ".join(map(str, dirs))
        )
    text = summary_md(records)
    click.echo(text)
    if out is not None:
        write_text_atomic(out / "summary.md", text)
        write_json_atomic(out / "summary.json", summary_rows(records))


if __name__ == "__main__":
    main()
