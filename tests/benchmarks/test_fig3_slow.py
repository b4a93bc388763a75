"""The quick preset's first two stages meet their preconditions (about a minute on 2 cores)."""

import pytest

from benchmarks.fig3 import base_model, find_subnetwork
from benchmarks.fig3_config import PRESETS


@pytest.mark.slow
def test_quick_preset_base_model_and_subnetwork_pass_their_checks(tmp_path):
    cfg = PRESETS.get("quick")
    base = base_model(cfg, 2, tmp_path, progress=False)  # raises StageError below 0.99
    sub = find_subnetwork(cfg, 2, base, tmp_path, progress=False)  # raises below 0.99
    assert sub.meta["val_accuracy"] >= 0.99 and sub.meta["test_accuracy"] >= 0.99
    assert 0.0 < sub.density < 0.5
