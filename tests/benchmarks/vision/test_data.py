import shutil

import pytest
import torch
from PIL import Image

from benchmarks.vision.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FileImages,
    PooledImages,
    eval_transform,
    train_transform,
)
from benchmarks.vision.models import ARCHS

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
