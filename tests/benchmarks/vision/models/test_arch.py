import pytest
import torch
import torchvision
from torch import nn

from benchmarks.vision.models import ARCHS
from benchmarks.vision.models.weights import (
    WeightsError,
    head_outputs,
    load_weights,
    num_outputs,
    read_weights,
    replace_head,
)
from subind.masks import add_masks, select_parameters

MINI = [n for n in ARCHS if n.endswith("-mini")]
PAPER = {"resnet18": torchvision.models.resnet18, "vit_b_16": torchvision.models.vit_b_16}


def _expected_masked(name: str, model: nn.Module) -> set[str]:
    """The paper's preset written out independently of MaskSelection."""
    if "resnet" in name:
        return {f"{m}.weight" for m, mod in model.named_modules() if isinstance(mod, nn.Conv2d)}
    names = {"conv_proj.weight"}
    for i in range(len(model.encoder.layers)):
        p = f"encoder.layers.encoder_layer_{i}."
        names |= {
            p + "self_attention.in_proj_weight",
            p + "self_attention.out_proj.weight",
            p + "mlp.0.weight",
            p + "mlp.3.weight",
        }
    return names


@pytest.mark.parametrize("name", ARCHS.names())
def test_masked_selection_is_the_paper_preset(name):
    arch = ARCHS.get(name)
    with torch.device("meta"):  # names and shapes only: no memory, no init time
        model = arch.build(16)
    names = select_parameters(model, arch.masked)
    assert set(names) == _expected_masked(name, model)
    assert not any(n.startswith(arch.head) for n in names)
    assert num_outputs(model, arch) == 16


@pytest.mark.parametrize("name", MINI)
def test_mini_forward_backward_every_parameter_learns(name):
    arch = ARCHS.get(name)
    torch.manual_seed(0)
    model = arch.build(16)
    torch.manual_seed(0)
    again = arch.build(16)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values(), strict=True))  # fmt: skip
    # torchvision zero-initialises ViT's head, which stops every gradient behind it at step 0.
    replace_head(model, arch, 16)
    x = torch.randn(4, 3, arch.image_size, arch.image_size)
    logits = model(x)
    assert logits.shape == (4, 16) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} gets no gradient"


@pytest.mark.parametrize("name", MINI)
def test_masks_train_only_scores_on_mini(name):
    arch = ARCHS.get(name)
    model = arch.build(16)
    replace_head(model, arch, 16)
    masks = add_masks(model, select_parameters(model, arch.masked))
    before = {k: v.clone() for k, v in model.state_dict().items() if "original" in k}
    loss = model(torch.randn(2, 3, arch.image_size, arch.image_size)).sum() + masks.penalty()
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in masks.parameters())
    assert all(not p.requires_grad for p in model.parameters() if p not in set(masks.parameters()))
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_archs_are_torchvision_models(name):
    device = "cpu" if name == "resnet18" else "meta"  # ViT-B takes seconds to initialise
    with torch.device(device):
        torch.manual_seed(0)
        ours = ARCHS.get(name).build(10).state_dict()
        torch.manual_seed(0)
        theirs = PAPER[name](num_classes=10).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    if name == "resnet18":  # same classes and init order: the same numbers
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    mini = ARCHS.get(f"{name}-mini").build(10).state_dict()
    assert set(mini) <= set(theirs), "mini models keep the paper model's parameter names"


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_arch_forward_backward_at_224(name):
    arch = ARCHS.get(name)
    model = replace_head(arch.build(1000), arch, 16)
    x = torch.randn(1, 3, arch.image_size, arch.image_size)
    model(x).logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


# ---------------------------------------------------------------------------- weight files
@pytest.fixture
def mini():
    arch = ARCHS.get("resnet18-mini")
    torch.manual_seed(0)
    return arch, arch.build(16)


def test_weights_round_trip_pth_safetensors_and_wrappers(tmp_path, mini):
    from safetensors.torch import save_file

    arch, model = mini
    sd = model.state_dict()
    torch.save(sd, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pt")
    # torchvision's 2017 ResNet files predate BatchNorm's num_batches_tracked buffer.
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    for f in ("w.pth", "w.safetensors", "ddp.pt", "old.pth"):
        torch.manual_seed(1)
        other = arch.build(16)
        load_weights(other, tmp_path / f)
        loaded = other.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in old.items())
    assert head_outputs(read_weights(tmp_path / "w.pth"), arch) == 16


def test_weight_errors_are_one_line_and_leave_the_model_alone(tmp_path, mini):
    arch, model = mini
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    cases = {
        "shape": {**sd, "fc.weight": torch.zeros(1000, 128), "fc.bias": torch.zeros(1000)},
        "missing": {k: v for k, v in sd.items() if k != "layer2.0.bn1.running_mean"},
        "unexpected": {**sd, "extra.weight": torch.zeros(1)},
    }
    expect = {
        "shape": r"'fc.weight' has shape \(1000, 128\) in the file but \(16, 128\) in the model",
        "missing": "missing key 'layer2.0.bn1.running_mean'",
        "unexpected": "unexpected key 'extra.weight'",
    }
    for case, bad in cases.items():
        torch.save(bad, tmp_path / f"{case}.pth")
        with pytest.raises(WeightsError, match=expect[case]) as e:
            load_weights(model, tmp_path / f"{case}.pth")
        assert "\n" not in str(e.value) and "check --arch" in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        read_weights(tmp_path / "list.pth")
    torch.save(model, tmp_path / "module.pth")  # a pickled module: not loadable weights_only
    with pytest.raises(WeightsError, match="cannot be read as weights") as e:
        read_weights(tmp_path / "module.pth")
    assert "\n" not in str(e.value)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot be read as weights"):
        read_weights(tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        read_weights(tmp_path / "absent.pth")
    vit = ARCHS.get("vit_b_16-mini")
    with pytest.raises(WeightsError, match="no 2-D 'heads.head.weight'"):
        head_outputs(sd, vit)


def test_replace_head(mini):
    arch, model = mini
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    replace_head(model, arch, 7)
    assert num_outputs(model, arch) == 7 and model.fc.weight.shape == (7, 128)
    assert all(torch.equal(body[k], model.state_dict()[k]) for k in body)
    vit = ARCHS.get("vit_b_16-mini")
    m = replace_head(vit.build(1000), vit, 16)
    assert isinstance(m.heads.head, nn.Linear) and num_outputs(m, vit) == 16
