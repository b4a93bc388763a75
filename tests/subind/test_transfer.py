import pytest
import torch

from benchmarks.arithmetic.gpt2 import GPT2, GPT2Config
from benchmarks.arithmetic.tasks import last_token_loss
from subind.masks import MaskSelection, select_parameters
from subind.transfer import bake, describe_transfer, effective_parameters, transfer

CFG = GPT2Config(vocab_size=23, n_positions=4, n_embd=16, n_layer=2, n_head=2, n_inner=32)


def _models(seed_base=0, seed_fresh=1):
    torch.manual_seed(seed_base)
    base = GPT2(CFG)
    torch.manual_seed(seed_fresh)
    fresh = GPT2(CFG)
    names = select_parameters(base, MaskSelection(module_types=("Conv1D",)))
    gen = torch.Generator().manual_seed(3)
    params = dict(base.named_parameters())
    masks = {n: torch.rand(params[n].shape, generator=gen) < 0.2 for n in names}
    return base, fresh, masks


def _train(model, steps=20, weight_decay=0.1):
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=weight_decay
    )
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, 22, (16, 4), generator=gen)
        loss = last_token_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("unmasked", ["inherit", "reinit"])
def test_transfer_formula_and_unmasked_modes(unmasked):
    base, fresh, masks = _models()
    fresh_before = {n: p.detach().clone() for n, p in fresh.named_parameters()}
    base_params = dict(base.named_parameters())
    model = transfer(base, fresh, masks, unmasked=unmasked)
    eff = effective_parameters(model)
    for name, m in masks.items():
        expected = torch.where(m, base_params[name], fresh_before[name])  # gamma*orig+(1-gamma)*new
        assert torch.equal(eff[name], expected)
    for name, p in eff.items():
        if name in masks:
            continue
        source = base_params[name] if unmasked == "inherit" else fresh_before[name]
        assert torch.equal(p, source), name
    info = describe_transfer(fresh, masks, unmasked, False)
    outside = {n for n in eff if n not in masks}
    assert (
        set(info["inherited_unmasked"] if unmasked == "inherit" else info["reinitialized_unmasked"])
        == outside
    )
    assert "transformer.wte.weight" in outside and "transformer.h.0.ln_1.bias" in outside


def test_frozen_subnetwork_is_bit_for_bit_unchanged_after_adamw_with_weight_decay():
    base, fresh, masks = _models()
    model = transfer(base, fresh, masks, unmasked="reinit")
    before = {n: p.clone() for n, p in effective_parameters(model).items()}
    _train(model)
    after = effective_parameters(model)
    base_params = dict(base.named_parameters())
    for name, m in masks.items():
        assert torch.equal(after[name][m], base_params[name][m]), name  # bit-for-bit
        assert not torch.equal(after[name][~m], before[name][~m]), name  # the rest trained


def test_trainable_subnetwork_entries_move():
    base, fresh, masks = _models()
    model = transfer(base, fresh, masks, unmasked="reinit", trainable_subnetwork=True)
    base_params = dict(base.named_parameters())
    name = next(iter(masks))
    assert torch.equal(
        dict(model.named_parameters())[name][masks[name]], base_params[name][masks[name]]
    )
    _train(model)
    assert not torch.equal(
        dict(model.named_parameters())[name][masks[name]], base_params[name][masks[name]]
    )


def test_bake_leaves_plain_parameters_with_the_same_function():
    base, fresh, masks = _models()
    model = transfer(base, fresh, masks)
    x = torch.randint(0, 22, (4, 3))
    model.eval()
    y = model(x)
    bake(model)
    assert not any(".parametrizations." in n for n, _ in model.named_parameters())
    torch.testing.assert_close(model(x), y)


def test_transfer_rejects_unknown_mode():
    base, fresh, masks = _models()
    with pytest.raises(ValueError, match="unmasked must be one of"):
        transfer(base, fresh, masks, unmasked="keep")


def test_transfer_mismatch_is_a_clear_error():
    base, fresh, masks = _models()
    bad = {"transformer.h.0.attn.c_attn.weight": torch.ones(3, 3, dtype=torch.bool)}
    with pytest.raises(ValueError, match="same architecture"):
        transfer(base, fresh, bad)
    with pytest.raises(ValueError, match="names no parameter"):
        transfer(base, fresh, {"nope.weight": torch.ones(1, dtype=torch.bool)})


def _bn_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.LazyLinear(2),
    )  # fmt: skip


@pytest.mark.parametrize("unmasked", ["inherit", "reinit"])
def test_batchnorm_running_statistics_follow_the_unmasked_mode(unmasked):
    torch.manual_seed(0)
    base = _bn_net()
    base(torch.randn(8, 3, 6, 6) * 3 + 1)  # a train-mode forward: non-default running statistics
    base.eval()
    torch.manual_seed(1)
    fresh = _bn_net()
    fresh(torch.randn(1, 3, 6, 6))  # materialise the lazy layer ...
    fresh[1].reset_running_stats()  # ... and keep a fresh model's default statistics
    fresh_stats = {k: v.clone() for k, v in fresh.state_dict().items() if "running" in k}
    base_stats = {k: v for k, v in base.state_dict().items() if "running" in k}
    assert all(not torch.equal(base_stats[k], fresh_stats[k]) for k in base_stats)
    masks = {"0.weight": torch.rand(base[0].weight.shape) < 0.3}
    model = transfer(base, fresh, masks, unmasked=unmasked)
    source = base_stats if unmasked == "inherit" else fresh_stats
    for k, v in model.state_dict().items():
        if "running" in k:
            assert torch.equal(v, source[k]), f"{unmasked}: {k} does not follow the mode"
