from dataclasses import dataclass

import pytest

from benchmarks.harness import config_digest, execute, merge_rank_results, pending, planned_records
from subind.io import append_jsonl, read_jsonl


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
        execute([1, 2, 3, 4], lambda n: f"k{n}", run_one, tmp_path, progress=False)
    assert [r["key"] for r in read_jsonl(tmp_path / "results.jsonl")] == ["k1", "k2"]
    assert pending([1, 2, 3, 4], lambda n: f"k{n}", tmp_path / "results.jsonl") == [3, 4]
    execute([1, 2, 3, 4], lambda n: f"k{n}", run_one, tmp_path, progress=False,
            stamp=lambda r: r.update(stamped=True))  # fmt: skip
    recs = read_jsonl(tmp_path / "results.jsonl")
    assert [r["key"] for r in recs] == ["k1", "k2", "k3", "k4"]
    assert calls == [1, 2, 3, 3, 4]  # finished runs were not repeated
    assert [r.get("stamped") for r in recs] == [None, None, True, True]
    assert [r["key"] for r in planned_records(tmp_path, ["k4", "k1"])] == ["k1", "k4"]


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


def test_results_iter_replaces_the_loop(tmp_path):
    execute([1, 2], lambda n: f"k{n}", None, tmp_path, progress=False,
            results_iter=lambda todo: (_run(n) for n in reversed(todo)))  # fmt: skip
    assert [r["key"] for r in read_jsonl(tmp_path / "results.jsonl")] == ["k2", "k1"]
