import dataclasses
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from benchmarks.vision.data import (
    FileImages,
    PooledImages,
    _rgb,
    eval_transform,
    train_transform,
)
from benchmarks.vision.models import ARCHS
from benchmarks.vision.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

from .helpers import image, write_pooled


@pytest.mark.parametrize("name", ARCHS.names())
def test_transforms_give_normalised_chw(name):
    arch = ARCHS.get(name)
    S = arch.image_size
    for img in (image(0, 300).resize((300, 240)), Image.new("L", (50, 70), 128)):
        for t in (eval_transform(arch), train_transform(arch)):
            x = t(img)
            assert x.shape == (3, S, S) and x.dtype == torch.float32
    grey = eval_transform(arch)(Image.new("RGB", (S, S), (124, 116, 104)))  # ~ the mean colour
    assert grey.abs().max() < 0.03
    white = eval_transform(arch)(Image.new("RGB", (S, S), (255, 255, 255)))
    expect = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert torch.allclose(white[:, 0, 0], torch.tensor(expect), atol=1e-5)


def test_eval_transform_resizes_then_centre_crops():
    arch = ARCHS.get("resnet18")
    img = Image.new("RGB", (512, 256), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 128, 256))  # white left quarter: cropped away
    x = eval_transform(arch)(img)  # 256 -> 256 px high, 512 wide; centre 224 crop
    assert x.shape == (3, 224, 224) and x[0].max() < 0  # all black after normalising


def test_file_images(tmp_path):
    for i in range(3):
        image(i).save(tmp_path / f"{i}.png")
    ds = FileImages(
        tmp_path,
        [(f"{i}.png", 10 + i) for i in range(3)],
        eval_transform(ARCHS.get("resnet18-mini")),
    )
    assert len(ds) == 3 and ds.labels == [10, 11, 12]
    x, y = ds[2]
    assert x.shape == (3, 32, 32) and y == 12
    raw, _ = FileImages(tmp_path, [("0.png", 0)], None)[0]
    assert isinstance(raw, Image.Image) and raw.mode == "RGB"


def test_pooled_images_hold_a_subset_and_its_sources(tmp_path):
    labels = [3, 1, 4, 1, 5, 9, 2]
    write_pooled(tmp_path, "val", labels)
    write_pooled(tmp_path, "evaluation", [0, 0])
    ds = PooledImages(tmp_path, "val", eval_transform(ARCHS.get("vit_b_16-mini")))
    assert len(ds) == 7 and ds.labels == labels
    assert ds.sources == [f"val/x/{i:03d}.JPEG" for i in range(7)]
    x, y = ds[4]
    assert x.shape == (3, 32, 32) and y == 5
    assert len(PooledImages(tmp_path, "evaluation", None)) == 2
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        PooledImages(tmp_path, "discovery", None)


def test_pooled_images_from_an_hf_subfolder(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    local = write_pooled(tmp_path / "local", "val", [2, 7, 2, 6])
    # The Hugging Face cache layout of a dataset repo holding <subset>/ folders.
    repo = tmp_path / "hf" / "datasets--org--pooled"
    shutil.copytree(local, repo / "snapshots" / ("a" * 40) / "val")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    ds = PooledImages("hf://datasets/org/pooled", "val", None, cache_dir=str(tmp_path / "hf"))
    assert (
        ds.labels == [2, 7, 2, 6]
        and ds.sources == PooledImages(tmp_path / "local", "val", None).sources
    )


# ------------------------------------------------------------------ preprocessing per architecture
def _old_eval(arch):
    """The transforms as they were before architectures carried a preprocessing."""
    S = arch.image_size
    return T.Compose([T.Lambda(_rgb), T.Resize(round(S * arch.resize_ratio), antialias=True),
                      T.CenterCrop(S), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])  # fmt: skip


def _old_train(arch):
    S = arch.image_size
    steps = [T.Lambda(_rgb)]
    if arch.train_crop == "random-resized":
        steps.append(T.RandomResizedCrop(S, antialias=True))
    elif arch.train_crop == "pad":
        steps += [T.Resize(S, antialias=True), T.CenterCrop(S),
                  T.RandomCrop(S, padding=max(1, S // 16), padding_mode="reflect")]  # fmt: skip
    else:
        steps += [T.Resize(round(S * arch.resize_ratio), antialias=True), T.CenterCrop(S)]
    if arch.train_flip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


@pytest.mark.parametrize("name", ARCHS.names())
def test_default_preprocessing_gives_the_old_transforms_bit_for_bit(name):
    arch = ARCHS.get(name)
    assert arch.preprocessing is None
    assert arch.resolved_preprocessing == Preprocessing.imagenet(arch.image_size, arch.resize_ratio)
    images = [image(0, 300).resize((301, 243)), Image.new("L", (50, 70), 128), image(3, 97)]
    variants = [arch, dataclasses.replace(arch, train_crop="none", train_flip=False)]
    for a in variants:
        for img in images:
            assert torch.equal(eval_transform(a)(img), _old_eval(a)(img))
            for seed in range(3):
                torch.manual_seed(seed)
                new = train_transform(a)(img)
                torch.manual_seed(seed)
                assert torch.equal(new, _old_train(a)(img))


def test_resize_crop_is_the_released_resnet_recipe():
    arch = dataclasses.replace(ARCHS.get("resnet18"), train_crop="resize-crop", train_flip=False)
    img = image(5, 300).resize((400, 300))
    resized = T.Compose([T.Resize(256, antialias=True), T.ToTensor(),
                         T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(img)  # fmt: skip
    assert resized.shape == (3, 256, 341)
    offsets = set()
    for seed in range(4):
        torch.manual_seed(seed)
        x = train_transform(arch)(img)
        assert x.shape == (3, 224, 224)
        found = [(i, j) for i in range(256 - 224 + 1) for j in range(341 - 224 + 1)
                 if torch.equal(resized[:, i, j:j + 224], x[:, 0])
                 and torch.equal(resized[:, i:i + 224, j:j + 224], x)]  # fmt: skip
        assert len(found) == 1, "a 224 px window of the image resized to 256 px"
        offsets.add(found[0])
    assert len(offsets) > 1, "the crop is random"
    flipped = dataclasses.replace(arch, train_flip=True)
    torch.manual_seed(0)
    a = train_transform(flipped)(img)
    assert a.shape == (3, 224, 224)


def test_transforms_follow_the_arch_preprocessing():
    pre = Preprocessing(resize=(40, 40), crop=None, interpolation="nearest", mean=(0.5,) * 3,
                        std=(0.5,) * 3, crop_rounding="floor")  # fmt: skip
    arch = dataclasses.replace(ARCHS.get("resnet18-mini"), image_size=40, preprocessing=pre)
    white = Image.new("RGB", (90, 60), (255, 255, 255))
    x = eval_transform(arch)(white)
    assert x.shape == (3, 40, 40) and torch.allclose(x, torch.ones_like(x))  # (1 - .5) / .5
    for crop in ("random-resized", "pad", "none", "resize-crop"):
        y = train_transform(dataclasses.replace(arch, train_crop=crop))(white)
        assert y.shape == (3, 40, 40) and torch.allclose(y, torch.ones_like(y)), crop
    # A floor-rounded centre crop: the margin 3 (= 3 mod 4) puts the crop at row 1, not 2.
    pre = Preprocessing(resize=None, crop=4, crop_rounding="floor", mean=(0,) * 3, std=(1,) * 3)
    rows = Image.fromarray(np.repeat(np.arange(7, dtype=np.uint8)[:, None, None] * 30, 7, 1)
                           .repeat(3, 2))  # fmt: skip
    arch = dataclasses.replace(ARCHS.get("resnet18-mini"), image_size=4, preprocessing=pre)
    x = eval_transform(arch)(rows)
    assert torch.allclose(x[0, :, 0] * 255, torch.tensor([30.0, 60, 90, 120]))
    rounded = dataclasses.replace(
        arch, preprocessing=dataclasses.replace(pre, crop_rounding="round")
    )
    assert torch.allclose(
        eval_transform(rounded)(rows)[0, :, 0] * 255, torch.tensor([60.0, 90, 120, 150])
    )
