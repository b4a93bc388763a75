"""The machinery every experiment shares: precondition errors, the resolved config saved with
the outputs, stages that rank 0 computes and caches for the others, and the run plan executed
with resume, rank slicing and the merge of per-rank results.

Ranks wait for each other through files in the output folder (:class:`Sync`), not through
collectives: a rank that waits while another trains an hours-long stage must not reach the
process group's timeout. Under ``torchrun`` on several machines the output folder must be on a
file system they share (as the merge of the ranks' results needs anyway).

An experiment is a frozen config dataclass, a list of runs (each with a stable ``key``), and a
function that turns runs into results records. ``execute`` skips runs whose key is already in
``results.jsonl``, gives each ``torchrun`` rank its slice of the rest, appends records as they
finish (so an interrupted experiment resumes where it stopped) and merges the ranks' files.
Stage caches are folders named by :func:`subind.provenance.config_digest` of the settings
the stage depends on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from subind.io import append_jsonl, read_jsonl, write_json_atomic
from subind.provenance import provenance, record_stamp

R = TypeVar("R")
T = TypeVar("T")

CONFIG_FILE = "config.json"
CLAIM_FILE = "folder.json"  # which experiment and config this output folder holds


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


class FolderTakenError(StageError):
    """An output folder holds another experiment's or config's results (one-line message)."""


def _claim(experiment: str, cfg: Any, free: tuple[str, ...]) -> dict[str, Any]:
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in free}
    return json.loads(json.dumps({"experiment": experiment, "config": config}, default=str))


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else repr(value)


def folder_problem(out: Path, experiment: str, cfg: Any, free: tuple[str, ...] = ()) -> str | None:
    """Why ``out`` cannot take this experiment and config (see :func:`claim_folder`), or None."""
    path = Path(out) / CLAIM_FILE
    if not path.is_file():
        return None
    theirs, mine = json.loads(path.read_text()), _claim(experiment, cfg, free)
    if theirs == mine:
        return None
    fix = f"use another --out, or --start-over to move it to {Path(out)}.previous-* first"
    if theirs.get("experiment") != experiment:
        return f"{out} holds {theirs.get('experiment')} results, not {experiment}'s; {fix}"
    a, b = theirs.get("config", {}), mine["config"]
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    shown = "; ".join(f"{k} {_show(a.get(k))} there, {_show(b.get(k))} here" for k in diff[:3])
    more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
    return f"{out} holds the results of another {experiment} config: {shown}{more}; {fix}"


def claim_folder(out: Path, experiment: str, cfg: Any, free: tuple[str, ...] = ()) -> None:
    """Make ``out`` this config's folder, or check that it is: one output folder holds one
    experiment and config, so a rerun resumes and never mixes results. ``free``: the fields that
    may differ between runs into one folder (which runs, seeds, devices: each record's key holds
    what it depends on). FolderTakenError (one line, naming the fields that differ and the ways
    on) when ``out`` holds another; the folder is left as it was."""
    problem = folder_problem(out, experiment, cfg, free)
    if problem:
        raise FolderTakenError(problem)
    path = Path(out) / CLAIM_FILE
    if not path.is_file():
        write_json_atomic(path, _claim(experiment, cfg, free))


def start_over(out: Path) -> Path | None:
    """Move ``out`` aside to ``<out>.previous-<time>`` (nothing is deleted); return where it went
    (None when there was nothing to move)."""
    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = out.with_name(f"{out.name}.previous-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = out.with_name(f"{out.name}.previous-{stamp}-{n}")
    out.rename(target)
    return target


class Sync:
    """Every rank of one launch waits at named points until all ranks have reached them; each
    rank marks its arrival with a file under ``out/.sync/<launch>/`` and polls for the others'.

    Unlike a barrier, the wait has no timeout of the process group: only ``max_wait_s``, long
    enough for any stage. All ranks must pass the same points in the same order (points are
    numbered). A single process never waits."""

    POLL_S = 0.5

    def __init__(self, folder: Path, rank: int, world: int, max_wait_s: float = 7 * 86400):
        self.folder, self.rank, self.world, self.max_wait_s = folder, rank, world, max_wait_s
        self._points = 0

    @classmethod
    def start(cls, out: Path, rank: int, world: int, **kw: Any) -> Sync:
        """A Sync for this launch (one collective at start-up, while every rank is starting:
        rank 0's launch id is broadcast); rank 0 removes what earlier launches left."""
        token = uuid.uuid4().hex
        if world > 1:
            import torch.distributed as dist

            box = [token]
            dist.broadcast_object_list(box, 0)
            token = box[0]
            if rank == 0 and (out / ".sync").is_dir():
                for old in (out / ".sync").iterdir():
                    if old.name != token:  # another rank may already wait in this launch's
                        shutil.rmtree(old, ignore_errors=True)
        return cls(out / ".sync" / token, rank, world, **kw)

    def wait(self, name: str) -> None:
        """Mark this rank's arrival at the next point (``name`` says which, for people reading
        the folder) and return once every rank has arrived there."""
        if self.world <= 1:
            return
        self._points += 1
        point = f"{self._points:04d}-{name}"
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{point}.rank{self.rank}").touch()
        start = time.monotonic()
        while not all((self.folder / f"{point}.rank{r}").exists() for r in range(self.world)):
            if time.monotonic() - start > self.max_wait_s:
                raise StageError(f"waited {self.max_wait_s:.0f} s at {point} for the other "
                                 f"ranks ({self.folder}); did a rank stop?")  # fmt: skip
            time.sleep(self.POLL_S)

    def claim(self, job: str) -> bool:
        """Whether this rank takes ``job`` before the next :meth:`wait`: the first rank to ask
        does (an exclusive create of ``claims/<point>-<job>`` in this launch's folder, atomic on
        a local or NFS file system), so jobs go to whichever rank comes free first. Job names
        must be unique between two waits; a single process takes every job."""
        if self.world <= 1:
            return True
        folder = self.folder / "claims"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(
                folder / f"{self._points + 1:04d}-{job}", os.O_CREAT | os.O_EXCL | os.O_WRONLY
            )
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(f"rank{self.rank}\n")
        return True


SINGLE = Sync(Path("."), 0, 1)  # a single process: nobody to wait for


def rank0_first(sync: Sync, stage: Callable[[bool], T], progress: bool, name: str = "stage") -> T:
    """``stage(progress)`` on rank 0, which computes and caches its outputs; then, once rank 0
    is done, on every other rank, which finds them cached (its progress bars off)."""
    result = stage(progress) if sync.rank == 0 else None
    sync.wait(name)
    if sync.rank != 0:
        result = stage(False)
    return result  # type: ignore[return-value]


def deal(sync: Sync, jobs: Sequence[Callable[[bool], Any]], progress: bool, name: str) -> None:
    """Cached stage jobs dealt to ranks as they come free: each rank takes the next job in
    order that no rank has claimed (:meth:`Sync.claim`; each job computes and caches its
    output, or finds it cached); returns once every job is done on every rank, so that any rank
    can then load any job's output. A single process runs them all in order."""
    for i, job in enumerate(jobs):
        if sync.claim(f"{name}-{i}"):
            job(progress)
    sync.wait(name)


def pending(runs: Sequence[R], key: Callable[[R], str], results_path: Path, *more: Path) -> list[R]:
    """The runs whose key is not yet in ``results_path`` (or in ``more`` files), in plan
    order."""
    done = {r["key"] for path in (results_path, *more) for r in read_jsonl(path)}
    return [r for r in runs if key(r) not in done]


def _claimed_units(sync: Sync, units: list[list[R]]) -> Iterator[list[R]]:
    """The units this rank claims, lazily: each is claimed as the rank comes free for it."""
    return (u for i, u in enumerate(units) if sync.claim(f"unit-{i}"))


def _records_written(out: Path) -> int:
    """How many records the ranks' files hold (every rank's progress, for rank 0's bar)."""
    return sum(len(read_jsonl(p)) for p in out.glob("results.rank*.jsonl"))


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
    sync: Sync = SINGLE,
    progress: bool = True,
    desc: str = "runs",
    slice_runs: bool = True,
    postfix: Callable[[dict[str, Any]], str] | None = None,
    claimed: bool = False,
    cost: Callable[[list[R]], float] | None = None,
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
    what it already wrote); rank 0 merges them once every rank is done. With
    ``slice_runs=False`` every rank runs every unit together (e.g. DDP inside each run) and
    rank 0 alone writes.

    With ``claimed`` (and slicing) the units are not dealt in advance: each rank claims the
    next unclaimed one when it comes free (:meth:`Sync.claim`), the costliest first when
    ``cost(unit)`` is given, so that ranks finish together however the units' lengths differ;
    ``run_units`` must then take its units lazily (as :func:`one_at_a_time` does). A resumed
    launch skips the runs any rank's file holds.
    """
    rank, world = sync.rank, sync.world
    results_path = out / "results.jsonl"
    sliced = world > 1 and slice_runs
    claimed = claimed and sliced
    leftovers = sorted(out.glob("results.rank*.jsonl")) if claimed else []
    todo = pending(runs, key, results_path, *leftovers)
    units = (plan_units or (lambda todo: [[r] for r in todo]))(todo)
    before = _records_written(out) if claimed else 0  # read before any rank writes
    sync.wait("planned")  # every rank planned before any rank writes
    my_path = out / f"results.rank{rank}.jsonl" if sliced else results_path
    if claimed:
        if cost is not None:
            units = sorted(units, key=cost, reverse=True)  # stable: plan order among equals
        mine: Iterable[list[R]] = _claimed_units(sync, units)
        total = sum(map(len, units))  # every rank's runs, which the bar counts
    else:
        mine = _my_units(units, key, my_path, rank, world) if sliced else units
        total = sum(map(len, mine))
    writer = rank == 0 or sliced
    stamp = {"config_digest": config_digest, "provenance": record_stamp()}
    bar = tqdm(total=total, desc=f"{desc} (rank {rank})", disable=not (progress and writer))
    for rec in run_units(mine):  # type: ignore[arg-type]  # claimed: a lazy iterable
        rec.update(stamp)
        if writer:
            append_jsonl(my_path, rec)
        if claimed:
            bar.n = _records_written(out) - before
            bar.refresh()
        else:
            bar.update(1)
        if postfix is not None:
            bar.set_postfix_str(postfix(rec))
    bar.close()
    sync.wait("ran")
    if sliced and rank == 0:
        merge_rank_results(out)
    sync.wait("merged")
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
