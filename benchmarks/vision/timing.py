"""Where a table1 run's time goes: each stage (the world, pretraining, adaptation, each discovery,
Figure 11's control, each run's training and evaluation) timed where it computes and appended
to ``out/timings/rank{R}.jsonl``, one line per stage:

    {"stage": "discovery", "model": "resnet18-mini", "label": "0", "seconds": 41.2, "rank": 0,
     "start": 1796300000.1, "end": 1796300041.3}

A stage found in the cache takes near nothing and is recorded as such; each invocation starts
its rank's file afresh, so the files describe the last invocation. ``stage_seconds`` sums them
per stage (``benchmarks.speed.vision_stages`` prints them beside the one-run-at-a-time path).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# The stages in the order a run meets them (the order of stage_seconds' keys).
STAGES = ("world", "pretrain", "adaptation", "discovery", "control", "train", "evaluate")


def _path(out: Path, rank: int) -> Path:
    return out / "timings" / f"rank{rank}.jsonl"


def start_timings(out: Path, rank: int) -> None:
    """Start this rank's timings file afresh (a run's first step on each rank)."""
    _path(out, rank).unlink(missing_ok=True)


@contextlib.contextmanager
def timed(out: Path, rank: int, stage: str, model: str = "", label: str = "") -> Iterator[None]:
    """Time the block and append its line (also when it raises: time spent is time spent)."""
    assert stage in STAGES, f"unknown stage {stage!r}; add it to STAGES"
    start, wall_start = time.perf_counter(), time.time()
    try:
        yield
    finally:
        line = {"stage": stage, "model": model, "label": label,
                "seconds": round(time.perf_counter() - start, 3), "rank": rank,
                "start": round(wall_start, 3), "end": round(time.time(), 3)}  # fmt: skip
        path = _path(out, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:  # one short line per stage: appends stay whole
            f.write(json.dumps(line) + "\n")


def timed_job(
    job: Callable[[bool], T], out: Path, rank: int, stage: str, model: str, label: str = ""
) -> Callable[[bool], T]:
    """``job`` (a stage dealt to the ranks: ``job(progress)``) timed as ``stage``."""

    def run(progress: bool) -> T:
        with timed(out, rank, stage, model, label):
            return job(progress)

    return run


def read_timings(out: Path) -> list[dict[str, Any]]:
    """Every rank's lines."""
    lines = []
    for path in sorted((out / "timings").glob("rank*.jsonl")):
        lines += [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    return lines


def stage_seconds(out: Path) -> dict[str, float]:
    """Seconds per stage, summed over models, labels and ranks (compute time, not wall time:
    two ranks computing side by side count twice), in ``STAGES`` order."""
    lines = read_timings(out)
    return {s: sum(t["seconds"] for t in lines if t["stage"] == s) for s in STAGES}


# The phases of a run, each a set of stages that no other phase's stages overlap in time: the
# strategies' runs train and evaluate one after another on each rank.
PHASES = {"world": ("world",), "pretrain": ("pretrain",), "adaptation": ("adaptation",),
          "discovery": ("discovery",), "control": ("control",), "runs": ("train", "evaluate")}  # fmt: skip


def phase_spans(out: Path) -> dict[str, float]:
    """Wall seconds of each phase (``PHASES``): its first start to its last end over all ranks,
    0 for a phase with no lines. Ranks computing side by side count once."""
    lines = read_timings(out)
    spans = {}
    for phase, stages in PHASES.items():
        mine = [t for t in lines if t["stage"] in stages]
        spans[phase] = max(t["end"] for t in mine) - min(t["start"] for t in mine) if mine else 0.0
    return spans
