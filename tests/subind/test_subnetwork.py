import json

import pytest
import torch
from torch import nn

from subind.subnetwork import Subnetwork


def _model():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_save_load_roundtrip_and_json(tmp_path):
    m0 = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    m2 = torch.zeros(2, 3, dtype=torch.bool)
    m2[0, 1] = True
    sub = Subnetwork({"0.weight": m0, "2.weight": m2}, {"subtask": "ab", "lambda": 1e-7})
    sub.save(tmp_path)
    back = Subnetwork.load(tmp_path)
    assert set(back.masks) == {"0.weight", "2.weight"}
    assert torch.equal(back.masks["0.weight"], m0) and torch.equal(back.masks["2.weight"], m2)
    meta = json.loads((tmp_path / "subnetwork.json").read_text())
    assert meta["kept"] == 7 and meta["total"] == 18
    assert meta["density"] == pytest.approx(7 / 18)
    assert meta["per_tensor"]["0.weight"] == {"kept": 6, "total": 12, "density": 0.5}
    assert meta["subtask"] == "ab"
    back.check_compatible(_model())


def test_check_compatible_errors():
    sub = Subnetwork({"0.weight": torch.ones(3, 5, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"shape \(3, 5\).*\(3, 4\)"):
        sub.check_compatible(_model())
    sub = Subnetwork({"9.weight": torch.ones(3, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="name no parameter"):
        sub.check_compatible(_model())


def test_load_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no subnetwork.safetensors"):
        Subnetwork.load(tmp_path)
