import json

from click.testing import CliRunner

from benchmarks.speed import sweep


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
    data = json.loads(out.read_text())
    assert [r["layers"] for r in data["rows"]] == [2, 12]
    for row in data["rows"]:
        assert row["group_size"] == 3
        assert row["single_runs_per_hour"] > 0 and row["batched_runs_per_hour"] > 0
        assert row["speedup"] == row["single_s_per_run_epoch"] / row["batched_s_per_run_epoch"]
    assert data["paper_grid_hours_batched"] > 0
    assert "paper grid (4,080 runs), batched, projected:" in res.output


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
