import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.speed.result import (
    Field,
    Result,
    Row,
    parse_result,
    read_result,
    to_json,
    write_result,
)

ROOT = Path(__file__).resolve().parents[3]
ROWS = [
    Row("fast", "path", {"ms_per_image": Field(500.0, "ms/image"), "backend": Field("fast")}),
    Row("2 layers", "depth", {"rounds_ms": Field([1.0, 2], "ms/step"), "ok": Field(True)}),
    Row("paper grid", "projection", {"hours_ddp": Field(None, "h"), "error": Field(None)}),
]
PROV = {"git_commit": "abc"}


def _valid() -> dict:
    return to_json(Result("pooling", {"device": "cpu"}, tuple(ROWS), ("one line",), PROV))


def test_a_written_result_reads_back_as_written(tmp_path):
    path = tmp_path / "sub" / "r.json"
    written = write_result(
        path, "pooling", {"device": "cpu", "n": [1, 2]}, ROWS, ["one line"], PROV
    )
    read = read_result(path, "pooling")
    assert read == written
    assert read.rows == tuple(ROWS) and read.config == {"device": "cpu", "n": [1, 2]}
    assert read.summary == ("one line",) and read.provenance == PROV
    assert [r.name for r in read.rows_of("depth")] == ["2 layers"]
    assert read.row("fast").value("ms_per_image") == 500.0 and read.row("nope") is None
    assert read.row("fast").value("missing") is None
    data = json.loads(path.read_text())
    assert data["schema"] == 1 and data["rows"][0]["fields"]["ms_per_image"] == {
        "value": 500.0,
        "unit": "ms/image",
    }
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left


def test_write_result_records_provenance_when_not_given(tmp_path):
    write_result(tmp_path / "r.json", "sweep", {}, ROWS)
    prov = read_result(tmp_path / "r.json").provenance
    assert prov["git_commit"] and prov["versions"]["python"]


def _set(path: tuple, value):
    def change(obj: dict) -> None:
        *parents, last = path
        for key in parents:
            obj = obj[key]
        if value is KeyError:
            del obj[last]
        else:
            obj[last] = value

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (_set(("rows",), KeyError), "not a speed benchmark result: expected the keys"),
        (_set(("extra",), 1), "not a speed benchmark result"),
        (_set(("schema",), 2), "schema 2: this reader knows schema 1"),
        (_set(("benchmark",), ""), "benchmark: a non-empty string"),
        (_set(("config",), [1]), "config: a mapping, got list"),
        (_set(("rows",), {}), "rows: a list, got dict"),
        (_set(("rows", 0, "kind"), KeyError), "rows[0]: a row has exactly the keys name"),
        (_set(("rows", 1, "name"), "fast"), "the name 'fast' is used twice"),
        (_set(("rows", 0, "fields", "ms_per_image", "unit"), ""), "ms_per_image: the number 500.0 has no unit"),
        (_set(("rows", 1, "fields", "rounds_ms", "unit"), ""), "rounds_ms: the number [1.0, 2] has no unit"),
        (_set(("rows", 1, "fields", "rounds_ms", "value"), [1.0, "a"]), "a value is a number, a list of numbers"),
        (_set(("rows", 0, "fields", "backend", "unit"), "ms"), "'fast' is not a number but has the unit 'ms'"),
        (_set(("rows", 0, "fields", "ms_per_image"), 500.0), "a field is {'value': ..., 'unit': ...}"),
        (_set(("rows", 2, "fields", "error", "value"), {"a": 1}), "got dict"),
        (_set(("summary",), ["two\nlines"]), "summary: each entry is one line"),
        (_set(("summary",), "text"), "summary: a list of strings"),
    ],
)  # fmt: skip
def test_a_wrong_shape_is_refused_with_a_one_line_message(change, message):
    obj = copy.deepcopy(_valid())
    parse_result(obj)  # valid before the change
    change(obj)
    with pytest.raises(ValueError) as e:
        parse_result(obj)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_read_result_names_the_file_and_the_benchmark_it_expected(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"r\.json: Expecting property name") as e:
        read_result(path)
    assert "\n" not in str(e.value)
    path.write_text(json.dumps(_valid()))
    assert read_result(path, "pooling").benchmark == "pooling"
    with pytest.raises(ValueError, match="benchmark 'pooling', expected 'sweep'"):
        read_result(path, "sweep")


def test_write_result_refuses_a_number_without_unit_and_writes_nothing(tmp_path):
    path = tmp_path / "r.json"
    rows = [Row("a", "depth", {"ms": Field(1.5)})]
    with pytest.raises(ValueError, match=r"rows\[0\]\.fields\.ms: the number 1.5 has no unit"):
        write_result(path, "sweep", {}, rows, provenance=PROV)
    assert not path.exists()


def test_reading_needs_no_torch(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_valid()))
    code = (
        "import sys; sys.modules['torch'] = None\n"  # import torch now raises ImportError
        "from benchmarks.speed.result import read_result\n"
        f"print(read_result({str(path)!r}).row('fast').value('ms_per_image'))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "500.0"
