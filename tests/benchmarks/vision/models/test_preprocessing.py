"""Preprocessing read from each weight source, checked against the libraries' own transforms."""

import dataclasses
import json

import pytest
import torch
import torchvision

from benchmarks.vision.data import eval_transform
from benchmarks.vision.models import ARCHS
from benchmarks.vision.models.preprocessing import (
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    PreprocessingError,
    from_timm_config,
    from_torchvision_preset,
    from_transformers,
)
from tests.benchmarks.vision.helpers import image

# microsoft/resnet-18's and google/vit-base-patch16-224's preprocessor_config.json (the legacy
# feature-extractor format, as on the Hub), and the current format of the ResNet one.
RESNET18_HF = {"crop_pct": 0.875, "do_normalize": True, "do_resize": True,
               "feature_extractor_type": "ConvNextFeatureExtractor", "image_mean": list(IMAGENET_MEAN),
               "image_std": list(IMAGENET_STD), "resample": 3, "size": 224}  # fmt: skip
VIT_HF = {"do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
          "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": 2, "size": 224}  # fmt: skip
RESNET18_HF_NEW = {"image_processor_type": "ConvNextImageProcessor", "crop_pct": 0.875,
                   "size": {"shortest_edge": 224}, "image_mean": list(IMAGENET_MEAN),
                   "image_std": list(IMAGENET_STD), "resample": 3}  # fmt: skip
# Another crop_pct than the default 0.875: read, not assumed (shorter side int(224 / 0.95) = 235).
RESNET18_HF_CROP95 = {**RESNET18_HF_NEW, "crop_pct": 0.95}
# Sizes whose margins after resizing are odd, even and 3 mod 4 (where crop offsets may round
# differently), portrait and landscape.
SIZES = [(403, 300), (405, 300), (300, 403), (700, 257), (225, 225), (333, 500)]


def _arch_with(pre: Preprocessing):
    return dataclasses.replace(ARCHS.get("resnet18"), image_size=pre.size, preprocessing=pre)


def test_transformers_configs_read_as_verified():
    assert from_transformers(RESNET18_HF) == Preprocessing(
        resize=256, crop=224, interpolation="bicubic", crop_rounding="floor"
    )
    assert from_transformers(RESNET18_HF_NEW) == from_transformers(RESNET18_HF)
    assert from_transformers(RESNET18_HF_CROP95).resize == 235
    assert from_transformers(VIT_HF) == Preprocessing(
        resize=(224, 224), crop=None, interpolation="bilinear", mean=HALF, std=HALF,
        crop_rounding="floor",
    )  # fmt: skip
    # ConvNeXt from 384 px on: a square warp, no crop; defaults: mean = std = 0.5, bicubic.
    big = from_transformers({"image_processor_type": "ConvNextImageProcessor", "size": 384})
    assert big.resize == (384, 384) and big.crop is None and big.mean == HALF
    assert big.interpolation == "bicubic"
    crop = from_transformers({"image_processor_type": "DeiTImageProcessor", "do_center_crop": True,
                              "size": {"height": 256, "width": 256}, "crop_size": 224,
                              "image_mean": [0.1, 0.2, 0.3], "image_std": [1, 1, 1]})  # fmt: skip
    assert crop.resize == (256, 256) and crop.crop == 224 and crop.mean == (0.1, 0.2, 0.3)


def _hf_processors(folder):
    """transformers' processor for the config in ``folder``: its PIL and torchvision backends
    (transformers 5), or the slow and fast processors (transformers 4)."""
    from transformers import AutoImageProcessor

    try:
        return {
            "pil": AutoImageProcessor.from_pretrained(str(folder), backend="pil"),
            "torchvision": AutoImageProcessor.from_pretrained(str(folder), backend="torchvision"),
        }
    except TypeError:
        return {
            "pil": AutoImageProcessor.from_pretrained(str(folder), use_fast=False),
            "torchvision": AutoImageProcessor.from_pretrained(str(folder), use_fast=True),
        }


@pytest.mark.parametrize("config", [RESNET18_HF, VIT_HF, RESNET18_HF_NEW, RESNET18_HF_CROP95])
def test_transformers_preprocessing_matches_its_image_processor(tmp_path, config):
    pytest.importorskip("transformers")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    pre = from_transformers(config)
    ours = eval_transform(_arch_with(pre))
    processors = _hf_processors(tmp_path)
    # Tolerances: the PIL backend resizes with PIL as we do, so the tensors agree to float
    # rounding (1e-6). The torchvision backend resizes uint8 tensors with its own kernels: at most
    # 2 grey levels apart per pixel (0-255 units; bicubic overshoots round differently), 0.05 on
    # average.
    std = torch.tensor(pre.std)[:, None, None]
    for i, (w, h) in enumerate(SIZES):
        img = image(i, 16).resize((w, h))
        x = ours(img)
        for backend, proc in processors.items():
            theirs = proc(img, return_tensors="pt")["pixel_values"][0]
            assert theirs.shape == x.shape == (3, 224, 224)
            if backend == "pil":
                assert (theirs - x).abs().max() <= 1e-6, (w, h)
            else:
                levels = (theirs - x).abs() * std * 255
                assert levels.max() <= 2 + 1e-3 and levels.mean() <= 0.05, (w, h)


@pytest.mark.parametrize("name", ["vit_b_16", "efficientnet_b0", "shufflenet_v2_x0_5"])
def test_torchvision_weight_presets_match_their_transforms(name):
    preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    pre = from_torchvision_preset(preset)
    ours = eval_transform(_arch_with(pre))
    for i, (w, h) in enumerate(SIZES[:4]):
        img = image(i, 16).resize((w, h))
        assert torch.equal(ours(img), preset(img)), (name, w, h)


@pytest.mark.parametrize("name", ["test_vit", "test_resnet"])
def test_timm_configs_match_timm_transforms(name):
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    cfg = timm.data.resolve_data_config(model=model)
    theirs = timm.data.create_transform(**cfg)
    for mode in ("center", "squash"):
        cfg = {**cfg, "crop_mode": mode}
        theirs = timm.data.create_transform(**cfg)
        ours = eval_transform(_arch_with(from_timm_config(cfg)))
        for i, (w, h) in enumerate(SIZES[:4]):
            img = image(i, 16).resize((w, h))
            assert torch.equal(ours(img), theirs(img)), (name, mode, w, h)


def test_preprocessing_round_trips_and_describes_itself():
    pre = from_transformers(VIT_HF)
    d = pre.to_dict()
    assert json.loads(json.dumps(d)) == d and d["resize"] == [224, 224]
    assert Preprocessing.from_dict(d) == pre and hash(Preprocessing.from_dict(d)) == hash(pre)
    assert pre.size == 224 and "resize to 224x224 px" in pre.describe()
    assert (
        Preprocessing.imagenet(224, 256 / 224)
        .describe()
        .startswith("shorter side 256 px, centre crop 224 px, bilinear")
    )


def test_bad_preprocessing_is_a_one_line_error():
    cases = {
        "interpolation 'cubic'": dict(resize=256, crop=224, interpolation="cubic"),
        "does not give square images": dict(resize=256, crop=None),
        "crop_rounding 'up'": dict(resize=256, crop=224, crop_rounding="up"),
        "std > 0": dict(resize=256, crop=224, std=(0, 1, 1)),
        "sizes must be >= 1": dict(resize=0, crop=224),
    }
    for message, kwargs in cases.items():
        with pytest.raises(PreprocessingError, match=message) as e:
            Preprocessing(**kwargs)
        assert "\n" not in str(e.value)
    with pytest.raises(PreprocessingError, match="unknown preprocessing field 'size'"):
        Preprocessing.from_dict({"size": 3})
    bad = {
        "padding": {**VIT_HF, "do_pad": True},
        "rescaling by 1/255": {**VIT_HF, "rescale_factor": 1 / 127.5},
        "crop_pct is only supported": {**VIT_HF, "crop_pct": 0.9},
        "not a square size": {**VIT_HF, "do_center_crop": True, "crop_size": {"height": 2, "width": 3}},
        "names no image_mean": {"image_processor_type": "CLIPImageProcessor", "size": 224},
        "longest_edge": {**VIT_HF, "size": {"longest_edge": 300}},
        "unknown resample": {**VIT_HF, "resample": 9},
    }  # fmt: skip
    for message, config in bad.items():
        with pytest.raises(PreprocessingError, match=message):
            from_transformers(config)
    with pytest.raises(PreprocessingError, match="crop_mode 'border'"):
        from_timm_config({"input_size": (3, 224, 224), "crop_mode": "border"})
    with pytest.raises(ValueError, match="takes 32 px images but its preprocessing gives 224 px"):
        dataclasses.replace(ARCHS.get("resnet18-mini"), preprocessing=from_transformers(VIT_HF))
    with pytest.raises(ValueError, match="unknown train_crop 'random'"):
        dataclasses.replace(ARCHS.get("resnet18-mini"), train_crop="random")
