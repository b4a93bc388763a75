from click.testing import CliRunner

from benchmarks.speed import stacked_step
from benchmarks.speed.result import read_result


def test_stacked_step_times_both_paths_and_writes_the_one_shape(tmp_path):
    out = tmp_path / "stacked.json"
    args = ["--archs", "resnet18-mini,vit_b_16-mini", "--runs", "2", "--batch", "4", "--steps",
            "2", "--warmup", "1", "--json", str(out)]  # fmt: skip
    res = CliRunner().invoke(stacked_step.main, args)
    assert res.exit_code == 0, res.output
    result = read_result(out, "stacked_step")
    rows = {r.name: r for r in result.rows_of("setting")}
    assert set(rows) == {"resnet18-mini x2", "vit_b_16-mini x2"}
    for r in rows.values():
        single, stacked = r.value("single_ms"), r.value("stacked_ms")
        assert single > 0 and stacked > 0 and r.value("ratio") == single / stacked
        assert r.value("runs") == 2 and r.value("batch") == 4
        assert 0 <= r.value("max_weight_diff") < 1e-3  # the same training, up to rounding
    assert "| resnet18-mini | 2 | 4 |" in res.output and result.config["runs"] == [2]


def test_stacked_step_refuses_bad_options_before_timing():
    res = CliRunner().invoke(stacked_step.main, ["--runs", "0"])
    assert res.exit_code == 2 and "--runs" in res.output
    res = CliRunner().invoke(stacked_step.main, ["--archs", "resnet19"])
    assert res.exit_code != 0 and "resnet19" in str(res.exception or res.output)
