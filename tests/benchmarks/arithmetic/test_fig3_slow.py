"""The quick preset's first two stages meet their preconditions (about a minute on 2 cores)."""

import pytest

from benchmarks.arithmetic.config import PRESETS
from benchmarks.arithmetic.stages import base_model, find_subnetwork


@pytest.mark.slow
def test_quick_preset_base_model_and_subnetwork_pass_their_checks(tmp_path):
    cfg = PRESETS.get("quick")
    base = base_model(cfg, 2, tmp_path, progress=False)  # raises StageError below 0.99
    sub = find_subnetwork(cfg, 2, base, tmp_path, progress=False)  # raises below 0.99
    assert sub.meta["val_accuracy"] >= 0.99 and sub.meta["test_accuracy"] >= 0.99
    assert 0.0 < sub.density < 0.5


@pytest.mark.slow
@pytest.mark.parametrize("source_task,subtask", [("a^2+b^2", "a^2"), ("a^2+ab", "a+b")])
def test_quick_preset_meets_the_preconditions_of_the_appendix_b4_subnetworks(
    tmp_path, source_task, subtask
):
    """fig9 and fig10's other subnetworks with fig3's quick settings (about 1 and 4 minutes)."""
    import dataclasses

    cfg = dataclasses.replace(PRESETS.get("quick"), source_task=source_task, subtask=subtask)
    sub = find_subnetwork(cfg, 2, base_model(cfg, 2, tmp_path, progress=False), tmp_path, False)
    assert sub.meta["val_accuracy"] >= 0.99 and 0.0 < sub.density < 0.5
