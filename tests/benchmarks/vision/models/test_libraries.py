"""Any image classifier by name: torchvision:NAME, timm:NAME, hf:ORG/NAME (arch_for)."""

import json
import shutil
import sys

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from benchmarks.vision.models import ARCHS, WeightsError, arch_for, num_outputs, replace_head
from benchmarks.vision.models.libraries import LibraryError, logits_only
from benchmarks.vision.models.preprocessing import from_torchvision_preset
from benchmarks.vision.models.sources import load_pretrained
from subind.masks import add_masks, select_parameters

from .test_sources import RESNET_PRE, _fake_cache, _same_logits, hf_resnet, save_checkpoint


def _masked_layers(model: nn.Module, head: str) -> set[str]:
    """The generic preset written out: the weight of every convolution and Linear (and
    MultiheadAttention's packed in-projection) outside the head."""
    names = set()
    for n, m in model.named_modules():
        if n == head or n.startswith(head + "."):
            continue
        if isinstance(m, nn.Conv2d | nn.Linear):
            names.add(f"{n}.weight")
        if isinstance(m, nn.MultiheadAttention):
            names.add(f"{n}.in_proj_weight")
    return names


def test_short_names_are_the_registry():
    for name in ARCHS:
        assert arch_for(name) is ARCHS.get(name)
    with pytest.raises(ValueError, match="Did you mean 'resnet18'.*torchvision:NAME"):
        arch_for("resnet-18")
    for bad, message in [
        ("torchvision:resnet_18", "torchvision has no classification model 'resnet_18'. Did you mean 'resnet18'"),
        ("torchvision:", "is not a library classifier"),
        ("hf:./no/such/folder", "no such folder"),
    ]:  # fmt: skip
        with pytest.raises(LibraryError, match=message):
            arch_for(bad)


@pytest.mark.parametrize("name", ["resnet18", "vit_b_16", "shufflenet_v2_x0_5", "efficientnet_b0"])
def test_torchvision_names(name):
    arch = arch_for(f"torchvision:{name}")
    assert arch.family == "other" and arch.name == f"torchvision:{name}"
    weights = torchvision.models.get_model_weights(name).DEFAULT
    assert arch.preprocessing == from_torchvision_preset(weights.transforms())
    assert arch.image_size == weights.transforms().crop_size[0]
    with torch.device("meta"):
        model = arch.build(16)
    assert num_outputs(model, arch) == 16
    assert set(select_parameters(model, arch.masked)) == _masked_layers(model, arch.head)
    if name in ARCHS:  # the generic preset is the paper's preset on the paper's models
        assert set(select_parameters(model, ARCHS.get(name).masked)) == set(
            select_parameters(model, arch.masked)
        )
        assert arch.head == ARCHS.get(name).head


def test_torchvision_default_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    arch = arch_for("torchvision:shufflenet_v2_x0_5")
    with pytest.raises(WeightsError, match="not in the torch hub cache") as e:
        load_pretrained(arch, None)
    assert "weights='DEFAULT'" in str(e.value) and "\n" not in str(e.value)
    torch.manual_seed(0)
    model = arch.build(1000)
    url = torchvision.models.get_model_weights("shufflenet_v2_x0_5").DEFAULT.url
    (tmp_path / "checkpoints").mkdir()
    torch.save(model.state_dict(), tmp_path / "checkpoints" / url.rsplit("/", 1)[1])
    p = load_pretrained(arch, "pretrained")
    assert p.classes == 1000 and p.arch is arch
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(p.model(x), model.eval()(x))


def test_timm_names(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    import huggingface_hub.constants

    for name, head in [("test_vit", "head"), ("test_resnet", "fc"), ("test_convnext", "head.fc")]:
        arch = arch_for(f"timm:{name}")
        with torch.device("meta"):
            ref = timm.create_model(name, pretrained=False)
        assert arch.head == head and arch.family == "other"
        assert arch.image_size == ref.pretrained_cfg["input_size"][1]
        with torch.device("meta"):
            model = arch.build(16)
        assert num_outputs(model, arch) == 16
        assert set(select_parameters(model, arch.masked)) == _masked_layers(model, head)
    with pytest.raises(LibraryError, match="timm has no model 'test_vitt'. Did you mean 'test_vit"):
        arch_for("timm:test_vitt")
    # default weights: the timm/ repository in the local Hugging Face cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    arch = arch_for("timm:test_vit")
    with pytest.raises(WeightsError, match=r"\(timm/test_vit.r160_in1k\) are not in the local"):
        load_pretrained(arch, None)
    torch.manual_seed(0)
    model = arch.build(1000)
    (tmp_path / "ckpt").mkdir()
    save_file(model.state_dict(), str(tmp_path / "ckpt" / "model.safetensors"))
    _fake_cache(tmp_path / "hub", "timm/test_vit.r160_in1k", tmp_path / "ckpt")
    p = load_pretrained(arch, None)
    x = torch.randn(1, 3, 160, 160)
    assert p.classes == 1000 and torch.equal(p.model(x), model.eval()(x))


def test_hf_names_run_transformers_models_as_they_are(tmp_path, monkeypatch):
    import huggingface_hub.constants

    hf = hf_resnet(num_labels=16)
    folder = save_checkpoint(hf, tmp_path / "tiny", RESNET_PRE)
    for name in (f"hf:{folder}", "hf:org/tiny-resnet"):
        if name == "hf:org/tiny-resnet":
            monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
            _fake_cache(tmp_path / "hub", "org/tiny-resnet", folder)
        arch = arch_for(name)
        assert arch.head == "classifier.1" and arch.family == "other" and arch.image_size == 64
        assert arch.preprocessing.resize == 73 and arch.preprocessing.crop_rounding == "floor"
        p = load_pretrained(arch, None)
        _same_logits(p.model, hf, 64)
        assert p.classes == 16 and set(p.model.state_dict()) == set(hf.state_dict())
    masked = select_parameters(p.model, arch.masked)
    assert set(masked) == _masked_layers(p.model, "classifier.1") and masked
    # a state dict saved from the harness loads back, and masks and a new head work as usual
    torch.save(p.model.state_dict(), tmp_path / "w.pth")
    again = load_pretrained(arch, tmp_path / "w.pth")
    _same_logits(again.model, hf, 64)
    replace_head(again.model, arch, 3)
    masks = add_masks(again.model, masked)
    out = again.model(torch.randn(2, 3, 64, 64))
    (out.sum() + masks.penalty()).backward()
    assert out.shape == (2, 3) and all(s.grad is not None for s in masks.parameters())
    with pytest.raises(WeightsError, match="another architecture"):
        other = hf_resnet(layer_type="bottleneck", num_labels=16)
        load_pretrained(arch, save_checkpoint(other, tmp_path / "other"))
    with pytest.raises(ValueError, match="org/absent is not in the local Hugging Face cache"):
        arch_for("hf:org/absent")
    broken = shutil.copytree(folder, tmp_path / "broken")
    (broken / "config.json").unlink()
    with pytest.raises(LibraryError, match="has no config.json"):
        arch_for(f"hf:{broken}")


def test_logits_only_keeps_names_and_answers_a_tensor():
    hf = hf_resnet()
    names = list(hf.state_dict())
    x = torch.randn(1, 3, 64, 64)
    expected = hf(pixel_values=x).logits
    model = logits_only(hf)
    assert list(model.state_dict()) == names and torch.equal(model(x), expected)
    assert type(logits_only(hf_resnet())) is type(model)


def test_missing_optional_library_names_the_extra(monkeypatch):
    from benchmarks.vision.models.libraries import _import

    for module, extra in [("timm", "timm"), ("transformers", "hf")]:
        monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like
        with pytest.raises(
            LibraryError, match=rf"{module} is not installed; .*'subind\[{extra}\]'"
        ):
            _import(module)
    with pytest.raises(LibraryError, match=r"pip install 'subind\[timm\]'"):
        arch_for("timm:test_vit")


def test_models_without_a_linear_head_are_refused():
    with pytest.raises(LibraryError, match="cannot find its classifier"):
        arch_for("torchvision:squeezenet1_0")  # a 1x1 convolution classifies


def test_hf_config_without_preprocessor_uses_imagenet_at_its_size(tmp_path):
    folder = save_checkpoint(hf_resnet(), tmp_path / "bare")
    arch = arch_for(f"hf:{folder}")
    assert arch.preprocessing.size == 224 and arch.preprocessing.mean[0] == 0.485
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "image_size": 96}))
    assert arch_for(f"hf:{folder}").image_size == 96
