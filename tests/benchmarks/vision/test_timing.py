import json

import pytest

from benchmarks.vision.timing import (
    STAGES,
    phase_spans,
    read_timings,
    stage_seconds,
    start_timings,
    timed,
    timed_job,
)


def _write(out, rank, lines):
    path = out / "timings" / f"rank{rank}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def _line(stage, start, end, rank=0, model="m"):
    return {"stage": stage, "model": model, "label": "", "seconds": end - start, "rank": rank,
            "start": start, "end": end}  # fmt: skip


def test_timed_appends_one_line_per_block_even_when_it_raises(tmp_path):
    with timed(tmp_path, 1, "discovery", "resnet", "0"):
        pass
    with pytest.raises(ValueError), timed(tmp_path, 1, "train", "resnet", "scratch"):
        raise ValueError("boom")
    lines = read_timings(tmp_path)
    assert [(t["stage"], t["model"], t["label"], t["rank"]) for t in lines] == [
        ("discovery", "resnet", "0", 1),
        ("train", "resnet", "scratch", 1),
    ]
    assert all(t["seconds"] >= 0 and t["end"] >= t["start"] for t in lines)
    start_timings(tmp_path, 1)  # a new invocation starts the rank's file afresh
    assert read_timings(tmp_path) == []


def test_timed_job_passes_progress_and_result_through(tmp_path):
    job = timed_job(lambda p: ("ran", p), tmp_path, 0, "adaptation", "vit")
    assert job(True) == ("ran", True)
    assert [t["stage"] for t in read_timings(tmp_path)] == ["adaptation"]


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(AssertionError, match="unknown stage"), timed(tmp_path, 0, "lunch"):
        pass


def test_stage_seconds_sum_over_ranks_and_phase_spans_count_overlap_once(tmp_path):
    _write(tmp_path, 0, [_line("discovery", 0, 10), _line("train", 20, 30),
                         _line("evaluate", 30, 32)])  # fmt: skip
    _write(tmp_path, 1, [_line("discovery", 2, 14, rank=1), _line("train", 20, 35, rank=1)])
    seconds = stage_seconds(tmp_path)
    assert list(seconds) == list(STAGES)
    assert seconds["discovery"] == 22 and seconds["train"] == 25 and seconds["evaluate"] == 2
    spans = phase_spans(tmp_path)
    assert spans["discovery"] == 14  # 0 .. 14: two ranks side by side count once
    assert spans["runs"] == 15  # train and evaluate together: 20 .. 35
    assert spans["world"] == 0 and spans["control"] == 0
