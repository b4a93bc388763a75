"""`subind-bench run table1` and `subind-bench report` for its outputs (kept apart from cli.py so
that fig3's commands do not import the vision stack)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from benchmarks.cli import check_names, resolve_config
from benchmarks.harness import StageError
from benchmarks.strategies import STRATEGIES
from benchmarks.table1_config import Table1Config
from subind.io import read_jsonl


def _title(cfg: Table1Config, preset: str) -> str:
    where = "synthetic shape/texture world" if cfg.world else "16-class ImageNet"
    return f"Table 1: training strategies on {where} (preset {preset})"


def run_table1_cmd(
    preset: str, out: Path | None, overrides: dict[str, Any], sets: tuple[str, ...], progress: bool
) -> None:
    from meanpool.imagenet import ImageNetError
    from subind.vision.models import ARCHS, WeightsError

    cfg = resolve_config(preset, overrides, sets, "table1")
    check_names(cfg.strategies, STRATEGIES, cfg.unmasked)
    check_names(cfg.models, ARCHS, ())
    if cfg.distributed not in ("ddp", "slice"):
        raise click.UsageError(f"distributed takes ddp or slice, got {cfg.distributed!r}")
    out = out or Path("runs") / f"table1-{preset}"
    from benchmarks.table1 import run_table1
    from benchmarks.table1_report import table1_md, table2_md, table2_rows, write_reports

    start = time.perf_counter()
    try:
        result = run_table1(cfg, out, progress=progress)
    except (StageError, WeightsError, ImageNetError, FileNotFoundError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if result["rank"] != 0:
        return  # under torchrun, rank 0 writes the reports
    records, table2 = result["records"], table2_rows(result["stages"])
    write_reports(records, out, _title(cfg, preset), table2)
    click.echo(table1_md(records, _title(cfg, preset)))
    click.echo(table2_md(table2))
    click.echo(
        f"{len(records)} runs; wall time {time.perf_counter() - start:.0f} s; outputs in {out}/ "
        "(table1.md, table1.csv, table2.md, per_class.md, fig5.png, responses/)"
    )


def report_table1(out: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite OUT's table1/table2/per-class tables and fig5.png from its saved results."""
    from benchmarks.table1_report import table1_md, write_reports

    table2_path = out / "table2.json"
    table2 = json.loads(table2_path.read_text()) if table2_path.exists() else None
    config = json.loads((out / "config.json").read_text())["config"]
    title = "Table 1" + (" (synthetic world)" if config.get("world") else "")
    write_reports(records, out, title, table2)
    click.echo(table1_md(records, title))


def table1_records(out: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(out / "results.jsonl") if r.get("experiment") == "table1"]
