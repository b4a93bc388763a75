"""Outputs a user can trust (table1, evaluate, score): one config per output folder, files that
follow the umask, bad inputs refused in one line before any work."""

import hashlib
import os
import stat

import pytest
from click.testing import CliRunner

from benchmarks.cli import main
from benchmarks.vision.cue_conflict import CSV_COLUMNS

ONE_RUN = ["run", "table1", "--preset", "tiny", "--models", "resnet18-mini", "--strategies",
           "scratch", "--no-progress"]  # fmt: skip


def _snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs") / "tiny"
    old = os.umask(0o022)
    try:
        res = CliRunner().invoke(main, [*ONE_RUN, "--out", str(out), "--set", "lr=0.05"])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    return out


def test_every_output_file_follows_the_umask(first):
    files = [p for p in first.rglob("*") if p.is_file()]
    assert {"table1.md", "fig5.png", "config.json", "results.jsonl"} <= {p.name for p in files}
    assert list((first / "models").glob("*.safetensors")) and list(first.glob("responses/*.csv"))
    modes = {str(p.relative_to(first)): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert {m for m in modes.values()} == {0o644}, modes


def test_a_rerun_with_another_config_is_refused_and_the_folder_kept(first, tmp_path):
    before = _snapshot(first)
    res = CliRunner().invoke(main, [*ONE_RUN, "--out", str(first)])  # lr back to the preset's
    assert res.exit_code == 1
    line = res.output.strip().splitlines()[-1]
    assert line.startswith(f"error: {first} holds the results of another table1 config: ")
    assert "lr 0.05 there, 0.001 here" in line and "--start-over" in line
    assert _snapshot(first) == before
    # the same config resumes: nothing to do, nothing changed but the reports
    again = CliRunner().invoke(main, [*ONE_RUN, "--out", str(first), "--set", "lr=0.05"])
    assert again.exit_code == 0, again.output
    assert _snapshot(first)["results.jsonl"] == before["results.jsonl"]
    # --plan says so too, as a failed input check
    plan = CliRunner().invoke(main, [*ONE_RUN, "--out", str(first), "--plan"])
    assert plan.exit_code == 1 and "[FAIL] output folder:" in plan.output


def test_start_over_moves_the_old_folder_aside(first, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    (out / "folder.json").write_text((first / "folder.json").read_text())
    (out / "results.jsonl").write_text("")
    res = CliRunner().invoke(main, [*ONE_RUN, "--out", str(out), "--start-over"])
    assert res.exit_code == 0, res.output
    moved = list(tmp_path.glob("copy.previous-*"))
    assert len(moved) == 1 and (moved[0] / "folder.json").is_file()
    assert "--start-over: moved the old" in res.output and (out / "table1.md").is_file()


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "out"
    res = CliRunner().invoke(main, [*ONE_RUN, "--out", str(out)])
    assert res.exit_code == 1 and "cannot be created" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(main, ["evaluate", "--arch", "resnet18-mini", "--weights", "x.pth",
                                    "--cue-conflict-dir", str(tmp_path), "--out", str(out)])  # fmt: skip
    assert res.exit_code == 1 and "cannot be created" in res.output  # before the weights


@pytest.mark.parametrize("setting, message", [
    ("amp=bf61", "amp must be none or bf16, got 'bf61'"),
    ("steps=-5", "steps must be >= 1, got -5"),
    ("stepz=4", "did you mean steps?"),
    ("steps=x", "steps takes an integer, got 'x'"),
])  # fmt: skip
def test_bad_settings_are_refused_by_the_plan_and_the_run(setting, message, tmp_path):
    for extra in (["--plan"], []):
        res = CliRunner().invoke(main, [*ONE_RUN, "--out", str(tmp_path / "o"), "--set", setting,
                                        *extra])  # fmt: skip
        assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "o").exists()


def test_a_batch_that_does_not_split_over_the_ranks_is_refused_at_start(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc_per_node=3 sets it
    for extra in (["--plan"], []):
        res = CliRunner().invoke(main, [*ONE_RUN, "--out", str(tmp_path / "o"), "--set",
                                        "distributed=ddp", *extra])  # fmt: skip
        assert res.exit_code == 2
        assert "the scratch batch 16 of resnet18-mini does not split over 3 ranks" in res.output
    assert not (tmp_path / "o").exists()
    res = CliRunner().invoke(main, [*ONE_RUN, "--out", str(tmp_path / "o"), "--seeds", "a,b"])
    assert res.exit_code == 2 and "--seeds: expected comma-separated integers" in res.output


def test_score_refuses_answers_that_are_not_category_names(tmp_path):
    header = ",".join(CSV_COLUMNS)
    rows = [f"s,1,{i},NaN,Airplane,cat,0,cat{i}-airplane{i}.png" for i in range(1, 4)]
    (tmp_path / "r.csv").write_text("\n".join([header, *rows, "s,1,4,NaN,cat,cat,0,cat4-dog1.png"]))
    res = CliRunner().invoke(main, ["score", "cue-conflict", str(tmp_path / "r.csv")])
    assert res.exit_code == 1
    assert "3 of 4 answers are not one of the 16 category names (e.g. 'Airplane' x3)" in res.output
    assert "--unknown-as-missing" in res.output
    res = CliRunner().invoke(main, ["score", "cue-conflict", str(tmp_path / "r.csv"),
                                    "--unknown-as-missing"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (
        "3 answers that are not one of the 16 category names were scored as missing" in res.output
    )
