"""tools/gpu_check.sh and its table (tools/gpu_check_table.py), without a GPU: the collector on
hand-made JSON, the script's syntax, and its plumbing with a stand-in Python."""

import json
import os
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


@pytest.fixture
def stand_in_python(tmp_path):
    """A 'python' that runs the environment probe and the table for real, writes canned JSON
    for benchmarks.speed.mask_step and fails the other benchmarks, like a box where only that
    works."""
    fake = tmp_path / "python"
    fake.write_text(
        f"""#!/usr/bin/env bash
case "$1 $2" in
  "- "*|"tools/gpu_check_table.py "*) exec {sys.executable} "$@" ;;
  "-m benchmarks.speed.mask_step")
    while [ $# -gt 0 ]; do [ "$1" = --json ] && echo '{json.dumps(MASK)}' > "$2"; shift; done ;;
  *) echo "RuntimeError: no CUDA on $2" >&2; exit 3 ;;
esac
"""
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake


def test_script_runs_every_step_and_prints_one_table(tmp_path, stand_in_python):
    out = tmp_path / "out"
    env = dict(os.environ, GPU_CHECK_PYTHON=str(stand_in_python))
    res = subprocess.run(
        ["bash", str(SCRIPT), str(out)], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "torch " in res.stdout and "GPU:" in res.stdout  # versions printed
    for step in ("meanpool_float32", "meanpool_bfloat16", "sweep", "mask_step"):
        assert (out / f"{step}.rc").exists(), step
    assert "--load realistic --dtype bfloat16 --n-images 4 --warmup 1" in res.stdout
    table = (out / "table.md").read_text()
    assert table in res.stdout
    assert table.count("failed: exit 3: RuntimeError: no CUDA on benchmarks.speed.") == 3
    assert "L2: plain 6.00 ms; mask 7.20 ms; ratio 1.20x" in table
