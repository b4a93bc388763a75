"""subind-bench dispatches through the experiment registry: every experiment gets its own
`run NAME --help` with its own options, `ls NAME` lists its config fields, and `report` finds
the experiment of an output folder."""

import dataclasses
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from benchmarks.cli import main
from benchmarks.experiments import EXPERIMENTS, experiment_of
from subind.io import append_jsonl


@pytest.mark.parametrize("name", EXPERIMENTS.names())
def test_every_experiment_has_its_own_options_and_fields(name):
    exp = EXPERIMENTS.get(name)
    res = CliRunner().invoke(main, ["run", name, "--help"])
    assert res.exit_code == 0, res.output
    for o in exp.options:
        assert (o.flag.split("/")[0] in res.output) != o.hidden, o.flag
    others = {o.flag for e in EXPERIMENTS for o in EXPERIMENTS.get(e).options} - {
        o.flag for o in exp.options
    }
    assert not [f for f in others if f"{f} " in res.output]  # no other experiment's option
    res = CliRunner().invoke(main, ["ls", name])
    assert res.exit_code == 0
    for f in dataclasses.fields(exp.config_class):
        assert f"| {f.name} |" in res.output
    assert exp.default_preset in exp.presets


def test_run_and_ls_suggest_a_known_experiment():
    for args in (["run", "tabel1"], ["ls", "tabel1"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and "Did you mean 'table1'" in res.output


def test_report_finds_the_experiment_from_config_or_older_layouts(tmp_path):
    out = tmp_path / "a"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"experiment": "fig9", "config": {}}))
    assert experiment_of(out).name == "fig9"
    old = tmp_path / "old"  # written before config.json named the experiment
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"config": {}}))
    append_jsonl(old / "results.jsonl", {"key": "k", "experiment": "table1"})
    assert experiment_of(old).name == "table1"
    (old / "experiment.json").write_text(json.dumps({"experiment": "fig10"}))
    assert experiment_of(old).name == "fig10"


def test_the_cli_does_not_load_the_vision_stack_until_a_vision_run():
    code = (
        "import sys; from click.testing import CliRunner; from benchmarks.cli import main;"
        "r = CliRunner().invoke(main, ['ls']); assert r.exit_code == 0, r.output;"
        "r = CliRunner().invoke(main, ['run', 'table1', '--help']); assert r.exit_code == 0;"
        "print('torchvision' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False"
