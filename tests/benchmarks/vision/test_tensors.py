"""The synthetic world's images held as tensors give what the per-image transforms give: the
same normalised pixels, augmentations from the same family, DistributedSampler's order."""

import dataclasses

import pytest
import torch
from torch.utils.data import DistributedSampler, TensorDataset

from benchmarks.vision.config import PRESETS
from benchmarks.vision.data import FileImages, epoch_loader, eval_transform, train_transform
from benchmarks.vision.inputs import resolve_inputs
from benchmarks.vision.models import ARCHS
from benchmarks.vision.tensors import Augment, ImageTensors, supports

TINY = PRESETS.get("tiny")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve_inputs(TINY, tmp_path_factory.mktemp("tensors"))


@pytest.mark.parametrize("model", ["resnet18-mini", "vit_b_16-mini"])
def test_tensor_images_are_the_transforms_images(tiny, model):
    arch = tiny.models[model].arch
    sets = tiny.image_sets(model, TINY)
    assert isinstance(sets.evaluation, ImageTensors) and isinstance(sets.train, ImageTensors)
    files = FileImages(sets.root, [(it.rel, it.label) for it in sets.evaluation_items],
                       eval_transform(arch))  # fmt: skip
    for i in range(len(files)):
        x, y = sets.evaluation[i]
        fx, fy = files[i]
        assert y == fy and torch.equal(x, fx), i
    ready = tiny.ready_images(model, TINY)
    pooled = tiny.eval_images().pooled.with_transform(eval_transform(arch))
    assert torch.equal(ready.pooled[3][0], pooled[3][0])


def test_the_pad_augmentation_is_a_crop_of_the_reflect_padded_image_maybe_flipped(tiny):
    arch = ARCHS.get("resnet18-mini")
    augment = Augment.of(arch)
    assert (augment.pad, augment.flip) == (2, True)
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(0)
    out = augment(x)
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    shifts, flips = set(), 0
    for i in range(len(x)):
        found = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (0, 1)
                 if torch.equal(out[i], (padded[i, :, dy:dy + 32, dx:dx + 32].flip(2) if f
                                         else padded[i, :, dy:dy + 32, dx:dx + 32]))]  # fmt: skip
        assert found, i
        shifts.add(found[0][:2])
        flips += found[0][2]
    assert len(shifts) > 5 and 0 < flips < len(x)  # random crops and flips, not a fixed one
    # the per-image transform of the same arch does the same family of crops
    assert "RandomCrop(size=(32, 32), padding=2" in repr(train_transform(arch))


def test_epochs_follow_distributed_samplers_order_and_drop_last():
    data = ImageTensors(torch.zeros(11, 3, 2, 2, dtype=torch.uint8), torch.arange(11),
                        (0, 0, 0), (1, 1, 1))  # fmt: skip
    for rank, world, batch in [(0, 1, 3), (1, 2, 3), (0, 2, 10)]:
        ours = epoch_loader(data, batch, seed=5, workers=0, rank=rank, world=world)
        sampler = DistributedSampler(TensorDataset(torch.arange(11)), world, rank, seed=5)
        sampler.set_epoch(2)
        order = list(sampler)
        assert ours.indices(2).tolist() == order
        drop = len(data) // world >= batch
        want = [order[i : i + batch] for i in range(0, len(order), batch)]
        if drop:
            want = [b for b in want if len(b) == batch]
        assert [y.tolist() for _, y in ours(2)] == want and len(ours) == len(want)


def test_only_worlds_whose_transforms_are_no_ops_take_the_tensor_path():
    arch = ARCHS.get("resnet18-mini")
    assert supports(arch, 32) and not supports(arch, 64)
    assert not supports(dataclasses.replace(arch, train_crop="resize-crop"), 32)
    assert not supports(ARCHS.get("resnet18"), 32)


def test_tensor_images_false_reads_every_image_through_its_transforms(tiny):
    sets = tiny.image_sets("resnet18-mini", dataclasses.replace(TINY, tensor_images=False))
    assert isinstance(sets.train, FileImages) and isinstance(sets.evaluation, FileImages)
    assert (
        tiny.ready_images("resnet18-mini", dataclasses.replace(TINY, tensor_images=False)) is None
    )
