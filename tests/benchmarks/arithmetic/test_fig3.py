import dataclasses
import json

import pytest
from click.testing import CliRunner

from benchmarks.arithmetic.config import PAPER_SIZES, PRESETS
from benchmarks.arithmetic.runs import plan_runs
from benchmarks.arithmetic.runs import run_fig3 as _run_fig3
from benchmarks.cli import main
from benchmarks.experiments import EXPERIMENTS
from benchmarks.harness import StageError
from subind.io import read_jsonl


def run_fig3(cfg, out, progress=False):
    """The records of the run (run_fig3 also returns the subnetworks)."""
    return _run_fig3(cfg, out, progress)[0]


def resolve_config(preset, overrides, sets):
    return EXPERIMENTS.get("fig3").resolve(preset, overrides, sets)


REQUIRED = {
    "experiment", "condition", "source_task", "subtask", "target_task", "layers", "seed",
    "n_disambiguation", "unmasked", "subnetwork_trainable", "val_accuracy", "test_accuracy",
    "subnetwork_density", "wall_seconds",
}  # fmt: skip


def test_tiny_end_to_end_outputs_and_resume(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(
        main, ["run", "fig3", "--preset", "tiny", "--out", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    records = read_jsonl(out / "results.jsonl")
    cfg = PRESETS.get("tiny")
    assert len(records) == len(plan_runs(cfg)) == 2 * (2 + 3 * 2)  # sizes x (2 + 3 conds x 2 modes)
    for r in records:
        assert set(r) >= REQUIRED, REQUIRED - set(r)
        assert r["provenance"]["git_commit"]
    assert {r["unmasked"] for r in records if r["condition"] == "subtask-induction"} == {
        "inherit",
        "reinit",
    }
    for name in ("table.md", "fig3.png", "subnetworks.md", "config.json"):
        assert (out / name).exists(), name
    assert "| subtask-induction (inherit) |" in (out / "table.md").read_text()
    assert (out / "fig3.png").read_bytes()[:4] == b"\x89PNG"
    # a rerun reuses base model, subnetwork and finished runs
    res = CliRunner().invoke(
        main, ["run", "fig3", "--preset", "tiny", "--out", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert len(read_jsonl(out / "results.jsonl")) == len(records)
    # adding a size runs only the new ones
    res = CliRunner().invoke(
        main,
        [
            "run",
            "fig3",
            "--preset",
            "tiny",
            "--out",
            str(out),
            "--sizes",
            "0,10,20",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert len(read_jsonl(out / "results.jsonl")) == len(records) + 8


def test_same_seed_same_numbers(tmp_path):
    cfg = dataclasses.replace(
        PRESETS.get("tiny"), conditions=("subtask-induction", "scratch"), sizes=(10,)
    )
    a = run_fig3(cfg, tmp_path / "a", progress=False)
    b = run_fig3(cfg, tmp_path / "b", progress=False)
    key = lambda r: r["key"]  # noqa: E731
    assert [r["test_accuracy"] for r in sorted(a, key=key)] == [
        r["test_accuracy"] for r in sorted(b, key=key)
    ]
    assert [r["val_accuracy"] for r in sorted(a, key=key)] == [
        r["val_accuracy"] for r in sorted(b, key=key)
    ]


def test_workers_give_the_same_records_as_one_process(tmp_path):
    cfg = dataclasses.replace(
        PRESETS.get("tiny"),
        conditions=("subtask-induction", "random-subnetwork"),
        sizes=(10,),
        unmasked=("inherit",),
    )
    one = run_fig3(cfg, tmp_path / "one", progress=False)
    two = run_fig3(dataclasses.replace(cfg, workers=2), tmp_path / "two", progress=False)
    acc = lambda rs: sorted((r["key"], r["test_accuracy"]) for r in rs)  # noqa: E731
    assert acc(one) == acc(two)


def test_failed_precondition_stops_with_a_clear_message(tmp_path):
    cfg = dataclasses.replace(PRESETS.get("tiny"), base_min_accuracy=1.01)
    with pytest.raises(StageError, match="base model reached only"):
        run_fig3(cfg, tmp_path, progress=False)
    assert not (tmp_path / "results.jsonl").exists()
    res = CliRunner().invoke(
        main,
        [
            "run",
            "fig3",
            "--preset",
            "tiny",
            "--out",
            str(tmp_path),
            "--set",
            "base_min_accuracy=1.01",
        ],
    )
    assert res.exit_code == 1 and "error: the 1-layer base model reached only" in res.output
    cfg = dataclasses.replace(PRESETS.get("tiny"), subnetwork_min_accuracy=1.01)
    with pytest.raises(StageError, match="does not implement the subtask"):
        run_fig3(cfg, tmp_path, progress=False)


def test_cli_errors_are_one_line_with_suggestions(tmp_path):
    r = CliRunner()
    res = r.invoke(
        main, ["run", "fig3", "--preset", "tiny", "--conditions", "scrach", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "Did you mean 'scratch'" in res.output
    res = r.invoke(main, ["run", "fig33", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "Did you mean 'fig3'" in res.output
    res = r.invoke(
        main, ["run", "fig3", "--preset", "tiny", "--target-task", "a^^2", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "--target-task: bad expression 'a^^2'" in res.output
    res = r.invoke(main, ["run", "fig3", "--preset", "quik"])
    assert res.exit_code == 2 and "Did you mean 'quick'" in res.output
    res = r.invoke(main, ["run", "fig3", "--set", "epochz=3"])
    assert res.exit_code == 2 and "FIELD=VALUE" in res.output


def test_presets_and_overrides():
    paper = PRESETS.get("paper")
    assert paper.sizes == PAPER_SIZES and len(PAPER_SIZES) == 17
    assert PAPER_SIZES[1] == 10 and PAPER_SIZES[-1] == 10_000
    assert (paper.layers, paper.seeds, paper.transfer_epochs, paper.transfer_batch_size) == (
        (2, 4, 6, 8, 10, 12), (0, 1, 2, 3, 4), 100, 50,
    )  # fmt: skip
    assert (paper.transfer_lr, paper.base_lr, paper.discovery_epochs, paper.discovery_lr) == (
        2e-4,
        5e-4,
        50,
        1e-3,
    )
    assert paper.discovery_penalty == 1e-7 and paper.max_number == 1000 and paper.modulus == 7
    # quick: the 5-minute run (width 64, validation every 5 epochs); cpu: the paper's width
    quick, cpu = PRESETS.get("quick"), PRESETS.get("cpu")
    assert (quick.n_embd, quick.transfer_eval_every, cpu.n_embd, cpu.transfer_eval_every) == (
        64, 5, paper.n_embd, paper.transfer_eval_every,
    )  # fmt: skip
    assert quick.conditions == cpu.conditions and set(quick.sizes) < set(cpu.sizes)
    cfg = resolve_config(
        "quick",
        {"layers": (2, 12), "seeds": None},
        ("transfer_epochs=5", "subnetwork_trainable=true"),
    )
    assert cfg.layers == (2, 12) and cfg.seeds == PRESETS.get("quick").seeds
    assert cfg.transfer_epochs == 5 and cfg.subnetwork_trainable is True


def test_ls_lists_experiments_and_conditions():
    res = CliRunner().invoke(main, ["ls"])
    assert res.exit_code == 0 and "fig3" in res.output and "complement-subnetwork" in res.output


def test_results_are_json_lines_with_config_hash(tmp_path):
    cfg = dataclasses.replace(PRESETS.get("tiny"), conditions=("scratch",), sizes=(0,))
    run_fig3(cfg, tmp_path, progress=False)
    line = (tmp_path / "results.jsonl").read_text().splitlines()[0]
    rec = json.loads(line)
    assert rec["key"].startswith("L1/scratch/reinit/s0/n0/") and rec["unmasked"] == "reinit"


def test_torchrun_two_ranks_give_the_same_records_as_one_process(tmp_path):
    import os
    import subprocess
    import sys

    args = [
        "run",
        "fig3",
        "--preset",
        "tiny",
        "--conditions",
        "subtask-induction,scratch",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", *args, "--out", str(tmp_path / "one")],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "benchmarks.cli", *args, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = sorted(
        (r["key"], r["test_accuracy"]) for r in read_jsonl(tmp_path / "one" / "results.jsonl")
    )
    two = sorted(
        (r["key"], r["test_accuracy"]) for r in read_jsonl(tmp_path / "two" / "results.jsonl")
    )
    assert one == two and len(one) == 2 * 3
    assert {r["trainer"] for r in read_jsonl(tmp_path / "two" / "results.jsonl")} == {"batched"}
    assert not list((tmp_path / "two").glob("results.rank*.jsonl"))
    assert (tmp_path / "two" / "table.md").exists()


def test_mask_bias_option_masks_the_biases(tmp_path):
    from benchmarks.arithmetic.stages import base_model, find_subnetwork

    cfg = dataclasses.replace(PRESETS.get("tiny"), mask_bias=True)
    sub = find_subnetwork(cfg, 1, base_model(cfg, 1, tmp_path, False), tmp_path, False)
    assert "transformer.h.0.mlp.c_fc.bias" in sub.masks
    plain = PRESETS.get("tiny")
    sub = find_subnetwork(plain, 1, base_model(plain, 1, tmp_path, False), tmp_path, False)
    assert all(name.endswith(".weight") for name in sub.masks)


def test_every_setting_is_in_a_cache_key_or_only_selects_runs():
    from benchmarks.arithmetic.config import TRANSFER_KEYS, Fig3Config

    fields = {f.name for f in dataclasses.fields(Fig3Config)}
    # settings that pick which runs exist (part of each run's key), checks, and execution
    not_in_digest = {
        "layers", "seeds", "sizes", "conditions", "unmasked",
        "base_min_accuracy", "subnetwork_min_accuracy", "workers", "device", "batch_runs",
    }  # fmt: skip
    assert fields - set(TRANSFER_KEYS) == not_in_digest


def test_report_command_rewrites_outputs(tmp_path):
    cfg = dataclasses.replace(PRESETS.get("tiny"), conditions=("scratch",), sizes=(0,))
    run_fig3(cfg, tmp_path, progress=False)
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "| scratch |" in (tmp_path / "table.md").read_text()
    assert "| 1 |" in (tmp_path / "subnetworks.md").read_text()
    assert (tmp_path / "fig3.png").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(main, ["report", str(empty)])
    assert res.exit_code == 2 and "holds no results" in res.output


@pytest.mark.parametrize("every,evaluations", [(1, 4), (3, 2)])
def test_batched_groups_give_the_same_records_as_one_at_a_time(tmp_path, every, evaluations):
    """Dropout off and deterministic algorithms on (exact kernels): the batched trainer's
    validation and test accuracies and best epochs equal one-at-a-time training's, evaluating
    after every epoch or every third (after epochs 3 and 4 of 4: the last is always evaluated,
    recorded as fit does as epoch 4, the number of epochs done)."""
    import torch

    cfg = dataclasses.replace(
        PRESETS.get("tiny"), dropout=0.0, transfer_epochs=4, transfer_lr=3e-3, sizes=(0, 10),
        transfer_eval_every=every,
    )  # fmt: skip
    one = run_fig3(dataclasses.replace(cfg, batch_runs=1), tmp_path / "one", progress=False)
    torch.use_deterministic_algorithms(True)
    try:
        many = run_fig3(dataclasses.replace(cfg, batch_runs=5), tmp_path / "many", progress=False)
    finally:
        torch.use_deterministic_algorithms(False)
    pick = lambda rs: sorted(  # noqa: E731
        (r["key"], r["val_accuracy"], r["test_accuracy"], r["best_epoch"], r["evaluations"])
        for r in rs
    )
    assert pick(one) == pick(many) and len(one) == len(plan_runs(cfg))
    assert {r["evaluations"] for r in one + many} == {evaluations}
    assert all(r["best_epoch"] in ((2, 4) if every == 3 else range(4)) for r in one)
    assert len({r["val_accuracy"] for r in one}) > 2  # the runs learned: the check has teeth
    assert {(r["trainer"], r["group_size"]) for r in one} == {("single", 1)}
    assert {r["trainer"] for r in many} == {"batched"}
    assert max(r["group_size"] for r in many) == 5 and min(r["group_size"] for r in many) < 5


def test_plan_groups_one_depth_and_size_per_group():
    from benchmarks.arithmetic.runs import plan_groups

    cfg = dataclasses.replace(PRESETS.get("quick"), layers=(2, 4), batch_runs=7)
    runs = plan_runs(cfg)
    groups = plan_groups(cfg, runs)
    assert sorted(r.key(cfg) for g in groups for r in g) == sorted(r.key(cfg) for r in runs)
    for g in groups:
        assert 1 <= len(g) <= 7
        assert len({(r.layers, r.n_disambiguation) for r in g}) == 1
    auto = plan_groups(dataclasses.replace(cfg, batch_runs=0, device="cpu"), runs)
    assert all(len({(r.layers, r.n_disambiguation) for r in g}) == 1 for g in auto)
    assert len(auto) == 2 * len(cfg.sizes)  # 18 runs per depth and size fit one group


def test_batched_run_resumes_without_duplicates(tmp_path):
    cfg = dataclasses.replace(PRESETS.get("tiny"), conditions=("scratch", "full-transfer"))
    first = run_fig3(dataclasses.replace(cfg, sizes=(0,)), tmp_path, progress=False)
    assert {r["group_size"] for r in first} == {2}
    both = run_fig3(cfg, tmp_path, progress=False)
    keys = [r["key"] for r in read_jsonl(tmp_path / "results.jsonl")]
    assert len(keys) == len(set(keys)) == len(both) == 4
    assert {r["key"]: r["test_accuracy"] for r in first}.items() <= {
        r["key"]: r["test_accuracy"] for r in both
    }.items()


def test_batch_runs_option(tmp_path):
    res = CliRunner().invoke(
        main,
        ["run", "fig3", "--preset", "tiny", "--batch-runs", "-1", "--out", str(tmp_path)],
    )
    assert res.exit_code == 2 and "--batch-runs takes 0" in res.output
    assert resolve_config("tiny", {"batch_runs": 3}, ()).batch_runs == 3


def test_transfer_eval_every_below_one_is_refused(tmp_path):
    args = ["--preset", "tiny", "--set", "transfer_eval_every=0", "--out", str(tmp_path)]
    res = CliRunner().invoke(main, ["run", "fig3", *args])
    assert res.exit_code == 2 and "transfer_eval_every takes 1" in res.output
    assert not (tmp_path / "results.jsonl").exists()
