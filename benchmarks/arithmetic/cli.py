"""``subind-bench summary``: subtask induction minus the count-matched controls across the
output folders of arithmetic runs (fig3, fig8, fig9, fig10)."""

from __future__ import annotations

from pathlib import Path

import click

from benchmarks.arithmetic.triples import summary_md, summary_rows
from subind.io import read_jsonl, write_json_atomic, write_text_atomic


@click.command("summary")
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
