import pytest

from benchmarks.arithmetic.report import aggregate, label, paired_md, table_md


def _rec(cond, unmasked, n, seed, acc, layers=2):
    return {
        "layers": layers, "condition": cond, "unmasked": unmasked,
        "n_disambiguation": n, "seed": seed, "test_accuracy": acc,
    }  # fmt: skip


RECORDS = [
    _rec("subtask-induction", "inherit", 10, 0, 0.9),
    _rec("subtask-induction", "inherit", 10, 1, 0.7),
    _rec("random-subnetwork", "inherit", 10, 0, 0.6),
    _rec("random-subnetwork", "inherit", 10, 1, 0.6),
    _rec("scratch", "reinit", 10, 0, 0.5),
    _rec("scratch", "reinit", 10, 1, 0.3),
]


def test_labels_and_aggregation():
    assert label(RECORDS[0]) == "subtask-induction (inherit)"
    assert label(RECORDS[4]) == "scratch"
    groups = aggregate(RECORDS)
    assert groups[(2, "subtask-induction (inherit)", 10)] == [0.9, 0.7]


def test_table_reports_mean_std_and_count():
    text = table_md(RECORDS)
    assert "| subtask-induction (inherit) | 0.800 +- 0.141 (2) |" in text
    assert "| scratch | 0.400 +- 0.141 (2) |" in text


def test_paired_differences_are_per_seed():
    text = paired_md(RECORDS)
    # per seed: 0.9-0.6=0.3 and 0.7-0.6=0.1 -> mean 0.2, std 0.141
    assert (
        "| subtask-induction (inherit) - random-subnetwork (inherit) | +0.200 +- 0.141 (2) |"
        in text
    )
    # scratch differences: 0.4 and 0.4 -> +0.400 +- 0.000
    assert "| subtask-induction (inherit) - scratch | +0.400 +- 0.000 (2) |" in text


def test_std_of_one_run_is_zero():
    assert "0.900 +- 0.000 (1)" in table_md(RECORDS[:1])
    with pytest.raises(KeyError):
        label({"condition": "x"})
