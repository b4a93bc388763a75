import torch
from click.testing import CliRunner

from subind.cli import main
from subind.subnetwork import Subnetwork


def test_inspect_prints_density_and_plots(tmp_path):
    sub = Subnetwork(
        {
            "h.0.w": torch.tensor([True, False, False, False]),
            "h.1.w": torch.ones(2, 2, dtype=torch.bool),
        },
        {"subtask": "ab", "val_accuracy": 0.99},
    )
    sub.save(tmp_path / "sub")
    res = CliRunner().invoke(
        main, ["inspect", str(tmp_path / "sub"), "--plot", str(tmp_path / "d.png")]
    )
    assert res.exit_code == 0, res.output
    assert "25.00%" in res.output and "100.00%" in res.output and "62.50%" in res.output
    assert "subtask: ab" in res.output
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


def test_inspect_missing_path_is_one_line_error(tmp_path):
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope")])
    assert res.exit_code == 1
    assert "no subnetwork.safetensors" in res.output and "Traceback" not in res.output


def test_ls_lists_conditions():
    res = CliRunner().invoke(main, ["ls"])
    assert res.exit_code == 0 and "random-subnetwork-inverted" in res.output
