import json

import pytest
from click.testing import CliRunner

from benchmarks.cli import main
from benchmarks.vision.config import RUN_KEYS, Table1Config
from benchmarks.vision.cue_conflict import CueConflictError
from benchmarks.vision.report import (
    paired_md,
    released_md,
    saved_scoring,
    table1_csv,
    table1_md,
    table2_md,
    write_reports,
)
from subind.io import append_jsonl


def _rec(strategy, unmasked, seed, original, pooled, shape_bias, model="m", curve=True,
         released=None):  # fmt: skip
    """A table1 record; ``released`` = (accuracy, robustness) under the released scoring, None:
    a record written before the released metrics existed."""
    extra = {}
    if released is not None:
        extra["cue_conflict_released"] = {"accuracy": released[0], "robustness": released[1],
                                          "shape_bias": shape_bias}  # fmt: skip
    return extra | {
        "experiment": "table1",
        "key": f"{model}/{strategy}/{unmasked}/s{seed}",
        "model": model,
        "strategy": strategy,
        "unmasked": unmasked,
        "seed": seed,
        "train_images": 0 if strategy in ("linear-ft", "pretrained") else 100,
        "original_accuracy": original,
        "pooled_accuracy": pooled,
        "cue_conflict": {"accuracy": 0.2, "robustness": 0.7, "shape_bias": shape_bias},
        "per_class": {
            "cat": {"original_accuracy": original, "cue_conflict_shape_bias": None},
            "dog": {"original_accuracy": 1.0, "pooled_accuracy": 0.5},
        },
        "curve": [
            {"step": 10, "original": 0.3, "pooled": 0.2},
            {"step": 20, "original": original, "pooled": pooled},
        ]
        if curve and strategy not in ("linear-ft", "pretrained")
        else [],
    }


RECORDS = [
    _rec("subtask-induction", "inherit", 0, 0.8, 0.6, 0.5),
    _rec("subtask-induction", "inherit", 1, 0.9, 0.5, 0.7),
    _rec("random-subnetwork", "inherit", 0, 0.7, 0.4, 0.4),
    _rec("random-subnetwork", "inherit", 1, 0.8, 0.4, 0.5),
    _rec("random-subnetwork", "reinit", 0, 0.1, 0.1, 0.1),
    _rec("scratch", "reinit", 0, 0.5, 0.2, 0.2),
    _rec("scratch", "reinit", 1, 0.6, 0.3, 0.3),
    _rec("linear-ft", "inherit", 0, 0.95, 0.3, 0.1),
]


def test_table1_md_means_and_order():
    md = table1_md(RECORDS, "T")
    lines = [x for x in md.splitlines() if x.startswith("| m |")]
    assert [x.split("|")[2].strip() for x in lines] == [
        "subtask-induction", "random-subnetwork", "random-subnetwork", "scratch", "linear-ft",
    ]  # fmt: skip
    si = lines[0].split("|")
    assert si[4].strip() == "2" and si[5].strip() == "100"
    assert si[6].strip() == "85.0 +- 7.1"  # original: mean of .8 and .9, std .0707
    assert si[7].strip() == "55.0 +- 7.1"
    assert lines[-1].split("|")[5].strip() == "pretraining set"


def test_paired_differences_like_with_like():
    md = paired_md(RECORDS)
    rows = {x.split("|")[3].strip(): x.split("|") for x in md.splitlines() if x.startswith("| m")}
    # random (inherit) is paired with SI (inherit) only: pooled diffs .2 and .1
    assert rows["random-subnetwork (inherit)"][4].strip() == "2"
    assert rows["random-subnetwork (inherit)"][5].strip() == "+15.0 +- 7.1"
    assert "random-subnetwork (reinit)" not in rows
    # scratch has one mode: paired by seed; linear-ft is one run: paired with both seeds
    assert rows["scratch"][5].strip() == "+30.0 +- 14.1"
    assert rows["linear-ft"][4].strip() == "2"
    assert rows["linear-ft"][5].strip() == "+25.0 +- 7.1"


def test_csv_and_table2_and_files(tmp_path):
    csv_text = table1_csv(RECORDS)
    assert csv_text.splitlines()[0].startswith("model,strategy,unmasked,seed,train_images,original")
    assert len(csv_text.splitlines()) == len(RECORDS) + 1
    rows = [
        {"model": "m", "kind": "pretrained", "lambda": 1e-7, "density": 0.149,
         "pooled_whole_model": 0.368, "pooled_subnetwork": 0.738, "best_epoch": 9,
         "selected": True},
        {"model": "m", "kind": "random-init", "lambda": 1e-7, "density": 0.3,
         "pooled_whole_model": None, "pooled_subnetwork": 0.35, "best_epoch": 3,
         "selected": False},
    ]  # fmt: skip
    md = table2_md(rows)
    assert "| m | pretrained | 1e-07 | 14.9% | 36.8% | 73.8% | 9 | yes |" in md
    assert "| m | random-init | 1e-07 | 30.0% | - | 35.0% | 3 |  |" in md
    write_reports(RECORDS, tmp_path, "T", rows)
    for name in ("table1.md", "table1.csv", "table2.md", "table2.json", "per_class.md", "fig5.png"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "fig5.png").read_bytes()[:4] == b"\x89PNG"
    per_class = (tmp_path / "per_class.md").read_text()
    assert "| dog | 100.0 | 50.0 | - | - |" in per_class
    assert "## m / subtask-induction (inherit), 2 run(s)" in per_class
    assert "| cat | 85.0 +- 7.1 | - | - | - |" in per_class


# Standard cue-conflict: accuracy .2, robustness .7 in every record (from _rec).
# Released (accuracy, robustness): SI .3/.8 and .4/.9; scratch .1/.6 twice.
BOTH = [
    _rec("subtask-induction", "inherit", 0, 0.8, 0.6, 0.5, released=(0.3, 0.8)),
    _rec("subtask-induction", "inherit", 1, 0.9, 0.5, 0.7, released=(0.4, 0.9)),
    _rec("scratch", "reinit", 0, 0.5, 0.2, 0.2, released=(0.1, 0.6)),
    _rec("scratch", "reinit", 1, 0.6, 0.3, 0.3, released=(0.1, 0.6)),
]


def _cells(md, first):
    """The cells of the rows of a markdown table whose first cell is ``first``."""
    return [[c.strip() for c in x.split("|")[1:-1]] for x in md.splitlines()
            if x.startswith(f"| {first} |")]  # fmt: skip


def test_released_table_and_csv_columns():
    rows = _cells(released_md(BOTH), "m")
    # SI: cue-conflict accuracy mean(.3, .4) = 35.0, std .0707 -> 7.1; robustness mean(.8, .9).
    assert rows[0][2:] == ["inherit", "2", "100", "85.0 +- 7.1", "55.0 +- 7.1", "35.0 +- 7.1",
                           "85.0 +- 7.1"]  # fmt: skip
    assert rows[1][-2:] == ["10.0 +- 0.0", "60.0 +- 0.0"]
    # The main table keeps the standard scoring (20.0 / 70.0).
    assert _cells(table1_md(BOTH, "T"), "m")[0][7:9] == ["20.0 +- 0.0", "70.0 +- 0.0"]
    # Older records have no released metrics: "-" (and empty CSV cells).
    assert _cells(released_md(RECORDS), "m")[0][-2:] == ["-", "-"]
    header, first = table1_csv(BOTH).splitlines()[:2]
    assert header.endswith("shape bias,cue-conflict accuracy (released),robustness (released)")
    assert first.endswith(",0.200000,0.700000,0.500000,0.300000,0.800000")
    assert table1_csv(RECORDS).splitlines()[1].endswith(",0.500000,,")


def test_paired_differences_follow_the_scoring():
    # Columns: model, unmasked, control, pairs, pooled, shape bias, original, accuracy, robustness.
    std = _cells(paired_md(BOTH), "m")[0]
    rel = _cells(paired_md(BOTH, "released"), "m")[0]
    assert std[2] == rel[2] == "scratch"
    assert std[4:7] == rel[4:7]  # pooled, shape bias, original: the same under both
    assert std[5] == "+35.0 +- 7.1"  # shape bias: (.5 - .2, .7 - .3)
    assert std[7:] == ["+0.0 +- 0.0", "+0.0 +- 0.0"]  # standard: .2 - .2, .7 - .7
    # released accuracy: (.3 - .1, .4 - .1) = (20, 30) -> +25.0 +- 7.1; robustness (.2, .3) too.
    assert rel[7:] == ["+25.0 +- 7.1", "+25.0 +- 7.1"]
    assert "under the released scoring" in paired_md(BOTH, "released")
    assert _cells(paired_md(RECORDS, "released"), "m")[0][7:] == ["-", "-"]  # older records
    with pytest.raises(CueConflictError, match="Did you mean 'released'"):
        paired_md(BOTH, "relesed")


def test_write_reports_uses_the_runs_scoring(tmp_path):
    assert Table1Config().cue_conflict_scoring == "standard"
    assert "cue_conflict_scoring" not in RUN_KEYS  # reports only: no cache key
    assert saved_scoring(tmp_path) == "standard"  # no config.json
    (tmp_path / "config.json").write_text(
        json.dumps({"config": {"cue_conflict_scoring": "released"}})
    )
    assert saved_scoring(tmp_path) == "released"
    write_reports(BOTH, tmp_path, "T", None)
    md = (tmp_path / "table1.md").read_text()
    assert md.index("# T") < md.index("released code scored it") < md.index("paired by seed")
    # pooled: (.6 - .2, .5 - .3) = (40, 20) -> +30.0 +- 14.1
    assert "| m | inherit | scratch | 2 | +30.0 +- 14.1 |" in md
    assert "under the released scoring" in md and "+25.0 +- 7.1 |" in md
    write_reports(BOTH, tmp_path, "T", None, scoring="standard")  # explicit: overrides
    assert "under the standard scoring" in (tmp_path / "table1.md").read_text()
    (tmp_path / "config.json").write_text(json.dumps({"config": {"cue_conflict_scoring": "x"}}))
    with pytest.raises(CueConflictError, match="unknown cue-conflict scoring 'x'"):
        write_reports(BOTH, tmp_path, "T", None)


def test_report_command_on_older_results(tmp_path):
    # A table1 folder written before the released metrics and the setting existed.
    (tmp_path / "config.json").write_text(
        json.dumps({"experiment": "table1", "preset": "mini", "config": {"world": "mini"}})
    )
    for r in RECORDS:
        append_jsonl(tmp_path / "results.jsonl", r)
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "table1.md").read_text()
    assert "under the standard scoring" in md
    released = md[md.index("released code scored it") : md.index("paired by seed")]
    assert "| m | subtask-induction | inherit | 2 | 100 | 85.0 +- 7.1 | 55.0 +- 7.1 | - | - |" in (
        released
    )


def test_table1_says_what_it_measured_and_what_each_row_took():
    recs = [
        _rec("subtask-induction", "reinit", 0, 0.5, 0.4, 0.6),
        _rec("scratch", "reinit", 0, 0.4, 0.2, 0.3),
        _rec("data-mixture", "inherit", 0, 0.6, 0.3, 0.2),
        _rec("linear-ft", "inherit", 0, 0.7, 0.3, 0.1)
        | {"adapted": {"adapt": "head", "adapt_images": "discovery", "train_images": 13929}},
        _rec("pretrained", "inherit", 0, 0.8, 0.3, 0.1),
    ]
    from benchmarks.vision.report import data_note

    md = table1_md(recs, "T", data_note("mini"))
    assert "Measured on the synthetic shape/texture world 'mini'" in md and "not ImageNet" in md
    assert "Measured on 16-class ImageNet" in table1_md(recs, "T", data_note(None))
    assert "`reinit` (fresh) is what the paper's text describes" in md
    rows = {line.split(" | ")[1]: line.split(" | ") for line in md.splitlines()
            if line.startswith("| m |")}  # fmt: skip
    assert rows["subtask-induction"][2] == "reinit"  # transfers a subnetwork: its mode shown
    for whole in ("scratch", "data-mixture", "linear-ft", "pretrained"):
        assert rows[whole][2] == "-", whole
    assert rows["linear-ft"][4] == "pretraining set; head adapted on 13,929 discovery images"
    assert rows["pretrained"][4] == "pretraining set"


def test_fig5_draws_identical_curves_once_in_percent():
    from benchmarks.vision.report import fig5_lines

    def rec(strategy, unmasked, curve):
        return {"model": "m", "strategy": strategy, "unmasked": unmasked, "seed": 0,
                "curve": [{"step": s, "original": o, "pooled": p} for s, o, p in curve]}  # fmt: skip

    same = [(2, 0.25, 0.5), (4, 0.5, 0.5)]
    lines = fig5_lines([rec("subtask-induction", "inherit", same),
                        rec("random-subnetwork", "inherit", same),
                        rec("scratch", "reinit", [(2, 0.5, 0.25), (4, 0.75, 0.25)])], "m")  # fmt: skip
    assert [labels for _, _, labels in lines] == [
        ["subtask-induction (inherit)", "random-subnetwork (inherit)"],
        ["scratch"],
    ]
    steps, ys, _ = lines[0]
    assert steps == [2, 4] and ys == {"original": [25.0, 50.0], "pooled": [50.0, 50.0]}


def test_table1_puts_the_papers_values_beside_the_paper_models_rows():
    from benchmarks.vision.report import released_md, table1_md

    r = {"model": "resnet18", "strategy": "subtask-induction", "unmasked": "inherit", "seed": 0,
         "train_images": 10, "original_accuracy": 0.5, "pooled_accuracy": 0.25,
         "cue_conflict_released": {"accuracy": 0.1, "robustness": 0.9}}  # fmt: skip
    mini = {**r, "model": "resnet18-mini"}
    text = table1_md([r, mini], "t")
    assert "| 50.0 [80.7] | 25.0 [55.6] |" in text  # original, pooled
    assert "| resnet18-mini | subtask-induction | inherit | 1 | 10 | 50.0 | 25.0 |" in text
    assert "| 10.0 [27.1] | 90.0 [77.4] |" in released_md([r])
