"""The experiment machinery every benchmark shares: stage cache keys, precondition errors, the
run plan executed with resume and rank slicing, and the merge of per-rank results.

An experiment is a frozen config dataclass, a list of runs (each with a stable ``key``), and a
function that turns one run into a results record. ``execute`` skips runs whose key is already in
``results.jsonl``, gives each ``torchrun`` rank its slice of the rest, appends records as they
finish (so an interrupted experiment resumes where it stopped) and merges the ranks' files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from subind.io import append_jsonl, read_jsonl

R = TypeVar("R")


class StageError(RuntimeError):
    """A precondition failed; every later number would be meaningless."""


def config_digest(cfg: Any, *names: str) -> str:
    """A short hash of the named fields of a config dataclass (all when none): a stage's cache
    key, so that editing a setting re-runs only the stages that depend on it."""
    d = dataclasses.asdict(cfg)
    chosen = {k: d[k] for k in (names or d)}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:10]


def dist_info(backend: str | None = None) -> tuple[int, int]:
    """(rank, world size) under torchrun, joining a process group (gloo unless ``backend``);
    (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend or "gloo")
    return dist.get_rank(), world


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def pending(runs: Sequence[R], key: Callable[[R], str], results_path: Path) -> list[R]:
    """The runs whose key is not yet in ``results_path``, in plan order."""
    done = {r["key"] for r in read_jsonl(results_path)}
    return [r for r in runs if key(r) not in done]


def execute(
    runs: Sequence[R],
    key: Callable[[R], str],
    out: Path,
    run_units: Callable[[list[list[R]]], Iterable[dict[str, Any]]],
    *,
    plan_units: Callable[[list[R]], list[list[R]]] | None = None,
    rank: int = 0,
    world: int = 1,
    stamp: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    desc: str = "runs",
    slice_runs: bool = True,
) -> None:
    """Run every pending run of ``runs`` and append its record to ``out/results.jsonl``.

    The pending runs are cut into units by ``plan_units`` (default: one run each; e.g. groups
    trained together) and ``run_units(units)`` yields one record per run, in any order (one at a
    time, from a process pool, from a batched trainer). Units are planned over every pending run
    before they are dealt out, so the same units (and numbers) come out whatever the world size.

    With ``world > 1`` and ``slice_runs`` each rank takes every world-th unit and writes
    ``results.rank{r}.jsonl`` (a resumed rank skips what it already wrote); rank 0 merges them
    after a barrier. With ``slice_runs=False`` every rank runs every unit together (e.g. DDP
    inside each run) and rank 0 alone writes the records. ``stamp(record)`` adds provenance
    before a record is written.
    """
    results_path = out / "results.jsonl"
    units = (plan_units or (lambda todo: [[r] for r in todo]))(pending(runs, key, results_path))
    sliced = world > 1 and slice_runs
    my_path = out / f"results.rank{rank}.jsonl" if sliced else results_path
    if sliced:
        done_here = {r["key"] for r in read_jsonl(my_path)}
        units = [[r for r in u if key(r) not in done_here] for u in units[rank::world]]
        units = [u for u in units if u]
    writer = rank == 0 or sliced
    bar = tqdm(
        total=sum(map(len, units)), desc=f"{desc} (rank {rank})", disable=not (progress and writer)
    )
    for rec in run_units(units):
        if stamp is not None:
            stamp(rec)
        if writer:
            append_jsonl(my_path, rec)
        bar.update(1)
    bar.close()
    barrier(world)
    if sliced and rank == 0:
        merge_rank_results(out)
    barrier(world)


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
