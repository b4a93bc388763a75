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
from benchmarks.triples import TRIPLE_EXPERIMENTS
from subind.conditions import CONDITIONS
from subind.registry import Registry
from subind.tasks.expression import ExpressionError

EXPERIMENTS: Registry[str] = Registry("experiment")
EXPERIMENTS.register("fig3", "arithmetic Subtask Induction: paper Figure 3, Table 3, Appendix B")(
    "fig3"
)
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


def resolve_config(
    preset: str, overrides: dict, sets: tuple[str, ...], experiment: str = "fig3"
) -> Fig3Config:
    """The experiment's preset with the options the user gave (unset ones are None and
    dropped)."""
    if preset not in PRESETS:
        raise click.UsageError(PRESETS.unknown_message(preset))
    base = (
        TRIPLE_EXPERIMENTS.get(experiment).preset(preset)
        if experiment in TRIPLE_EXPERIMENTS
        else PRESETS.get(preset)
    )
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
    click.echo("presets (every experiment): " + ", ".join(PRESETS.names()))
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
            "subnetwork_trainable": subnetwork_trainable,
        },
        sets,
        experiment,
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
    """Rewrite OUT's table.md, fig3.png and subnetworks.md from its results.jsonl."""
    from benchmarks.report import table_md, write_reports
    from subind.io import read_jsonl
    from subind.subnetwork import Subnetwork

    records = read_jsonl(out / "results.jsonl")
    if not records:
        raise click.UsageError(
            f"{out}/results.jsonl holds no results: run `subind-bench run` first"
        )
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
