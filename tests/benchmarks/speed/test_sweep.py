from click.testing import CliRunner

from benchmarks.speed import sweep
from benchmarks.speed.result import read_result
from tests.scripts import load_script


def _load():
    return sweep


def test_sweep_speed_prints_both_trainers_and_the_ratio(tmp_path, monkeypatch):
    module = _load()
    # a smaller slice than the paper's so the test takes seconds: 100 training rows, 50 val rows
    monkeypatch.setattr(module, "_rows", lambda n, vocab, gen, device: _small(n, vocab, gen))
    variants = module._variants(1)
    assert len(variants) == 8  # the five conditions of Figure 3, both unmasked modes
    monkeypatch.setattr(module, "_variants", lambda seeds: variants[:3])  # fewer, for speed
    out = tmp_path / "speed.json"
    args = ["--device", "cpu", "--layers", "2,12", "--seeds", "1", "--single-runs", "1",
            "--json", str(out)]  # fmt: skip
    res = CliRunner().invoke(module.main, args)
    assert res.exit_code == 0, res.output
    assert "| layers | group | one at a time (runs/h) | batched (runs/h) | ratio |" in res.output
    result = read_result(out, "sweep")  # the one shape: every number with its unit
    depths = result.rows_of("depth")
    assert [(r.name, r.value("layers")) for r in depths] == [("2 layers", 2), ("12 layers", 12)]
    for row in depths:
        assert row.value("group_size") == 3
        assert row.value("single_runs_per_hour") > 0 and row.value("batched_runs_per_hour") > 0
        ratio = row.value("single_s_per_run_epoch") / row.value("batched_s_per_run_epoch")
        assert row.value("speedup") == ratio and row.fields["speedup"].unit == "x"
        assert row.fields["batched_runs_per_hour"].unit == "runs/h"
    (grid,) = result.rows_of("projection")
    assert grid.value("hours") > 0 and grid.fields["hours"].unit == "h"
    assert "paper grid (4,080 runs), batched, projected:" in res.output
    assert (
        result.summary[-1].startswith("paper grid (4,080 runs)")
        and result.summary[-1] in res.output
    )
    assert result.config["layers"] == [2, 12] and result.config["seeds"] == 1
    rows = load_script("tools/gpu_check_table.py").sweep_rows(result)  # the GPU check's table
    assert len(rows) == 3 and rows[1].startswith("2 layers: batched ") and "?" not in str(rows)


def test_paper_grid_projection_is_linear_in_depth_and_sizes():
    module = _load()
    rows = [
        {"layers": L, "group_size": 40, "batched_group_step_s": 0.01,
         "batched_group_validation_s": 0.0}
        for L in (2, 12)
    ]  # fmt: skip
    from benchmarks.arithmetic.config import PAPER_SIZES

    steps = sum(-(-(1000 + n) // 50) for n in PAPER_SIZES)
    assert abs(module.project_paper_grid(rows) - 6 * 100 * steps * 0.01 / 3600) < 1e-9
    for r in rows:
        r["group_size"] = 8  # five groups per depth and size
    assert abs(module.project_paper_grid(rows) - 5 * 6 * 100 * steps * 0.01 / 3600) < 1e-9


def _small(n, vocab, gen):
    import torch

    rows = torch.randint(0, vocab - 1, (100 if n >= 1000 else 50, 4), generator=gen)
    rows[:, 2] = vocab - 1
    return rows
