"""tools/gpu_check.sh and its table (tools/gpu_check_table.py), without a GPU: the collector on
hand-made JSON and results.jsonl of every step, the script's syntax and time budget, and its
plumbing with a stand-in Python."""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_check.sh"


def _collector():
    mod = load_script("tools/gpu_check_table.py")
    return mod


MEANPOOL = {
    "model_type": "vit_h",
    "fast": {
        "backend": "fast",
        "ms_per_image": 500.0,
        "encoder_ms": 300.0,
        "masks_per_image": 42.0,
    },
    "reference": {"backend": "reference", "ms_per_image": 5000.0, "encoder_ms": 400.0},
    "speedup_fast_over_reference": 10.0,
    "same_masks": True,
}
SWEEP = {
    "results": [
        {"layers": 2, "batched_runs_per_hour": 36000.0, "one_at_a_time_runs_per_hour": 1200.0},
        {
            "layers": 12,
            "batched_runs_per_hour": 9000.0,
            "one_at_a_time_runs_per_hour": 300.0,
            "ratio": 30.0,
        },
    ]
}
MASK = {
    "results": [
        {"layers": 2, "plain_ms": 6.0, "mask_ms": 7.2, "ratio": 1.2, "naive_ratio": 1.5},
        {"layers": 12, "plain_ms": 25.0, "mask_ms": 30.0, "ratio": 1.2, "naive_ratio": 1.4},
    ]
}


def _write(out: Path, step: str, data=None, rc: int = 0, log: str = "done") -> None:
    if data is not None:
        (out / f"{step}.json").write_text(json.dumps(data))
    (out / f"{step}.rc").write_text(f"{rc}\n")
    (out / f"{step}.log").write_text(log + "\n")


def test_table_from_hand_made_json_with_every_kind_of_failure(tmp_path):
    mod = _collector()
    (tmp_path / "env.json").write_text(
        json.dumps({"gpu": "NVIDIA H100", "torch": "2.9", "cuda": "12.8"})
    )
    _write(tmp_path, "meanpool_float32", MEANPOOL)
    _write(tmp_path, "meanpool_bfloat16", None, rc=124, log="image 3/5")
    _write(tmp_path, "sweep", SWEEP)
    (tmp_path / "mask_step.json").write_text("{not json")
    text = mod.table(tmp_path)
    assert "GPU: NVIDIA H100; torch 2.9; CUDA 12.8" in text
    assert (
        "fast 500 ms/img; reference 5000 ms/img; speed-up 10.00x; same partitions: True; "
        "fast encoder 300 ms/img; masks/img 42.0" in text
    )
    assert "failed: timed out (exit 124); last line: image 3/5" in text
    assert "L2: batched 36000 runs/h; one at a time 1200 runs/h; ratio 30.0x" in text  # derived
    assert "L12: batched 9000 runs/h; one at a time 300 runs/h; ratio 30.0x" in text
    assert "failed: unreadable mask_step.json" in text
    assert text.count("| ") >= 6
    _write(tmp_path, "mask_step", MASK)
    (tmp_path / "sweep.json").unlink()
    _write(tmp_path, "sweep", None, rc=1, log="Traceback...\nModuleNotFoundError: no sweep")
    text = mod.table(tmp_path)
    assert "L12: plain 25.00 ms; mask 30.00 ms; ratio 1.20x (uncached 1.40x)" in text
    assert "failed: exit 1: ModuleNotFoundError: no sweep" in text
    (tmp_path / "env.json").unlink()
    assert "environment: failed" in mod.table(tmp_path)


def test_sweep_rows_read_the_sweep_benchmarks_fields():
    data = {
        "device": "NVIDIA H100",
        "rows": [
            {"layers": 2, "group_size": 40, "batched_group_step_s": 0.01,
             "single_runs_per_hour": 100.0, "batched_runs_per_hour": 2500.0, "speedup": 25.0},
        ],
        "paper_grid_hours_batched": 0.75,
    }  # fmt: skip
    assert _collector().sweep_rows(data) == [
        "paper grid, batched, projected: 0.75 h on this GPU",
        "L2: batched 2500 runs/h; one at a time 100 runs/h; ratio 25.0x",
    ]


def test_unknown_json_shows_its_numbers_and_missing_steps_say_not_run(tmp_path):
    mod = _collector()
    _write(tmp_path, "sweep", {"results": [{"layers": 2, "throughput": 12.5}]})
    text = mod.table(tmp_path)
    assert "L2: unrecognised fields: layers=2, throughput=12.5" in text
    assert "failed: not run" in text
    assert mod.main([str(tmp_path)]) == 0 and (tmp_path / "table.md").read_text() == text
    assert mod.main([str(tmp_path / "missing")]) == 2


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 2 and "usage: tools/gpu_check.sh OUTDIR" in res.stderr


VISION = {
    "benchmark": "vision_step_speed",
    "mask_step_factor": 1.3,
    "mask_step_factor_assumed": True,
    "left_out": "data loading, evaluation",
    "results": [
        {"arch": "resnet18", "batch": 128, "dtype": "fp32", "roles": ["train"],
         "s_per_step": 0.05, "images_per_s": 2560.0},
        {"arch": "resnet18", "batch": 128, "dtype": "bf16", "roles": ["train"],
         "s_per_step": 0.025, "images_per_s": 5120.0},
        {"arch": "vit_b_16", "batch": 512, "dtype": "fp32", "roles": ["train"],
         "error": "out of GPU memory"},
    ],
    "projections": [
        {"variant": "paper", "dtype": "bf16", "gpus": 8, "hours_1gpu": 12.5,
         "hours_ddp": 3.25, "hours_runs_dealt": 4.0,
         "models": {"resnet18": {"train_hours": 2.0, "discovery_hours": 0.5},
                    "vit_b_16": {"train_hours": 9.0, "discovery_hours": 1.0}}},
        {"variant": "paper", "dtype": "fp32", "error": "no step time for vit_b_16 at batch 512"},
    ],
}  # fmt: skip


def _record(key: str, **metrics) -> dict:
    base = {
        "key": key,
        "original_accuracy": 0.5,
        "pooled_accuracy": 0.25,
        "cue_conflict": {"accuracy": 0.1, "robustness": 0.9, "shape_bias": 0.4},
        "curve": [{"step": 2, "original": 0.5, "pooled": 0.25}],
        "provenance": {"git_commit": None},
    }
    return base | metrics


def _write_run(out: Path, step: str, records, rc: int = 0, reported: int | None = None,
               config: dict | None = None) -> None:  # fmt: skip
    """OUT/STEP/results.jsonl (json.dumps writes NaN as NaN), config.json, STEP.rc, STEP.log."""
    (out / step).mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (out / step / "results.jsonl").write_text("".join(line + "\n" for line in lines))
    (out / step / "config.json").write_text(json.dumps({"config": config or {}}))
    n = len(records) if reported is None else reported
    _write(out, step, None, rc=rc, log=f"| table |\n\n{n} runs; wall time 12 s; outputs in x/")


def test_vision_step_rows_give_every_setting_projection_and_assumption():
    rows = _collector().vision_step_rows(VISION)
    assert rows == [
        "resnet18 batch 128 (train): fp32 50.0 ms/step, 2560 img/s; bf16 25.0 ms/step, 5120 img/s",
        "vit_b_16 batch 512 (train): fp32 out of GPU memory",
        "Table 1 projected (paper, bf16): 1 GPU 12.50 h (resnet18 2.50 h, vit_b_16 10.00 h; "
        "discovery 1.50 h of it); 8 GPUs: DDP 3.25 h, runs dealt 4.00 h",
        "Table 1 projected (paper, fp32): not projected: no step time for vit_b_16 at batch 512",
        "mask step = 1.30x a plain step (assumed); left out: data loading, evaluation",
    ]


def test_table_has_a_row_per_step_from_every_steps_output(tmp_path):
    mod = _collector()
    for step, data in (("meanpool_float32", MEANPOOL), ("meanpool_bfloat16", MEANPOOL),
                       ("sweep", SWEEP), ("mask_step", MASK), ("vision_step", VISION)):  # fmt: skip
        _write(tmp_path, step, data)
    table1 = [_record("r/si/inherit"), _record("r/scratch/reinit")]
    table1[1]["cue_conflict"]["shape_bias"] = None  # no shape or texture decision: defined
    _write_run(tmp_path, "table1_tiny", table1, config={"device": "cuda", "amp": "bf16"})
    fig3 = [{"key": f"L1/c{i}", "val_accuracy": 0.5, "test_accuracy": 0.25 * i,
             "trainer": "batched"} for i in range(3)]  # fmt: skip
    _write_run(tmp_path, "fig3_tiny", fig3, config={"device": "cuda", "batch_runs": 0})
    (tmp_path / "env.json").write_text(json.dumps({"gpu": "NVIDIA H200"}))
    text = mod.table(tmp_path)
    assert "failed" not in text
    assert [t for _, t in mod.STEPS if t not in text] == []  # every step has its title row
    assert (
        "| vision training step (s/step, images/s); Table 1 projected | resnet18 batch 128" in text
    )
    assert (
        "| subind-bench run table1 --preset tiny, cuda, amp bf16 | 2 records (the run reported "
        "2), every metric present and finite; device cuda; amp bf16; wall time 12 s; "
        "cue_conflict.shape_bias undefined in 1 |" in text
    )
    assert "original_accuracy 0.500-0.500; pooled_accuracy 0.250-0.250;" in text
    assert (
        "3 records (the run reported 3), every metric present and finite; device cuda; batch_runs 0"
        in text
    )
    assert "val_accuracy 0.500-0.500; test_accuracy 0.000-0.500" in text


def test_runs_with_nan_or_missing_metrics_fail_and_the_other_steps_are_reported(tmp_path):
    mod = _collector()
    _write(tmp_path, "mask_step", MASK)
    nan_curve = _record("r/scratch/reinit", curve=[{"step": 2, "original": float("nan")}])
    records = [_record("r/si/inherit"), nan_curve, _record("v/si/inherit", pooled_accuracy=None)]
    _write_run(tmp_path, "table1_tiny", records)
    assert '"original": NaN' in (tmp_path / "table1_tiny" / "results.jsonl").read_text()
    _write_run(tmp_path, "fig3_tiny", [{"key": "a", "val_accuracy": 0.5, "test_accuracy": 0.5,
                                        "trainer": "single"}], reported=2)  # fmt: skip
    text = mod.table(tmp_path)
    assert (
        "| subind-bench run table1 --preset tiny, cuda, amp bf16 | failed: 2 of 3 records have "
        "NaN or missing metrics: r/scratch/reinit: curve.0.original=nan; v/si/inherit: "
        "pooled_accuracy missing |" in text
    )
    assert "|  | 3 records (the run reported 3); wall time 12 s |" in text
    assert "failed: results.jsonl has 1 records, the run reported 2" in text
    assert (
        "failed: 1 of 1 records have NaN or missing metrics: a: trainer='single', expected 'batched'"
        in text
    )
    assert "L12: plain 25.00 ms; mask 30.00 ms" in text  # the others still reported


def test_failed_runs_show_the_reason_then_what_they_wrote(tmp_path):
    mod = _collector()
    _write_run(tmp_path, "table1_tiny", [_record("r/si/inherit")], rc=124)
    _write(tmp_path, "vision_step", VISION, rc=137, log="| resnet18 | 128 |")
    _write(tmp_path, "fig3_tiny", None, rc=0, log="error: no CUDA")
    rows = mod.step_rows(tmp_path, "table1_tiny")
    assert (
        rows[0] == "failed: timed out (exit 124); last line: 1 runs; wall time 12 s; outputs in x/"
    )
    assert rows[1].startswith("1 records (the run reported 1), every metric present and finite")
    rows = mod.step_rows(tmp_path, "vision_step")
    assert rows[0] == "failed: timed out (exit 137); last line: | resnet18 | 128 |"
    assert rows[1].startswith("resnet18 batch 128 (train)")
    assert mod.step_rows(tmp_path, "fig3_tiny") == [
        "failed: exit 0 but no fig3_tiny/results.jsonl written; last line: error: no CUDA"
    ]
    assert mod.step_rows(tmp_path, "sweep") == ["failed: not run"]
    _write_run(tmp_path, "fig3_tiny", ['{"key": "a"}', "{broken"])
    assert mod.step_rows(tmp_path, "fig3_tiny")[0].startswith(
        "failed: unreadable fig3_tiny/results.jsonl: ValueError: line 2:"
    )
    _write_run(tmp_path, "fig3_tiny", [], reported=0)
    assert mod.step_rows(tmp_path, "fig3_tiny")[0] == "failed: results.jsonl has no records"
    assert "last line: / resnet18 / 128 / |" in mod.table(tmp_path)  # no stray table cells


def test_record_problems_checks_required_optional_and_expected_fields():
    mod = _collector()
    check = mod.RunCheck(("a", "b.c"), optional=("d",), expect=(("trainer", "batched"),))
    ok = {
        "a": 1.0,
        "b": {"c": 0},
        "d": None,
        "trainer": "batched",
        "provenance": {"x": float("nan")},
    }
    assert mod.record_problems(ok, check) == []  # provenance is not checked
    bad = {"a": float("inf"), "b": None, "d": float("nan"), "trainer": "single"}
    assert mod.record_problems(bad, check) == [
        "b.c missing", "a=inf", "d=nan", "trainer='single', expected 'batched'"
    ]  # fmt: skip


def _limits() -> tuple[dict[str, int], dict[str, int]]:
    """(LIMIT table, the scalar settings BUDGET_S, KILL_AFTER_S, STARTUP_S) of the script."""
    text = SCRIPT.read_text()
    block = re.search(r"declare -A LIMIT=\((.*?)\n\)", text, re.S).group(1)
    limits = {k: int(v) for k, v in re.findall(r"\[(\w+)\]=(\d+)", block)}
    scalars = {k: int(v) for k, v in re.findall(r"^(BUDGET_S|KILL_AFTER_S|STARTUP_S)=(\d+)",
                                                text, re.M)}  # fmt: skip
    return limits, scalars


def test_limits_sum_to_the_stated_ten_minute_budget():
    limits, s = _limits()
    assert s["BUDGET_S"] == 600 and "within 10 minutes on one H200" in SCRIPT.read_text()
    worst = sum(limits.values()) + len(limits) * s["KILL_AFTER_S"] + s["STARTUP_S"]
    assert worst == s["BUDGET_S"]
    assert (
        f"({sum(limits.values())} + {len(limits)} x {s['KILL_AFTER_S']} + {s['STARTUP_S']} = 600 s"
        in SCRIPT.read_text()
    )
    steps = {name for name, _ in _collector().STEPS}
    assert set(limits) == steps | {"env", "table"}  # a limit for every step, and no other
    assert all(v > 0 for v in limits.values())


MASK_JSON = json.dumps(MASK)
VISION_JSON = json.dumps(VISION)
FIG3_RECORD = json.dumps({"key": "L1/a", "val_accuracy": 0.5, "test_accuracy": 0.5,
                          "trainer": "batched"})  # fmt: skip


@pytest.fixture
def stand_in_python(tmp_path):
    """A 'python' that runs the environment probe and the table for real and dispatches the
    steps on their module: benchmarks.speed.mask_step and .vision_step write canned JSON,
    `benchmarks.cli run fig3` writes a results.jsonl into its --out and prints the run's summary
    line, `benchmarks.cli run table1` and the other benchmarks fail, like a box where only
    those work."""
    fake = tmp_path / "python"
    fake.write_text(
        f"""#!/usr/bin/env bash
arg() {{ while [ $# -gt 1 ]; do [ "$1" = "$FLAG" ] && {{ echo "$2"; return; }}; shift; done; }}
case "$1 $2" in
  "- "*|"tools/gpu_check_table.py "*) exec {sys.executable} "$@" ;;
  "-m benchmarks.speed.mask_step") echo '{MASK_JSON}' > "$(FLAG=--json arg "$@")" ;;
  "-m benchmarks.speed.vision_step") echo '{VISION_JSON}' > "$(FLAG=--json arg "$@")" ;;
  "-m benchmarks.cli")
    if [ "$3 $4" = "run fig3" ]; then
      out=$(FLAG=--out arg "$@"); mkdir -p "$out"
      echo '{FIG3_RECORD}' > "$out/results.jsonl"; echo "1 runs; wall time 3 s; outputs in $out/"
    else
      echo "RuntimeError: no CUDA on $2 $3 $4" >&2; exit 3
    fi ;;
  *) echo "RuntimeError: no CUDA on $2" >&2; exit 3 ;;
esac
"""
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake


def test_script_runs_every_step_and_prints_one_table(tmp_path, stand_in_python):
    out = tmp_path / "out"
    (out / "table1_tiny").mkdir(parents=True)  # an earlier check's outputs must not show
    (out / "table1_tiny" / "results.jsonl").write_text(FIG3_RECORD + "\n")
    (out / "sweep.json").write_text(json.dumps(SWEEP))
    env = dict(os.environ, GPU_CHECK_PYTHON=str(stand_in_python))
    res = subprocess.run(
        ["bash", str(SCRIPT), str(out)], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "torch " in res.stdout and "GPU:" in res.stdout  # versions printed
    limits, _ = _limits()
    assert {p.stem for p in out.glob("*.rc")} == set(limits) - {"env", "table"}
    assert "--load realistic --dtype bfloat16 --n-images 3 --warmup 1" in res.stdout
    assert "== vision_step (limit 105s): " in res.stdout
    assert "run table1 --preset tiny --device cuda --set amp=bf16" in res.stdout
    assert "run fig3 --preset tiny --device cuda --batch-runs 0" in res.stdout
    assert "budget 600s" in res.stdout
    table = (out / "table.md").read_text()
    assert table in res.stdout
    assert table.count("failed: exit 3: RuntimeError: no CUDA on benchmarks.speed.") == 3
    assert "failed: exit 3: RuntimeError: no CUDA on benchmarks.cli run table1" in table
    assert not (out / "table1_tiny").exists() and not (out / "sweep.json").exists()
    assert "L2: plain 6.00 ms; mask 7.20 ms; ratio 1.20x" in table
    assert "Table 1 projected (paper, bf16): 1 GPU 12.50 h" in table
    assert (
        "| 1 records (the run reported 1), every metric present and finite; wall time 3 s |"
        in table
    )
