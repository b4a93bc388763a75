"""tools/gpu_check.sh and its table (tools/gpu_check_table.py), without a GPU: the collector on
hand-made JSON and results.jsonl of every step, the script's syntax and time budget, and its
plumbing with a stand-in Python."""

import copy
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.speed.result import Field, Result, Row, parse_result, to_json
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_check.sh"


def _collector():
    mod = load_script("tools/gpu_check_table.py")
    return mod


def _result(benchmark: str, *rows: Row) -> dict:
    """A benchmark's JSON in the one shape (benchmarks/speed/result.py)."""
    return to_json(Result(benchmark, {"device": "cuda"}, rows))


MEANPOOL = _result(
    "pooling",
    Row("fast", "path", {"ms_per_image": Field(500.0, "ms/image"),
                         "encoder_ms": Field(300.0, "ms/image"),
                         "masks_per_image": Field(42.0, "masks/image")}),
    Row("reference", "path", {"ms_per_image": Field(5000.0, "ms/image"),
                              "encoder_ms": Field(400.0, "ms/image")}),
    Row("fast vs reference", "comparison", {"speedup": Field(10.0, "x"),
                                            "same_masks": Field(True)}),
)  # fmt: skip


def _depth(layers: int, **fields: tuple) -> Row:
    return Row(f"{layers} layers", "depth", {k: Field(*v) for k, v in fields.items()})


SWEEP = _result(
    "sweep",
    _depth(2, batched_runs_per_hour=(36000.0, "runs/h"), single_runs_per_hour=(1200.0, "runs/h"),
           speedup=(30.0, "x")),
    _depth(12, batched_runs_per_hour=(9000.0, "runs/h"), single_runs_per_hour=(300.0, "runs/h"),
           speedup=(30.0, "x")),
    Row("paper grid, batched", "projection", {"hours": Field(0.75, "h")}),
)  # fmt: skip
MASK = _result(
    "mask_step",
    _depth(2, plain_ms=(6.0, "ms/step"), mask_ms=(7.2, "ms/step"), ratio=(1.2, "x"),
           naive_ratio=(1.5, "x")),
    _depth(12, plain_ms=(25.0, "ms/step"), mask_ms=(30.0, "ms/step"), ratio=(1.2, "x"),
           naive_ratio=(1.4, "x")),
)  # fmt: skip

LOADER = _result(
    "loader",
    Row("pil", "path", {"cores": Field(1, "cores"), "images_per_s": Field(250.0, "images/s"),
                        "images_per_s_per_core": Field(250.0, "images/s")}),
    Row("device-cuda", "path", {"cores": Field(1, "cores"),
                                "images_per_s": Field(9000.0, "images/s"),
                                "images_per_s_per_core": Field(9000.0, "images/s")}),
    Row("projection", "projection", {"cores_per_gpu": Field(16, "cores"),
                                     "images_per_s_per_gpu": Field(4000.0, "images/s")}),
)  # fmt: skip

STACKED = _result(
    "stacked_step",
    Row("resnet18-mini x3", "setting", {"arch": Field("resnet18-mini"), "runs": Field(3, "runs"),
                                        "batch": Field(64, "images"),
                                        "single_ms": Field(30.0, "ms/step"),
                                        "stacked_ms": Field(12.0, "ms/step"),
                                        "ratio": Field(2.5, "x"),
                                        "max_weight_diff": Field(2e-7, "abs")}),
)  # fmt: skip


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
        "fast 500 ms/image; reference 5000 ms/image; speed-up 10.00x; same partitions: True; "
        "fast encoder 300 ms/image; 42.0 masks/image" in text
    )
    assert "failed: timed out (exit 124); last line: image 3/5" in text
    assert "| paper grid, batched, projected: 0.75 h on this GPU |" in text
    assert "2 layers: batched 36000 runs/h; one at a time 1200 runs/h; ratio 30.0x" in text
    assert "12 layers: batched 9000 runs/h; one at a time 300 runs/h; ratio 30.0x" in text
    assert "failed: unreadable mask_step.json" in text
    assert text.count("| ") >= 6
    _write(tmp_path, "mask_step", MASK)
    (tmp_path / "sweep.json").unlink()
    _write(tmp_path, "sweep", None, rc=1, log="Traceback...\nModuleNotFoundError: no sweep")
    text = mod.table(tmp_path)
    assert (
        "12 layers: plain 25.00 ms/step; mask 30.00 ms/step; ratio 1.20x (uncached 1.40x)" in text
    )
    assert "failed: exit 1: ModuleNotFoundError: no sweep" in text
    (tmp_path / "env.json").unlink()
    assert "environment: failed" in mod.table(tmp_path)


def test_a_one_path_meanpool_shows_what_it_did_not_measure_as_unknown():
    one_path = _result(
        "pooling", Row("reference", "path", {"ms_per_image": Field(900.0, "ms/image")})
    )
    rows = _collector().meanpool_rows(parse_result(one_path))
    assert rows == ["fast ?; reference 900 ms/image; speed-up ?; same partitions: ?"]


def test_output_of_the_wrong_shape_or_benchmark_fails_and_missing_steps_say_not_run(tmp_path):
    mod = _collector()
    _write(tmp_path, "sweep", {"results": [{"layers": 2, "throughput": 12.5}]})  # an old shape
    _write(tmp_path, "mask_step", SWEEP)
    no_unit = copy.deepcopy(MASK)
    no_unit["rows"][1]["fields"]["ratio"]["unit"] = ""
    _write(tmp_path, "meanpool_float32", no_unit | {"benchmark": "pooling"})
    assert mod.step_rows(tmp_path, "sweep") == [
        "failed: unreadable sweep.json: ValueError: not a speed benchmark result: expected the "
        "keys ('benchmark', 'schema', 'config', 'rows', 'summary', 'provenance'), got ['results']"
    ]
    assert mod.step_rows(tmp_path, "mask_step") == [
        "failed: unreadable mask_step.json: ValueError: benchmark 'sweep', expected 'mask_step'"
    ]
    assert mod.step_rows(tmp_path, "meanpool_float32") == [
        "failed: unreadable meanpool_float32.json: ValueError: rows[1].fields.ratio: the number "
        "1.2 has no unit"
    ]
    text = mod.table(tmp_path)
    assert "failed: not run" in text
    assert mod.main([str(tmp_path)]) == 0 and (tmp_path / "table.md").read_text() == text
    assert mod.main([str(tmp_path / "missing")]) == 2


def test_the_table_comes_out_when_torch_does_not_import(tmp_path):
    _write(tmp_path, "mask_step", MASK)
    code = (
        "import runpy, sys; sys.modules['torch'] = None\n"  # import torch now raises ImportError
        f"sys.argv = ['gpu_check_table.py', {str(tmp_path)!r}]\n"
        f"runpy.run_path({str(ROOT / 'tools' / 'gpu_check_table.py')!r}, run_name='__main__')"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script finds the repo
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "2 layers: plain 6.00 ms/step; mask 7.20 ms/step" in res.stdout


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 2 and "usage: tools/gpu_check.sh OUTDIR" in res.stderr


def _setting(arch: str, batch: int, dtype: str, **fields: Field) -> Row:
    ident = {"arch": Field(arch), "batch": Field(batch, "images"), "dtype": Field(dtype)}
    return Row(
        f"{arch} batch {batch} {dtype}", "setting", ident | {"roles": Field("train")} | fields
    )


def _projection(dtype: str, **fields: Field) -> Row:
    ident = {"variant": Field("paper"), "dtype": Field(dtype)}
    return Row(f"Table 1 projection (paper, {dtype})", "projection", ident | fields)


def _model_hours(dtype: str, model: str, hours: float) -> Row:
    fields = {"variant": Field("paper"), "dtype": Field(dtype), "model": Field(model),
              "hours": Field(hours, "h"), "train_steps": Field(1000, "steps")}  # fmt: skip
    return Row(f"Table 1 projection (paper, {dtype}) {model}", "projection_model", fields)


VISION = _result(
    "vision_step",
    _setting("resnet18", 128, "fp32", s_per_step=Field(0.05, "s/step"),
             images_per_s=Field(2560.0, "images/s")),
    _setting("resnet18", 128, "bf16", s_per_step=Field(0.025, "s/step"),
             images_per_s=Field(5120.0, "images/s")),
    _setting("vit_b_16", 512, "fp32", error=Field("out of GPU memory")),
    _projection("bf16", gpus=Field(8, "GPUs"), mask_step_factor=Field(1.3, "x"),
                hours_1gpu=Field(12.5, "h"), hours_ddp=Field(3.25, "h"),
                hours_runs_dealt=Field(4.0, "h"), discovery_hours=Field(1.5, "h"),
                left_out=Field("data loading, evaluation")),
    _model_hours("bf16", "resnet18", 2.5),
    _model_hours("bf16", "vit_b_16", 10.0),
    _projection("fp32", error=Field("no step time for vit_b_16 at batch 512")),
)  # fmt: skip


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
    rows = _collector().vision_step_rows(parse_result(VISION))
    assert rows == [
        "resnet18 batch 128 (train): fp32 0.0500 s/step, 2560 images/s; bf16 0.0250 s/step, "
        "5120 images/s",
        "vit_b_16 batch 512 (train): fp32 out of GPU memory",
        "Table 1 projected (paper, bf16): 1 GPU 12.50 h (resnet18 2.50 h, vit_b_16 10.00 h; "
        "discovery 1.50 h of it); 8 GPUs: DDP 3.25 h, runs dealt 4.00 h",
        "Table 1 projected (paper, fp32): not projected: no step time for vit_b_16 at batch 512",
        "mask step = 1.30x a plain step (assumed); left out: data loading, evaluation",
    ]


def test_table_has_a_row_per_step_from_every_steps_output(tmp_path):
    mod = _collector()
    for step, data in (("meanpool_float32", MEANPOOL), ("meanpool_bfloat16", MEANPOOL),
                       ("sweep", SWEEP), ("mask_step", MASK), ("loader", LOADER),
                       ("vision_step", VISION), ("stacked_step", STACKED)):  # fmt: skip
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
    assert "pil: 250.00 images/s on 1.00 cores; 250.00 images/s per core" in text
    assert "one GPU's loader (16.00 cores, PIL): 4000.00 images/s" in text
    assert (
        "| Table 1's runs trained stacked vs one at a time (mini models) | resnet18-mini, 3 runs "
        "at batch 64 images: one at a time 30.0 ms/step, stacked 12.0 ms/step; ratio 2.50x; "
        "weights differ by 2.0e-07 abs |" in text
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
    assert "12 layers: plain 25.00 ms/step; mask 30.00 ms/step" in text  # the others reported


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
    assert f"== vision_step (limit {limits['vision_step']}s): " in res.stdout
    assert (
        "--loader-json" in res.stdout and f"== loader (limit {limits['loader']}s): " in res.stdout
    )
    assert "run table1 --preset tiny --device cuda --set amp=bf16" in res.stdout
    assert "run fig3 --preset tiny --device cuda --batch-runs 0" in res.stdout
    assert "budget 600s" in res.stdout
    table = (out / "table.md").read_text()
    assert table in res.stdout
    assert table.count("failed: exit 3: RuntimeError: no CUDA on benchmarks.speed.") == 5
    assert "--runs 3,8 --batch 64" in res.stdout
    assert "failed: exit 3: RuntimeError: no CUDA on benchmarks.cli run table1" in table
    assert not (out / "table1_tiny").exists() and not (out / "sweep.json").exists()
    assert "2 layers: plain 6.00 ms/step; mask 7.20 ms/step; ratio 1.20x" in table
    assert "Table 1 projected (paper, bf16): 1 GPU 12.50 h" in table
    assert (
        "| 1 records (the run reported 1), every metric present and finite; wall time 3 s |"
        in table
    )
