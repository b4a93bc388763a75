"""Weight sources: transformers checkpoints converted to torchvision modules (same logits), the
local Hugging Face cache, and the preprocessing each source brings."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from benchmarks.vision.models import (
    ARCHS,
    RESNET_MASKED,
    VIT_MASKED,
    ResNetSpec,
    VisionArch,
    ViTSpec,
    WeightsError,
)
from benchmarks.vision.models.convert import (
    read_checkpoint,
    resnet_to_torchvision,
    vit_to_torchvision,
)
from benchmarks.vision.models.libraries import hf_snapshot
from benchmarks.vision.models.preprocessing import HALF, Preprocessing
from benchmarks.vision.models.sources import load_pretrained, resolve_weights
from subind.masks import select_parameters

transformers = pytest.importorskip("transformers")

RESNET_T = VisionArch("resnet-t", 64, 1.0, "fc", RESNET_MASKED,
                      ResNetSpec(widths=(8, 16, 24, 32), blocks=(1, 2, 1, 1)))  # fmt: skip
VIT_T = VisionArch("vit-t", 32, 1.0, "heads.head", VIT_MASKED,
                   ViTSpec(patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32))  # fmt: skip
RESNET_PRE = {"crop_pct": 0.875, "feature_extractor_type": "ConvNextFeatureExtractor",
              "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
              "resample": 3, "size": 64}  # fmt: skip
VIT_PRE = {"feature_extractor_type": "ViTFeatureExtractor", "image_mean": [0.5] * 3,
           "image_std": [0.5] * 3, "resample": 2, "size": 32}  # fmt: skip


def _randomise_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that a swapped or dropped
    BatchNorm entry changes the logits."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.LayerNorm):
            m.weight.data = torch.randn(m.weight.shape, generator=g)
            m.bias.data = torch.randn(m.bias.shape, generator=g)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = torch.randn(m.running_mean.shape, generator=g)
            m.running_var = torch.rand(m.running_var.shape, generator=g) + 0.5
    return model.eval()


def hf_resnet(layer_type="basic", **kw):
    torch.manual_seed(0)
    cfg = dict(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 2, 1, 1], num_labels=5)
    config = transformers.ResNetConfig(layer_type=layer_type, **{**cfg, **kw})
    return _randomise_norms(transformers.ResNetForImageClassification(config))


def hf_vit(**kw):
    torch.manual_seed(0)
    cfg = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
               image_size=32, patch_size=8, num_labels=5)  # fmt: skip
    config = transformers.ViTConfig(**{**cfg, **kw})
    return _randomise_norms(transformers.ViTForImageClassification(config))


def save_checkpoint(model, folder: Path, preprocessor: dict | None = None) -> Path:
    model.save_pretrained(str(folder))
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    base = tmp_path_factory.mktemp("hf")
    resnet, vit = hf_resnet(), hf_vit()
    return {
        "resnet": (resnet, save_checkpoint(resnet, base / "resnet", RESNET_PRE)),
        "vit": (vit, save_checkpoint(vit, base / "vit", VIT_PRE)),
    }


def _same_logits(ours: nn.Module, theirs: nn.Module, size: int) -> None:
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = theirs(pixel_values=x).logits
        assert expected.abs().max() > 1e-2, "a test of non-trivial logits"
        assert torch.allclose(ours(x), expected, atol=1e-5, rtol=0)


def test_hf_resnet_becomes_torchvision_resnet_with_the_same_logits(checkpoints):
    hf, folder = checkpoints["resnet"]
    p = load_pretrained(RESNET_T, folder)
    assert type(p.model).__mro__[1] is ResNet and p.classes == 5 and not p.model.training
    _same_logits(p.model, hf, 64)
    # The checkpoint's preprocessing: shorter side int(64 / 0.875) = 73, crop 64, bicubic.
    assert p.preprocessing == Preprocessing(resize=73, crop=64, interpolation="bicubic",
                                            crop_rounding="floor")  # fmt: skip
    assert p.arch == dataclasses.replace(RESNET_T, preprocessing=p.preprocessing)
    masked = select_parameters(p.model, p.arch.masked)
    assert set(masked) == {
        f"{n}.weight" for n, m in p.model.named_modules() if isinstance(m, nn.Conv2d)
    }
    assert p.source.kind == "transformers" and p.source.tag == "resnet"


def test_hf_bottleneck_resnet_becomes_torchvision_bottlenecks():
    hf = hf_resnet("bottleneck", embedding_size=64, hidden_sizes=[256, 512, 1024, 2048])
    state = resnet_to_torchvision(hf.config.to_dict(), hf.state_dict(), "test")
    ours = ResNet(Bottleneck, [1, 2, 1, 1], num_classes=5).eval()
    ours.load_state_dict(state, strict=True)
    _same_logits(ours, hf, 64)


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_hf_vit_becomes_torchvision_vit_with_the_same_logits(tmp_path, qkv_bias):
    hf = hf_vit(qkv_bias=qkv_bias)
    p = load_pretrained(VIT_T, save_checkpoint(hf, tmp_path / "vit", VIT_PRE))
    _same_logits(p.model, hf, 32)
    assert p.arch.layer_norm_eps == 1e-12 == hf.config.layer_norm_eps
    assert {m.eps for m in p.model.modules() if isinstance(m, nn.LayerNorm)} == {1e-12}
    assert p.preprocessing == Preprocessing(resize=(32, 32), crop=None, mean=HALF, std=HALF,
                                            crop_rounding="floor")  # fmt: skip
    # the same masking preset as torchvision's ViT: in_proj, out_proj, both MLP layers, patches
    assert len(select_parameters(p.model, p.arch.masked)) == 1 + 4 * 2
    # a fresh model of the adapted arch (a transfer's target) has the checkpoint's eps too
    assert {m.eps for m in p.arch.build(16).modules() if isinstance(m, nn.LayerNorm)} == {1e-12}


def test_transformers_5_names_convert_like_the_saved_ones(checkpoints):
    hf, folder = checkpoints["vit"]
    config, saved = read_checkpoint(folder)
    in_memory = hf.state_dict()  # transformers 5 names (vit.layers.N.attention.q_proj, mlp.fc1)
    a, b = vit_to_torchvision(config, saved, "saved"), vit_to_torchvision(config, in_memory, "mem")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_layouts(tmp_path, checkpoints):
    hf, folder = checkpoints["vit"]
    _, state = read_checkpoint(folder)
    for layout in ("bin", "sharded"):
        d = shutil.copytree(folder, tmp_path / layout)
        (d / "model.safetensors").unlink()
        if layout == "bin":
            torch.save(state, d / "pytorch_model.bin")
        else:
            keys = sorted(state)
            halves = {"a.safetensors": keys[::2], "b.safetensors": keys[1::2]}
            for name, ks in halves.items():
                save_file({k: state[k].contiguous() for k in ks}, str(d / name))
            index = {"weight_map": {k: n for n, ks in halves.items() for k in ks}}
            (d / "model.safetensors.index.json").write_text(json.dumps(index))
        _same_logits(load_pretrained(VIT_T, d).model, hf, 32)


def _fake_cache(cache: Path, repo: str, folder: Path) -> None:
    """``folder`` as the Hugging Face cache holds a model repository's main revision."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / sha)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(sha)


def test_hf_urls_resolve_in_the_local_cache_only(tmp_path, checkpoints, monkeypatch):
    import huggingface_hub.constants

    hf, folder = checkpoints["vit"]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    _fake_cache(tmp_path, "org/tiny-vit", folder)
    p = load_pretrained(VIT_T, "hf://org/tiny-vit")
    _same_logits(p.model, hf, 32)
    assert p.source.tag == "tiny-vit" and p.source.given == "hf://org/tiny-vit"
    assert hf_snapshot("org/tiny-vit") == p.source.path
    for missing, fetch in [("hf://org/absent", "hf download org/absent"),
                           ("hf://org/tiny-vit@v2", "hf download org/tiny-vit --revision v2")]:  # fmt: skip
        with pytest.raises(WeightsError, match="not in the local Hugging Face cache") as e:
            load_pretrained(VIT_T, missing)
        assert fetch in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(WeightsError, match="not a Hugging Face repository id"):
        load_pretrained(VIT_T, "hf://just-a-name")


def test_state_dict_files_load_as_before(tmp_path):
    arch = ARCHS.get("vit_b_16-mini")
    torch.manual_seed(0)
    model = arch.build(16)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    p = load_pretrained(arch, tmp_path / "w.pth")
    assert p.arch is arch and p.arch.preprocessing is None and p.classes == 16
    assert all(torch.equal(a, b) for a, b in zip(p.model.state_dict().values(),
                                                 model.state_dict().values(), strict=True))  # fmt: skip
    assert p.source.kind == "file" and p.source.tag == "w"


def test_weight_source_errors_are_one_line(tmp_path, checkpoints):
    hf, folder = checkpoints["vit"]
    resnet_folder = checkpoints["resnet"][1]
    (tmp_path / "empty").mkdir()
    no_weights = shutil.copytree(folder, tmp_path / "no-weights")
    (no_weights / "model.safetensors").unlink()
    convnext = shutil.copytree(folder, tmp_path / "convnext")
    (convnext / "config.json").write_text(json.dumps({"model_type": "convnext"}))
    headless = shutil.copytree(folder, tmp_path / "headless")
    _, state = read_checkpoint(folder)
    save_file({k: v for k, v in state.items() if not k.startswith("classifier")},
              str(headless / "model.safetensors"))  # fmt: skip
    extra = shutil.copytree(folder, tmp_path / "extra")
    save_file({**state, "vit.extra.weight": torch.zeros(1)}, str(extra / "model.safetensors"))
    four_heads = dataclasses.replace(VIT_T, spec=dataclasses.replace(VIT_T.spec, num_heads=4))
    cases = [
        (VIT_T, tmp_path / "absent", "does not exist"),
        (VIT_T, tmp_path / "empty", "folder without config.json"),
        (VIT_T, no_weights, "holds no model.safetensors or pytorch_model.bin"),
        (VIT_T, convnext, "transformers 'convnext' checkpoint; only 'resnet' and 'vit'"),
        (VIT_T, headless, "holds no classifier"),
        (VIT_T, extra, "unexpected key 'vit.extra.weight' for ViT"),
        (four_heads, folder, "has 2 attention heads but the model's"),
        (ARCHS.get("vit_b_16-mini"), folder, "does not fit: 'class_token' has shape"),
        (VIT_T, resnet_folder, r"comes with 64 px preprocessing \(.*\) but vit-t takes 32 px"),
        (ARCHS.get("resnet18"), None, "resnet18 needs weights"),
    ]
    for arch, weights, message in cases:
        with pytest.raises(WeightsError, match=message) as e:
            load_pretrained(arch, weights)
        assert "\n" not in str(e.value)
    odd = hf_resnet(downsample_in_first_stage=True)
    with pytest.raises(WeightsError, match="downsample_in_first_stage=True differs"):
        resnet_to_torchvision(odd.config.to_dict(), odd.state_dict(), "odd")
    assert resolve_weights(str(folder), VIT_T).kind == "transformers"
