from dataclasses import dataclass

import pytest

from benchmarks.harness import (
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


def test_rank0_first_computes_on_rank_0_before_the_others_read():
    calls = []

    def stage(progress):
        calls.append(progress)
        return len(calls)

    assert rank0_first(0, 1, stage, True) == 1 and calls == [True]
    assert rank0_first(1, 1, stage, True) == 2 and calls == [True, False]  # no progress bars


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
