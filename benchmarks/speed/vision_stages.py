"""Where a table1 run's time goes, and what the tensor images and the local workers save: the
same run (``subind-bench run table1 --preset P --set ...``) along each path, one after another in
this command, each stage's time from the run's ``timings/`` (benchmarks.vision.timing) and its
ratio to the one-run-at-a-time path.

Paths (each a fresh output folder; ``--paths`` picks them):
    one-at-a-time    workers=1, tensor_images=false: one process, every image read and
                     transformed one at a time (the path of c963519)
    tensors          workers=1, tensor_images=true: the world decoded once into tensors
                     (benchmarks.vision.tensors), augmented a batch at a time
    tensors+workers  workers=W, tensor_images=true: W local processes share the cores and
                     are dealt the discoveries and runs (benchmarks.vision.worker)
    stacked          workers=1, tensor_images=true, stack=strategies: the runs of one model
                     that share recipe and data trained together in one process
                     (subind.stacked)

The world and its pretraining are identical on every path: the first path builds them, the
others start from a copy (their rows say "shared"). Rows: each phase's wall seconds (first start
to last end over the ranks: world, pretrain, adaptation, discovery, control, runs), the runs'
training and evaluation compute seconds (summed over ranks), and the command's wall time after
the world and pretraining (start-up, input checks, reports included).

    python -m benchmarks.speed.vision_stages --preset tiny                       # seconds
    python -m benchmarks.speed.vision_stages --preset mini --set seeds=0 --json stages.json
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from benchmarks.speed.result import Field, Row, write_result
from benchmarks.vision.timing import PHASES, phase_spans, stage_seconds

PATHS = {
    "one-at-a-time": ("workers=1", "tensor_images=false"),
    "tensors": ("workers=1", "tensor_images=true"),
    "tensors+workers": ("workers={workers}", "tensor_images=true"),
    "stacked": ("workers=1", "tensor_images=true", "stack=strategies"),
}
SHARED = ("world", "pretrained")  # folders of out/ every path shares (built by the first)


def run_path(preset: str, sets: list[str], out: Path, threads: int) -> float:
    """Run table1 into ``out`` (a subprocess: a fresh process per path); its wall seconds.
    Raises click.ClickException with the run's last lines when it fails."""
    cmd = [sys.executable, "-m", "benchmarks.cli", "run", "table1", "--preset", preset,
           "--out", str(out), "--no-progress", "--set", "device=cpu"]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-8:])
        raise click.ClickException(f"table1 failed on {out.name} (exit {res.returncode}):\n{tail}")
    return seconds


def measure(preset: str, sets: list[str], paths: list[str], workers: int, root: Path,
            threads: int) -> dict[str, dict[str, float]]:  # fmt: skip
    """Each path's seconds: its phases' wall spans, train/evaluate compute, the whole run."""
    measured: dict[str, dict[str, float]] = {}
    first: Path | None = None
    for name in paths:
        out = root / name
        out.mkdir(parents=True)
        if first is not None:
            for d in SHARED:
                if (first / d).exists():
                    shutil.copytree(first / d, out / d)
        path_sets = [s.format(workers=workers) for s in PATHS[name]]
        wall = run_path(preset, sets + path_sets, out, threads)
        seconds = dict(phase_spans(out))
        compute = stage_seconds(out)
        seconds["train (compute)"] = compute["train"]
        seconds["evaluate (compute)"] = compute["evaluate"]
        # the command's wall time less the world and pretraining (shared: cached after the first)
        seconds["after pretraining (wall)"] = wall - seconds["world"] - seconds["pretrain"]
        measured[name] = seconds
        first = first or out
    return measured


@click.command()
@click.option("--preset", default="tiny", show_default=True, help="table1 preset (mini: minutes)")
@click.option("--set", "sets", multiple=True, help="config override for every path, KEY=VALUE")
@click.option("--paths", default=",".join(PATHS), show_default=True,
              help="comma-separated paths; the first is the baseline of the ratios")  # fmt: skip
@click.option("--workers", default=2, show_default=True, help="W of tensors+workers")
@click.option("--threads", default=2, show_default=True, help="CPU threads of the run")
@click.option("--keep", default=None, help="keep the runs' folders here (default: removed)")
@click.option("--json", "json_path", default=None, help="also write the results as JSON here")
def main(preset, sets, paths, workers, threads, keep, json_path) -> None:
    """Print each stage's seconds along each path and the ratio to the first path."""
    names = [p.strip() for p in paths.split(",") if p.strip()]
    unknown = [p for p in names if p not in PATHS]
    if unknown or not names:
        raise click.UsageError(f"--paths: unknown {unknown}; choose from {', '.join(PATHS)}")
    if keep is not None and Path(keep).exists():
        raise click.UsageError(f"--keep {keep} exists; give a new folder")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(keep) if keep is not None else Path(tmp)
        measured = measure(preset, list(sets), names, workers, root, threads)
    base = measured[names[0]]
    head = "| stage | " + " | ".join(f"{n} s" + ("" if i == 0 else " | ratio")
                                      for i, n in enumerate(names)) + " |"  # fmt: skip
    lines = [f"table1 --preset {preset} {' '.join('--set ' + s for s in sets)}".strip(),
             head, "|" + "---|" * (1 + 2 * len(names) - 1)]  # fmt: skip
    rows = []
    for stage in base:
        cells, fields = [], {}
        for i, n in enumerate(names):
            s = measured[n][stage]
            shared = i > 0 and stage in ("world", "pretrain")
            cells.append("shared" if shared else f"{s:.1f}")
            fields[f"{n}_s"] = Field(None if shared else s, "s")
            if i > 0:
                ratio = None if shared or s == 0 else base[stage] / s
                cells.append("-" if ratio is None else f"{ratio:.2f}x")
                fields[f"{n}_speedup"] = Field(ratio, "x")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        kind = "phase" if stage in PHASES else "compute" if "compute" in stage else "total"
        rows.append(Row(stage, kind, fields))
    lines.append(f"ratio: {names[0]} seconds / the path's seconds (above 1: faster)")
    click.echo("\n".join(lines))
    if json_path:
        config = {"preset": preset, "sets": list(sets), "paths": names, "workers": workers,
                  "threads": threads}  # fmt: skip
        write_result(json_path, "vision_stages", config, rows, lines)


if __name__ == "__main__":
    main()
