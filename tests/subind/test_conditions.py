import pytest
import torch

from benchmarks.arithmetic.gpt2 import GPT2, GPT2Config
from benchmarks.arithmetic.tasks import last_token_loss
from subind.conditions import CONDITIONS, DEFAULT_CONDITIONS
from subind.masks import MaskSelection, select_parameters
from subind.subnetwork import Subnetwork

CFG = GPT2Config(vocab_size=13, n_positions=4, n_embd=16, n_layer=1, n_head=2, n_inner=32)


def _setup():
    torch.manual_seed(0)
    base = GPT2(CFG)
    names = select_parameters(base, MaskSelection(module_types=("Conv1D",)))
    params = dict(base.named_parameters())
    gen = torch.Generator().manual_seed(1)
    sub = Subnetwork({n: torch.rand(params[n].shape, generator=gen) < 0.15 for n in names})
    torch.manual_seed(1)
    return base, GPT2(CFG), sub


@pytest.mark.parametrize("name", CONDITIONS.names())
@pytest.mark.parametrize("unmasked", ["inherit", "reinit"])
def test_every_condition_trains(name, unmasked):
    base, fresh, sub = _setup()
    base_before = {n: p.clone() for n, p in base.state_dict().items()}
    model, info = CONDITIONS.get(name).build(base, fresh, sub, unmasked, seed=0)
    model.train()
    batch = torch.randint(0, 12, (8, 4))
    loss = last_token_loss(model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for n, p in trainable:
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert 0.0 <= info["subnetwork_density"] <= 1.0
    for n, p in base.state_dict().items():  # the base model is never modified
        assert torch.equal(p, base_before[n]), n


def test_condition_records():
    base, fresh, sub = _setup()
    _, info = CONDITIONS.get("subtask-induction").build(base, fresh, sub, "reinit", seed=0)
    assert info["unmasked"] == "reinit" and info["subnetwork_density"] == pytest.approx(sub.density)
    _, info = CONDITIONS.get("random-subnetwork-inverted").build(base, GPT2(CFG), sub, seed=0)
    assert info["subnetwork_density"] == pytest.approx(1 - sub.density)
    assert set(DEFAULT_CONDITIONS) <= set(CONDITIONS.names())


def test_unknown_condition_suggests():
    with pytest.raises(KeyError, match="Did you mean 'scratch'"):
        CONDITIONS.get("scrach")


def test_unmasked_only_inherits_everything_but_the_masked_tensors():
    from subind.transfer import effective_parameters

    base, fresh, sub = _setup()
    fresh_before = {n: p.clone() for n, p in fresh.named_parameters()}
    model, info = CONDITIONS.get("unmasked-only").build(base, fresh, sub, "reinit", seed=0)
    assert info["unmasked"] == "inherit" and info["subnetwork_density"] == 0.0
    base_params = dict(base.named_parameters())
    for name, p in effective_parameters(model).items():
        expected = fresh_before[name] if name in sub.masks else base_params[name]
        assert torch.equal(p, expected), name


def test_fixed_mode_conditions_run_once():
    assert CONDITIONS.get("scratch").modes(("inherit", "reinit")) == ("reinit",)
    assert CONDITIONS.get("full-transfer").modes(("inherit", "reinit")) == ("inherit",)
    assert CONDITIONS.get("random-subnetwork").modes(("inherit", "reinit")) == ("inherit", "reinit")
