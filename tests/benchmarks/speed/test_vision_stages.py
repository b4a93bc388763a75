import json

from click.testing import CliRunner

from benchmarks.speed.result import read_result
from benchmarks.speed.vision_stages import main
from benchmarks.vision.config import PRESETS
from benchmarks.vision.grid import plan_runs
from benchmarks.vision.timing import read_timings


def test_two_paths_print_every_stage_with_ratios_and_write_json(tmp_path):
    keep, out = tmp_path / "runs", tmp_path / "stages.json"
    res = CliRunner().invoke(main, ["--preset", "tiny", "--paths", "one-at-a-time,tensors",
                                    "--keep", str(keep), "--json", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    for stage in ("world", "pretrain", "adaptation", "discovery", "runs", "train (compute)",
                  "evaluate (compute)", "after pretraining (wall)"):  # fmt: skip
        assert f"| {stage} | " in res.output, stage
    assert "| world | " in res.output and "| shared | - |" in res.output
    # each path ran with its own settings, the second from the first's world and pretraining
    first = json.loads((keep / "one-at-a-time" / "config.json").read_text())
    second = json.loads((keep / "tensors" / "config.json").read_text())
    assert first["config"]["tensor_images"] is False and second["config"]["tensor_images"] is True
    assert '"pretrain"' in (keep / "one-at-a-time" / "timings" / "rank0.jsonl").read_text()
    assert '"pretrain"' not in (keep / "tensors" / "timings" / "rank0.jsonl").read_text()
    # the run timed each stage of each model, one train line per run of the grid
    lines, cfg = read_timings(keep / "one-at-a-time"), PRESETS.get("tiny")
    for stage in ("adaptation", "discovery", "train", "evaluate"):
        assert {t["model"] for t in lines if t["stage"] == stage} == set(cfg.models), stage
    assert [t["stage"] for t in lines if t["stage"] in ("world", "pretrain")] == [
        "world", *["pretrain"] * len(cfg.models)]  # fmt: skip
    trains = sorted((t["model"], t["label"]) for t in lines if t["stage"] == "train")
    assert trains == sorted((r.model, r.strategy) for r in plan_runs(cfg))
    result = read_result(out)
    assert result.benchmark == "vision_stages"
    runs = result.row("runs")
    assert runs.value("one-at-a-time_s") > 0 and runs.value("tensors_s") > 0
    assert runs.value("tensors_speedup") == runs.value("one-at-a-time_s") / runs.value("tensors_s")
    assert result.row("world").value("tensors_s") is None  # shared: not measured twice


def test_unknown_path_is_refused_before_any_run(tmp_path):
    res = CliRunner().invoke(main, ["--paths", "one-at-a-time,gpu", "--keep", str(tmp_path / "k")])
    assert res.exit_code == 2 and "unknown ['gpu']" in res.output
    assert not (tmp_path / "k").exists()


def test_the_stacked_path_trains_runs_together(tmp_path):
    keep = tmp_path / "runs"
    res = CliRunner().invoke(main, ["--preset", "tiny", "--paths", "tensors,stacked", "--set",
                                    "seeds=0,1", "--set", "models=resnet18-mini", "--set",
                                    "strategies=scratch", "--keep", str(keep)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "| runs | " in res.output
    config = json.loads((keep / "stacked" / "config.json").read_text())["config"]
    assert config["stack"] == "strategies" and config["workers"] == 1
    records = [json.loads(line) for line in (keep / "stacked" / "results.jsonl").open()]
    assert [r.get("stacked") for r in records] == [2, 2]
    plain = [json.loads(line) for line in (keep / "tensors" / "results.jsonl").open()]
    assert all("stacked" not in r for r in plain)
