"""A run's training (benchmarks.vision.training.train_run) on the tiny world."""

import dataclasses

import pytest
import torch

from benchmarks.vision.config import PRESETS
from benchmarks.vision.grid import Run
from benchmarks.vision.inputs import resolve_inputs
from benchmarks.vision.training import run_cost, train_run

TINY = dataclasses.replace(PRESETS.get("tiny"), steps=2, eval_every=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("training")
    return resolve_inputs(TINY, out), out


@pytest.mark.parametrize(("model", "channels_last"), [("resnet18-mini", True),
                                                      ("vit_b_16-mini", False)])  # fmt: skip
def test_a_cnn_trains_channels_last_on_cpu_and_a_vit_as_it_is(tiny, model, channels_last):
    inputs, out = tiny
    entry, data = inputs.models[model], inputs.image_sets(model, TINY)
    torch.manual_seed(0)
    net = entry.arch.build(16)
    fields = train_run(TINY, Run(model, "scratch", "reinit", 0), entry, net, data.train, data,
                       out, torch.device("cpu"), 0, 1, False)  # fmt: skip
    assert fields["steps"] == 2 and len(fields["curve"]) == 1
    weights = [p for p in net.parameters() if p.dim() == 4]
    assert weights  # the ResNet's convolutions, the ViT's patch embedding
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert all(p.is_contiguous(memory_format=fmt) for p in weights)
    # a 3 x 3 kernel over several channels is contiguous in one layout only
    assert any(p.shape[1] > 1 and p.shape[2] > 1 for p in weights)


def test_run_cost_counts_the_images_a_run_trains_on():
    mini = PRESETS.get("mini")  # ViT 500 steps, ResNet 300, batch 64 both
    vit = run_cost(mini, Run("vit_b_16-mini", "scratch", "reinit", 0), "vit", 10)
    resnet = run_cost(mini, Run("resnet18-mini", "scratch", "reinit", 0), "resnet", 10)
    assert (vit, resnet) == (500 * 64, 300 * 64)
    assert run_cost(mini, Run("resnet18-mini", "pretrained", "inherit", 0), "resnet", 10) == 0
    released = dataclasses.replace(mini, mixture_recipe="released")  # 5 epochs (ResNet)
    assert run_cost(released, Run("resnet18-mini", "data-mixture", "reinit", 0), "resnet", 10) == 50
