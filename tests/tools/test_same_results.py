"""tools/same_results.py: two output folders compared record by record."""

import json

from tests.scripts import load_script


def _write(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_equal_records_pass_whatever_their_order_and_wall_times(tmp_path, capsys):
    mod = load_script("tools/same_results.py")
    a = [{"key": "k1", "acc": 0.5, "wall_seconds": 1.0, "curve": [{"step": 1, "x": 0.1}]},
         {"key": "k2", "acc": 0.25, "provenance": {"git_commit": "a"}}]  # fmt: skip
    b = [{**a[1], "provenance": {"git_commit": "b"}}, {**a[0], "wall_seconds": 9.0}]
    _write(tmp_path / "a", a)
    _write(tmp_path / "b", b)
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "identical: 2 records" in capsys.readouterr().out


def test_a_changed_number_a_missing_record_or_field_fails(tmp_path, capsys):
    mod = load_script("tools/same_results.py")
    a = [{"key": "k1", "acc": 0.5, "curve": [0.1, 0.2]}, {"key": "k2", "acc": 0.25}]
    _write(tmp_path / "a", a)
    _write(tmp_path / "b", [{"key": "k1", "acc": 0.5, "curve": [0.1, 0.2000001]}])
    _write(tmp_path / "c", [{"key": "k1", "acc": 0.5}, {"key": "k2", "acc": 0.25}])
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "k1: curve differs" in out and "only in" in out and "k2" in out
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert "k1: curve differs: [0.1, 0.2] vs '<absent>'" in capsys.readouterr().out
    assert mod.main([str(tmp_path / "a")]) == 2
