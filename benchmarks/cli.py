"""subind-bench: `subind-bench ls`, `subind-bench run EXPERIMENT [options]`,
`subind-bench report OUT`; every experiment-specific part comes from the experiment registry
(:mod:`benchmarks.experiments`), and the vision and arithmetic packages add their own commands
(`evaluate`, `score`, `summary`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from benchmarks import harness
from benchmarks.arithmetic.cli import summary_cmd
from benchmarks.base import ConfigError, Experiment
from benchmarks.experiments import EXPERIMENTS, experiment_of
from benchmarks.vision.cli import evaluate_cmd, score_group
from subind.io import read_jsonl, require_writable
from subind.runtime import dist_env


@click.group()
def main() -> None:
    """Reproduce the paper's figures and tables."""


main.add_command(evaluate_cmd)
main.add_command(score_group)
main.add_command(summary_cmd)


def _fields_table(exp: Experiment) -> str:
    """Every config field of ``exp`` (what `--set FIELD=VALUE` takes) with its value in each
    preset."""
    import dataclasses

    presets = [exp.default_preset] + [p for p in exp.presets if p != exp.default_preset]
    cfgs = [exp.preset(p) for p in presets]
    lines = [f"{exp.name}: config fields (--set FIELD=VALUE) and their value in each preset",
             "", "| field | " + " | ".join(presets) + " |", "|---|" + "---|" * len(presets)]  # fmt: skip
    for f in dataclasses.fields(exp.config_class):
        values = [getattr(c, f.name) for c in cfgs]
        cells = [",".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in values]
        lines.append(f"| {f.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@main.command("ls")
@click.argument("experiment", required=False)
def ls_cmd(experiment: str | None) -> None:
    """List experiments and their presets, transfer conditions and vision strategies; with
    EXPERIMENT, every field of its config with its value in each preset."""
    from benchmarks.vision.strategies import STRATEGIES
    from subind.conditions import CONDITIONS

    if experiment is not None:
        if experiment not in EXPERIMENTS:
            raise click.UsageError(EXPERIMENTS.unknown_message(experiment))
        click.echo(_fields_table(EXPERIMENTS.get(experiment)))
        return

    click.echo("experiments (presets; the first is the default):")
    for name in EXPERIMENTS:
        exp = EXPERIMENTS.get(name)
        presets = [exp.default_preset] + [p for p in exp.presets if p != exp.default_preset]
        click.echo(f"  {name:8s} {exp.doc} [{', '.join(presets)}]")
    click.echo("conditions (fig3, fig8-10):")
    for name in CONDITIONS:
        click.echo(f"  {name:28s} {CONDITIONS.doc(name)}")
    click.echo("strategies (table1):")
    for name in STRATEGIES:
        click.echo(f"  {name:28s} {STRATEGIES.doc(name)}")


def _run_command(exp: Experiment) -> click.Command:
    """`subind-bench run NAME`: the options every experiment has, then the experiment's own."""
    presets = ", ".join([exp.default_preset] + [p for p in exp.presets if p != exp.default_preset])
    params: list[click.Parameter] = [
        click.Option(["--preset"], default=None, help=f"{presets} (default {exp.default_preset})"),
        click.Option(["--out"], type=click.Path(path_type=Path), default=None,
                     help=f"output directory (default runs/{exp.name}-PRESET)"),
    ]  # fmt: skip
    params += [o.click_option() for o in exp.options]
    params += [
        click.Option(["--set", "sets"], multiple=True, metavar="FIELD=VALUE",
                     help=f"any field of the config (`subind-bench ls {exp.name}` lists them)"),
        click.Option(["--plan"], is_flag=True, default=False,
                     help="check the inputs and print what the run would do; train nothing"),
        click.Option(["--start-over"], is_flag=True, default=False,
                     help="move what --out holds to <out>.previous-<time> first (nothing is "
                          "deleted), e.g. to rerun a folder with another config"),
        click.Option(["--progress/--no-progress"], default=True,
                     help="progress bars on stderr (default: on)"),
    ]  # fmt: skip
    by_name = {o.flag.split("/")[0].lstrip("-").replace("-", "_"): o for o in exp.options}

    def callback(preset: str | None, out: Path | None, sets: tuple[str, ...], plan: bool,
                 start_over: bool, progress: bool, **given: Any) -> None:  # fmt: skip
        try:
            overrides = {}
            for k, v in given.items():
                if v is None:
                    continue
                option = by_name[k]
                try:
                    overrides[option.field] = v if option.parse is None else option.parse(v)
                except ConfigError as e:
                    raise ConfigError(f"{option.flag.split('/')[0]}: {e}") from None
            cfg = exp.resolve(preset, overrides, sets)
            exp.check(cfg)
        except ConfigError as e:
            raise click.UsageError(str(e)) from None
        preset = preset or exp.default_preset
        out = out or Path("runs") / f"{exp.name}-{preset}"
        start = time.perf_counter()
        try:
            if plan:
                text, inputs_ok = exp.plan(cfg, out, preset)
                click.echo(text)
                if not inputs_ok:
                    sys.exit(1)  # a dry run that found a bad input fails, as the run would
                return
            if dist_env()[0] == 0:  # under torchrun, rank 0 speaks for the folder
                if start_over:
                    moved = harness.start_over(out)
                    if moved is not None:
                        click.echo(f"--start-over: moved the old {out} to {moved}")
                require_writable(out)
                problem = harness.folder_problem(out, exp.name, cfg, exp.free_fields)
                if problem:  # the run claims the folder once its inputs are checked
                    raise harness.FolderTakenError(problem)
            outcome = exp.run(cfg, out, preset, progress)
        except exp.errors as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        if outcome is None:
            return  # a rank other than 0: rank 0 reports
        click.echo(outcome.text)
        click.echo(f"{outcome.runs} runs; wall time {time.perf_counter() - start:.0f} s; "
                   f"outputs in {out}/ ({exp.outputs})")  # fmt: skip

    return click.Command(exp.name, params=params, callback=callback, help=exp.doc,
                         short_help=exp.doc)  # fmt: skip


class _Experiments(click.Group):
    """`subind-bench run`'s subcommands: one per registered experiment, with "did you mean"."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return EXPERIMENTS.names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return _run_command(EXPERIMENTS.get(name)) if name in EXPERIMENTS else None

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and not args[0].startswith("-") and args[0] not in EXPERIMENTS:
            raise click.UsageError(EXPERIMENTS.unknown_message(args[0]))
        return super().resolve_command(ctx, args)


@main.group("run", cls=_Experiments)
def run_group() -> None:
    """Run EXPERIMENT (see `subind-bench ls`), reusing whatever its output folder holds;
    `subind-bench run EXPERIMENT --help` lists its options."""


@main.command("report")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report_cmd(out: Path) -> None:
    """Rewrite OUT's tables and plots from its results.jsonl (fig3: table.md, fig3.png,
    subnetworks.md; fig8-10: one folder per triple and summary.md; table1: table1.md/.csv,
    table2.md, per_class.md, fig5.png)."""
    records = read_jsonl(out / "results.jsonl")
    if not records:
        raise click.UsageError(
            f"{out}/results.jsonl holds no results: run `subind-bench run` first"
        )
    try:
        exp = experiment_of(out)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    try:
        click.echo(exp.report(out, records))
    except exp.errors as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
