"""The machinery every experiment shares: precondition errors, the resolved config saved with
the outputs, stages that rank 0 computes and caches for the others, and the run plan executed
with resume, rank slicing and the merge of per-rank results.

An experiment is a frozen config dataclass, a list of runs (each with a stable ``key``), and a
function that turns runs into results records. ``execute`` skips runs whose key is already in
``results.jsonl``, gives each ``torchrun`` rank its slice of the rest, appends records as they
finish (so an interrupted experiment resumes where it stopped) and merges the ranks' files.
Stage caches are folders named by :func:`subind.provenance.config_digest` of the settings
the stage depends on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from subind.io import append_jsonl, read_jsonl, write_json_atomic
from subind.provenance import provenance, record_stamp
from subind.runtime import barrier

R = TypeVar("R")
T = TypeVar("T")

CONFIG_FILE = "config.json"


class StageError(RuntimeError):
    """A precondition failed; every later number would be meaningless."""


def write_config(out: Path, experiment: str, preset: str | None, cfg: Any) -> None:
    """``out/config.json``: which experiment and preset, the resolved config, provenance."""
    write_json_atomic(
        out / CONFIG_FILE,
        {
            "experiment": experiment,
            "preset": preset,
            "config": dataclasses.asdict(cfg),
            "provenance": provenance(),
        },
    )


def rank0_first(rank: int, world: int, stage: Callable[[bool], T], progress: bool) -> T:
    """``stage(progress)`` on rank 0, which computes and caches its outputs; then, after a
    barrier, on every other rank, which finds them cached (its progress bars off)."""
    result = stage(progress) if rank == 0 else None
    barrier(world)
    if rank != 0:
        result = stage(False)
    return result  # type: ignore[return-value]


def pending(runs: Sequence[R], key: Callable[[R], str], results_path: Path) -> list[R]:
    """The runs whose key is not yet in ``results_path``, in plan order."""
    done = {r["key"] for r in read_jsonl(results_path)}
    return [r for r in runs if key(r) not in done]


def _my_units(
    units: list[list[R]], key: Callable[[R], str], my_path: Path, rank: int, world: int
) -> list[list[R]]:
    """Rank ``rank``'s share of ``units`` (every world-th), without the runs it already wrote
    to its own file before an interruption."""
    done_here = {r["key"] for r in read_jsonl(my_path)}
    mine = [[r for r in u if key(r) not in done_here] for u in units[rank::world]]
    return [u for u in mine if u]


def execute(
    runs: Sequence[R],
    key: Callable[[R], str],
    out: Path,
    run_units: Callable[[list[list[R]]], Iterable[dict[str, Any]]],
    *,
    config_digest: str,
    plan_units: Callable[[list[R]], list[list[R]]] | None = None,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
    desc: str = "runs",
    slice_runs: bool = True,
    postfix: Callable[[dict[str, Any]], str] | None = None,
) -> list[dict[str, Any]]:
    """Run every pending run of ``runs``, append its record to ``out/results.jsonl`` and return
    the records of all of ``runs`` (finished earlier or now), in file order.

    The pending runs are cut into units by ``plan_units`` (default: one run each; e.g. groups
    trained together) and ``run_units(units)`` yields one record per run, in any order (one at a
    time, from a process pool, from a batched trainer). Units are planned over every pending run
    before they are dealt out, so the same units (and numbers) come out whatever the world size.

    Every record is stamped with ``config_digest`` (the settings its key depends on) and the
    commit and package versions that produced it. With ``world > 1`` and ``slice_runs`` each
    rank takes every world-th unit and writes ``results.rank{r}.jsonl`` (a resumed rank skips
    what it already wrote); rank 0 merges them after a barrier. With ``slice_runs=False`` every
    rank runs every unit together (e.g. DDP inside each run) and rank 0 alone writes.
    """
    results_path = out / "results.jsonl"
    units = (plan_units or (lambda todo: [[r] for r in todo]))(pending(runs, key, results_path))
    sliced = world > 1 and slice_runs
    my_path = out / f"results.rank{rank}.jsonl" if sliced else results_path
    if sliced:
        units = _my_units(units, key, my_path, rank, world)
    writer = rank == 0 or sliced
    stamp = {"config_digest": config_digest, "provenance": record_stamp()}
    bar = tqdm(
        total=sum(map(len, units)), desc=f"{desc} (rank {rank})", disable=not (progress and writer)
    )
    for rec in run_units(units):
        rec.update(stamp)
        if writer:
            append_jsonl(my_path, rec)
        bar.update(1)
        if postfix is not None:
            bar.set_postfix_str(postfix(rec))
    bar.close()
    barrier(world)
    if sliced and rank == 0:
        merge_rank_results(out)
    barrier(world)
    return planned_records(out, (key(r) for r in runs))


def one_at_a_time(run_one: Callable[[R], dict[str, Any]]) -> Callable[[list[list[R]]], Any]:
    """``run_units`` for runs trained one after the other."""
    return lambda units: (run_one(r) for u in units for r in u)


def merge_rank_results(out: Path) -> int:
    """Append the records of ``out/results.rank*.jsonl`` missing from ``out/results.jsonl``,
    then delete the rank files; return the number of records added."""
    results_path = out / "results.jsonl"
    added = 0
    for part in sorted(out.glob("results.rank*.jsonl")):
        have = {r["key"] for r in read_jsonl(results_path)}
        for rec in read_jsonl(part):
            if rec["key"] not in have:
                append_jsonl(results_path, rec)
                added += 1
        part.unlink()
    return added


def planned_records(out: Path, keys: Iterable[str]) -> list[dict[str, Any]]:
    """The records of ``out/results.jsonl`` that belong to the given run keys."""
    wanted = set(keys)
    return [r for r in read_jsonl(out / "results.jsonl") if r["key"] in wanted]
