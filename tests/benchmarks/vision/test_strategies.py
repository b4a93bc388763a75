"""The strategy registry as the test matrix (timm style): every strategy on both mini
architectures builds a model that runs forward and backward without NaN, gives every trainable
parameter a gradient, keeps its frozen entries bit-for-bit through an SGD step with weight decay,
and leaves the pretrained and Linear FT models untouched."""

import copy

import pytest
import torch

from benchmarks.vision.models import ARCHS, replace_head
from benchmarks.vision.strategies import STRATEGIES, StrategyInputs
from subind.masks import select_parameters
from subind.subnetwork import Subnetwork
from subind.transfer import effective_parameters

MINI = ["resnet18-mini", "vit_b_16-mini"]


def _frozen_masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """{parameter name: mask of its frozen (transferred) entries} from the transfer
    parametrizations."""
    out = {}
    for mod_name, mod in model.named_modules():
        for pname, plist in getattr(mod, "parametrizations", {}).items():
            for p in plist:
                if hasattr(p, "mask"):
                    out[f"{mod_name}.{pname}" if mod_name else pname] = p.mask
    return out


def _inputs(arch_name: str, unmasked: str) -> StrategyInputs:
    arch = ARCHS.get(arch_name)
    torch.manual_seed(0)
    pretrained = arch.build(20).eval()
    linear = replace_head(copy.deepcopy(pretrained), arch, 16).eval()
    names = select_parameters(linear, arch.masked)
    g = torch.Generator().manual_seed(1)
    params = dict(linear.named_parameters())
    masks = {n: torch.rand(params[n].shape, generator=g) < 0.2 for n in names}
    torch.manual_seed(2)
    fresh = arch.build(16)
    return StrategyInputs(pretrained, linear, fresh, Subnetwork(masks, {}), unmasked, False, 0)


@pytest.mark.parametrize("arch_name", MINI)
@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_trains_and_keeps_frozen_entries(arch_name, name):
    strat = STRATEGIES.get(name)
    for unmasked in strat.modes(("inherit", "reinit")):
        inputs = _inputs(arch_name, unmasked)
        before_pre = {k: v.clone() for k, v in inputs.pretrained.state_dict().items()}
        before_lin = {k: v.clone() for k, v in inputs.adapted.state_dict().items()}
        model, info = strat.build(inputs)
        assert info["unmasked"] == unmasked
        x = torch.randn(4, 3, 32, 32)
        model.train()
        out = model(x)
        classes = 20 if strat.uses_mapping else 16
        assert out.shape == (4, classes) and torch.isfinite(out).all()
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not strat.trains:
            assert not trainable  # evaluated as they are: nothing trains
            continue
        assert trainable, f"{name}: nothing to train"
        before = {k: v.clone() for k, v in effective_parameters(model).items()}
        opt = torch.optim.SGD([p for _, p in trainable], lr=0.1, momentum=0.9, weight_decay=0.1)
        loss = torch.nn.functional.cross_entropy(out, torch.arange(4) % classes)
        loss.backward()
        for n, p in trainable:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: {n} got no grad"
        opt.step()
        after = effective_parameters(model)
        frozen = _frozen_masks(model)
        if strat.uses_subnetwork:
            sub = inputs.subnetwork.masks
            assert set(frozen) == set(sub)
            for n, m in frozen.items():
                k = 0 if name == "unmasked-only" else int(sub[n].sum())
                assert int(m.sum()) == k, f"{name}: count differs in {n}"
                if name == "subtask-induction":
                    assert torch.equal(m, sub[n])
                # frozen entries hold the Linear FT model's values, bit for bit, after a step
                assert torch.equal(after[n][m], inputs.adapted.state_dict()[n][m]), n
                assert not torch.equal(after[n][~m], before[n][~m]), n
        else:
            assert not frozen
        for k, v in inputs.pretrained.state_dict().items():
            assert torch.equal(v, before_pre[k]), f"{name} changed the pretrained model"
        for k, v in inputs.adapted.state_dict().items():
            assert torch.equal(v, before_lin[k]), f"{name} changed the Linear FT model"


def test_inherit_and_reinit_differ_only_outside_the_masks():
    arch = ARCHS.get("resnet18-mini")
    inh, _ = STRATEGIES.get("subtask-induction").build(_inputs(arch.name, "inherit"))
    rei, _ = STRATEGIES.get("subtask-induction").build(_inputs(arch.name, "reinit"))
    lin = _inputs(arch.name, "inherit").adapted.state_dict()
    # BatchNorm statistics and the head follow the policy
    assert torch.equal(inh.state_dict()["bn1.running_mean"], lin["bn1.running_mean"])
    assert torch.equal(inh.state_dict()["fc.weight"], lin["fc.weight"])
    assert not torch.equal(rei.state_dict()["fc.weight"], lin["fc.weight"])


@pytest.mark.parametrize("arch_name", MINI)
def test_random_subnetwork_is_count_matched_and_independent_of_the_discovered_one(arch_name):
    """The random control keeps k entries per tensor (k = the subnetwork's count) drawn without
    regard to the subnetwork: per tensor it is not the discovered mask, and the overlap with it
    is what chance gives (hypergeometric: mean k^2/N), not k."""
    inputs = _inputs(arch_name, "inherit")
    model, _ = STRATEGIES.get("random-subnetwork").build(inputs)
    frozen, sub = _frozen_masks(model), inputs.subnetwork.masks
    overlap = mean = var = 0.0
    for n, m in frozen.items():
        k, size = int(sub[n].sum()), sub[n].numel()
        assert int(m.sum()) == k, n
        if 0 < k < size:
            assert not torch.equal(m, sub[n]), f"{n}: the random mask is the discovered one"
        overlap += int((m & sub[n]).sum())
        mean += k * k / size
        var += k * (k / size) * (1 - k / size) * (size - k) / max(size - 1, 1)
    assert abs(overlap - mean) < 5 * var**0.5, (overlap, mean, var**0.5)


def test_data_mixture_is_the_only_strategy_with_pooled_training_images():
    assert [n for n in STRATEGIES if STRATEGIES.get(n).pooled_in_training] == ["data-mixture"]
