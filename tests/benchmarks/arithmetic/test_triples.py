import json

import pytest
from click.testing import CliRunner

from benchmarks.arithmetic.config import PRESETS
from benchmarks.arithmetic.triples import Triple, summary_md, summary_rows
from benchmarks.cli import main
from benchmarks.experiments import EXPERIMENTS
from subind.io import append_jsonl, read_jsonl


def test_triples_are_the_papers_figures_8_to_10():
    def tasks(name):
        return [(t.source_task, t.subtask, t.target_task) for t in EXPERIMENTS.get(name).triples]

    assert tasks("fig8") == [("a+ab", "ab", "a^2+ab+b^2"), ("a+ab", "ab", "a^3+ab")]
    assert tasks("fig9") == [("a^2+b^2", "a^2", "a^2+ab+b^2"), ("a^2+b^2", "a^2", "a^2+ab")]
    assert tasks("fig10") == [
        ("a^2+ab", "a+b", "a^2-b^2"),
        ("a^2+b^2", "a^2", "a^2-b^2"),
        ("a+ab", "ab", "a^3+ab"),
        ("a^2+b^2", "a^2", "a^3+ab"),
    ]
    assert Triple("a^2+ab", "a+b", "a^2-b^2").slug == "a2+ab_a+b_a2-b2"


@pytest.mark.parametrize("name", ["fig8", "fig9", "fig10"])
@pytest.mark.parametrize("preset", ["quick", "cpu", "paper"])
def test_presets_are_fig3s_with_other_tasks(name, preset):
    exp = EXPERIMENTS.get(name)
    for t in exp.triples:
        cfg = t.apply(exp.resolve(preset, {}, ()))
        assert cfg == t.apply(PRESETS.get(preset))


def test_tiny_fig8_end_to_end_shares_stages_resumes_and_reports(tmp_path):
    out = tmp_path / "fig8"
    args = ["run", "fig8", "--preset", "tiny", "--out", str(out), "--no-progress"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 2 * 2 * (2 + 3 * 2)  # triples x sizes x (2 + 3 conditions x 2 modes)
    assert {r["target_task"] for r in records} == {"a^2+ab+b^2", "a^3+ab"}
    # both triples use the same base model and subnetwork: trained once
    assert len(list((out / "base").glob("L1-*"))) == len(list((out / "subnetworks").glob("*"))) == 1
    for slug in ("a+ab_ab_a2+ab+b2", "a+ab_ab_a3+ab"):
        for name in ("table.md", "fig3.png", "subnetworks.md"):
            assert (out / slug / name).exists(), (slug, name)
        assert "| 1 |" in (out / slug / "subnetworks.md").read_text()
    summary = (out / "summary.md").read_text()
    assert "| a+ab -> ab -> a^3+ab | 1 | reinit | complement-subnetwork |" in summary
    assert "a+ab -> ab -> a^2+ab+b^2" in res.output
    exp = json.loads((out / "experiment.json").read_text())
    assert exp["experiment"] == "fig8" and len(exp["configs"]) == 2
    res = CliRunner().invoke(main, args)  # a rerun trains nothing new
    assert res.exit_code == 0 and len(read_jsonl(out / "results.jsonl")) == len(records)
    (out / "summary.md").unlink()
    res = CliRunner().invoke(main, ["report", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "summary.md").read_text() == summary


def test_triple_experiments_refuse_task_options(tmp_path):
    res = CliRunner().invoke(
        main, ["run", "fig9", "--preset", "tiny", "--target-task", "a+b", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "fig9 sets its own tasks" in res.output
    res = CliRunner().invoke(main, ["run", "fig11", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "Did you mean" in res.output


def _rec(target, cond, unmasked, n, seed, acc):
    return {
        "source_task": "a+ab", "subtask": "ab", "target_task": target, "layers": 2,
        "condition": cond, "unmasked": unmasked, "n_disambiguation": n, "seed": seed,
        "test_accuracy": acc,
    }  # fmt: skip


# Triple 1: per seed SI - random (inherit) = 0.3, 0.1; SI - complement (inherit) = 0.2, 0.2;
# SI - random (reinit) = -0.1 (seed 1 has no random run). Triple 2: SI - random = 0.5 at n=10.
RECORDS = [
    _rec("a^3+ab", "subtask-induction", "inherit", 10, 0, 0.9),
    _rec("a^3+ab", "subtask-induction", "inherit", 10, 1, 0.7),
    _rec("a^3+ab", "random-subnetwork", "inherit", 10, 0, 0.6),
    _rec("a^3+ab", "random-subnetwork", "inherit", 10, 1, 0.6),
    _rec("a^3+ab", "complement-subnetwork", "inherit", 10, 0, 0.7),
    _rec("a^3+ab", "complement-subnetwork", "inherit", 10, 1, 0.5),
    _rec("a^3+ab", "subtask-induction", "reinit", 10, 0, 0.4),
    _rec("a^3+ab", "subtask-induction", "reinit", 10, 1, 0.4),
    _rec("a^3+ab", "random-subnetwork", "reinit", 10, 0, 0.5),
    _rec("a^3+ab", "scratch", "reinit", 10, 0, 0.1),  # not a summary control
    _rec("a^2+ab+b^2", "subtask-induction", "inherit", 30, 0, 0.75),
    _rec("a^2+ab+b^2", "random-subnetwork", "inherit", 30, 0, 0.25),
    _rec("a^2+ab+b^2", "random-subnetwork", "reinit", 30, 0, 0.25),  # no SI (reinit) to pair
]


def test_summary_rows_pair_by_seed_per_triple_and_mode():
    rows = {(r["triple"], r["unmasked"], r["control"], r["n"]): r for r in summary_rows(RECORDS)}
    assert set(rows) == {
        ("a+ab -> ab -> a^3+ab", "inherit", "random-subnetwork", 10),
        ("a+ab -> ab -> a^3+ab", "inherit", "complement-subnetwork", 10),
        ("a+ab -> ab -> a^3+ab", "reinit", "random-subnetwork", 10),
        ("a+ab -> ab -> a^2+ab+b^2", "inherit", "random-subnetwork", 30),
    }
    r = rows[("a+ab -> ab -> a^3+ab", "inherit", "random-subnetwork", 10)]
    assert r["diffs"] == pytest.approx([0.3, 0.1]) and r["seeds"] == 2 and r["layers"] == 2
    assert r["mean"] == pytest.approx(0.2) and r["std"] == pytest.approx(0.1414, abs=1e-4)
    r = rows[("a+ab -> ab -> a^3+ab", "inherit", "complement-subnetwork", 10)]
    assert r["mean"] == pytest.approx(0.2) and r["std"] == pytest.approx(0.0, abs=1e-12)
    r = rows[("a+ab -> ab -> a^3+ab", "reinit", "random-subnetwork", 10)]
    assert r["diffs"] == pytest.approx([-0.1]) and r["seeds"] == 1
    assert rows[("a+ab -> ab -> a^2+ab+b^2", "inherit", "random-subnetwork", 30)]["mean"] == 0.5


def test_summary_table_and_command_over_several_folders(tmp_path):
    text = summary_md(RECORDS)
    assert "| triple | layers | unmasked | minus | n=10 | n=30 |" in text
    row = "| a+ab -> ab -> a^3+ab | 2 | inherit | random-subnetwork | +0.200 +- 0.141 (2) | - |"
    assert row in text
    assert (
        "| a+ab -> ab -> a^2+ab+b^2 | 2 | inherit | random-subnetwork | - | +0.500 +- 0.000 (1) |"
        in text
    )
    for i, part in enumerate((RECORDS[:10], RECORDS[10:])):
        for rec in part:
            append_jsonl(tmp_path / f"run{i}" / "results.jsonl", rec)
    res = CliRunner().invoke(
        main,
        ["summary", str(tmp_path / "run0"), str(tmp_path / "run1"), "--out", str(tmp_path / "s")],
    )
    assert res.exit_code == 0, res.output
    assert row in res.output and (tmp_path / "s" / "summary.md").read_text() == text
    assert len(json.loads((tmp_path / "s" / "summary.json").read_text())) == 4
    res = CliRunner().invoke(main, ["summary", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output
    append_jsonl(tmp_path / "run2" / "results.jsonl", RECORDS[0])  # nothing to pair it with
    res = CliRunner().invoke(main, ["summary", str(tmp_path / "run2")])
    assert res.exit_code == 2 and "no subtask-induction run" in res.output


def test_summary_keeps_runs_of_other_settings_apart():
    a = [dict(r, config_digest="aaa") for r in RECORDS[:6]]
    b = [dict(r, config_digest="bbb", test_accuracy=0.5) for r in RECORDS[:6]]
    rows = summary_rows(a + b + a)  # a folder given twice counts once
    assert {r["triple"] for r in rows} == {
        "a+ab -> ab -> a^3+ab [aaa]",
        "a+ab -> ab -> a^3+ab [bbb]",
    }
    by = {(r["triple"], r["control"]): r for r in rows}
    assert by[("a+ab -> ab -> a^3+ab [aaa]", "random-subnetwork")]["diffs"] == pytest.approx(
        [0.3, 0.1]
    )
    assert by[("a+ab -> ab -> a^3+ab [bbb]", "random-subnetwork")]["diffs"] == [0.0, 0.0]
