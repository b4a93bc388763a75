import threading
import time
from dataclasses import dataclass

import pytest

from benchmarks.harness import (
    SINGLE,
    StageError,
    Sync,
    deal,
    execute,
    merge_rank_results,
    one_at_a_time,
    pending,
    planned_records,
    rank0_first,
)
from subind.io import append_jsonl, read_jsonl
from subind.provenance import config_digest


@dataclass(frozen=True)
class _Cfg:
    a: int = 1
    b: str = "x"


def test_config_digest_depends_only_on_named_fields():
    assert config_digest(_Cfg(), "a") == config_digest(_Cfg(b="y"), "a")
    assert config_digest(_Cfg(), "a") != config_digest(_Cfg(a=2), "a")
    assert config_digest(_Cfg()) != config_digest(_Cfg(b="y"))


def _run(n: int) -> dict:
    return {"key": f"k{n}", "value": n * n}


def test_execute_skips_finished_runs_and_resumes(tmp_path):
    calls = []

    def run_one(n):
        calls.append(n)
        if n == 3 and len(calls) == 3:
            raise RuntimeError("interrupted")
        return _run(n)

    with pytest.raises(RuntimeError):
        execute([1, 2, 3, 4], lambda n: f"k{n}", tmp_path, one_at_a_time(run_one),
                config_digest="d1", progress=False)  # fmt: skip
    assert [r["key"] for r in read_jsonl(tmp_path / "results.jsonl")] == ["k1", "k2"]
    assert pending([1, 2, 3, 4], lambda n: f"k{n}", tmp_path / "results.jsonl") == [3, 4]
    recs = execute([1, 2, 3, 4], lambda n: f"k{n}", tmp_path, one_at_a_time(run_one),
                   config_digest="d2", progress=False)  # fmt: skip
    assert recs == read_jsonl(tmp_path / "results.jsonl")
    assert [r["key"] for r in recs] == ["k1", "k2", "k3", "k4"]
    assert calls == [1, 2, 3, 3, 4]  # finished runs were not repeated
    assert [r["config_digest"] for r in recs] == ["d1", "d1", "d2", "d2"]
    assert all(r["provenance"]["git_commit"] and r["provenance"]["versions"] for r in recs)
    assert [r["key"] for r in planned_records(tmp_path, ["k4", "k1"])] == ["k1", "k4"]


def _ranks(tmp_path, world, body):
    """Run ``body(sync)`` for each rank of a ``world`` in threads sharing ``tmp_path``."""
    syncs = [Sync(tmp_path / "sync", r, world) for r in range(world)]
    results, errors = {}, []

    def run(sync):
        try:
            results[sync.rank] = body(sync)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in syncs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and not any(t.is_alive() for t in threads), errors
    return results


def test_rank0_first_computes_on_rank_0_before_the_others_read(tmp_path):
    events = []

    def stage(progress):
        if progress:  # rank 0: a stage that takes a while
            time.sleep(0.3)
        events.append("computed" if progress else "loaded")
        return len(events)

    out = _ranks(tmp_path, 3, lambda sync: rank0_first(sync, stage, sync.rank == 0))
    assert events[0] == "computed" and sorted(events[1:]) == ["loaded", "loaded"]
    assert out[0] == 1 and sorted(out.values()) == [1, 2, 3]
    assert rank0_first(SINGLE, stage, True) == 4  # one process: no wait


def test_sync_waits_without_a_timeout_of_its_own_and_deal_splits_jobs(tmp_path):
    done = []

    def job(i):
        return lambda progress: (time.sleep(0.05 * i), done.append(i))

    def body(sync):
        deal(sync, [job(i) for i in range(5)], False, "jobs")
        return sorted(done)  # every job finished when any rank returns

    out = _ranks(tmp_path, 2, body)
    assert out[0] == out[1] == [0, 1, 2, 3, 4]
    assert sorted(done) == [0, 1, 2, 3, 4]  # each job ran once, on one rank
    marks = sorted(p.name for p in (tmp_path / "sync").iterdir() if p.is_file())
    assert marks == ["0001-jobs.rank0", "0001-jobs.rank1"]
    claims = sorted(p.name for p in (tmp_path / "sync" / "claims").iterdir())
    assert claims == [f"0001-jobs-{i}" for i in range(5)]
    slow = Sync(tmp_path / "lonely", 0, 2, max_wait_s=0.2)  # rank 1 never comes
    with pytest.raises(StageError, match="for the other ranks"):
        slow.wait("nobody")


def test_rank_slices_cover_every_run_once_and_merge(tmp_path):
    # the files two ranks leave (execute under torchrun is tested end to end in test_fig3)
    runs = list(range(7))
    for rank in (0, 1):
        for n in runs[rank::2]:
            append_jsonl(tmp_path / f"results.rank{rank}.jsonl", _run(n))
    append_jsonl(tmp_path / "results.jsonl", _run(0))  # already merged earlier
    assert merge_rank_results(tmp_path) == 6
    assert sorted(r["key"] for r in read_jsonl(tmp_path / "results.jsonl")) == sorted(
        f"k{n}" for n in runs
    )
    assert not list(tmp_path.glob("results.rank*.jsonl"))


def test_units_are_planned_over_pending_runs_and_may_come_back_in_any_order(tmp_path):
    append_jsonl(tmp_path / "results.jsonl", _run(2))
    seen = []

    def run_units(units):
        seen.extend(units)
        return (_run(n) for u in reversed(units) for n in u)

    execute([1, 2, 3, 4, 5], lambda n: f"k{n}", tmp_path, run_units, config_digest="d",
            progress=False,
            plan_units=lambda todo: [todo[i : i + 2] for i in range(0, len(todo), 2)])  # fmt: skip
    assert seen == [[1, 3], [4, 5]]
    assert [r["key"] for r in read_jsonl(tmp_path / "results.jsonl")] == [
        "k2",
        "k4",
        "k5",
        "k1",
        "k3",
    ]


def test_a_claim_goes_to_the_first_rank_that_asks_once_per_point(tmp_path):
    a, b = Sync(tmp_path, 0, 2), Sync(tmp_path, 1, 2)
    assert a.claim("job") and not b.claim("job") and not a.claim("job")
    assert b.claim("other")
    assert (tmp_path / "claims" / "0001-job").read_text() == "rank0\n"
    assert SINGLE.claim("job") and SINGLE.claim("job")  # one process takes every job


def test_claimed_units_go_to_the_rank_that_comes_free_the_costliest_first(tmp_path):
    # run 0 lasts until the five short runs are done (or 10 s): dealt every other run, the rank
    # holding it would also hold two short ones, which then never all finish; claimed, the
    # other rank runs all five
    cost = {0: 10.0, 1: 0.01, 2: 0.01, 3: 0.01, 4: 0.01, 5: 0.01}
    ran: dict[int, list[int]] = {0: [], 1: []}
    started: list[int] = []
    shorts_done = threading.Event()

    def body(sync):
        def run_one(n):
            started.append(n)
            ran[sync.rank].append(n)
            if n == 0:
                shorts_done.wait(timeout=10)
            elif len(started) == 6:
                shorts_done.set()
            return _run(n)

        return execute(list(reversed(range(6))), lambda n: f"k{n}", tmp_path,
                       one_at_a_time(run_one), config_digest="d", sync=sync, progress=False,
                       claimed=True, cost=lambda unit: cost[unit[0]])  # fmt: skip

    out = _ranks(tmp_path, 2, body)
    assert started[0] == 0  # the costliest first, though planned last
    assert sorted(map(len, ran.values())) == [1, 5]
    assert sorted(ran[0] + ran[1]) == list(range(6))  # every run once
    assert sorted(r["key"] for r in out[0]) == [f"k{n}" for n in range(6)] and out[0] == out[1]
    assert not list(tmp_path.glob("results.rank*.jsonl"))  # merged


def test_a_resumed_claimed_launch_skips_what_any_rank_wrote(tmp_path):
    append_jsonl(tmp_path / "results.rank1.jsonl", _run(3))  # an interrupted launch's rank 1
    ran = []

    def body(sync):
        def run_one(n):
            ran.append(n)
            return _run(n)

        return execute([1, 2, 3, 4], lambda n: f"k{n}", tmp_path, one_at_a_time(run_one),
                       config_digest="d", sync=sync, progress=False, claimed=True)  # fmt: skip

    out = _ranks(tmp_path, 2, body)
    assert sorted(ran) == [1, 2, 4]
    assert sorted(r["key"] for r in out[0]) == ["k1", "k2", "k3", "k4"]
