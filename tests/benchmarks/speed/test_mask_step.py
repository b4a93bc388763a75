import torch
from click.testing import CliRunner

from benchmarks.speed.mask_step import main, measure, table
from benchmarks.speed.result import read_result
from tests.scripts import load_script


def test_measure_times_every_step_kind_and_reports_ratios():
    r = measure(1, torch.device("cpu"), steps=1, rounds=2, warmup=1, batch_size=4)
    assert r["layers"] == 1 and len(r["plain_ms_all"]) == len(r["mask_ms_all"]) == 2
    assert r["plain_ms"] > 0 and r["mask_ms"] > 0 and r["mask_naive_ms"] > 0
    assert r["ratio"] == r["mask_ms"] / r["plain_ms"]
    assert r["naive_ratio"] == r["mask_naive_ms"] / r["plain_ms"]
    assert table([r]).splitlines()[1].split()[0] == "1"


def test_cli_prints_the_table_and_writes_json(tmp_path):
    path = tmp_path / "m.json"
    args = ["--layers", "1", "--steps", "1", "--rounds", "1", "--threads", "1", "--json", str(path)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "mask/plain" in res.output
    result = read_result(path, "mask_step")  # the one shape: every number with its unit
    (row,) = result.rows_of("depth")
    assert row.name == "1 layers" and row.value("layers") == 1
    assert row.value("ratio") == row.value("mask_ms") / row.value("plain_ms")
    assert row.fields["plain_ms"].unit == "ms/step" and row.fields["ratio"].unit == "x"
    assert len(row.value("plain_ms_all")) == 1 and row.fields["plain_ms_all"].unit == "ms/step"
    assert result.config["steps"] == 1 and result.provenance["versions"]["torch"]
    assert list(result.summary) == res.output.strip().splitlines()
    (row,) = load_script("tools/gpu_check_table.py").mask_step_rows(result)  # the GPU check's
    assert row.startswith("1 layers: plain ") and "?" not in row
    res = CliRunner().invoke(main, ["--layers", "two"])
    assert res.exit_code == 2 and "comma-separated integers" in res.output
