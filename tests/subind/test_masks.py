import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subind.masks import MaskSelection, add_masks, beta_schedule, select_parameters


def _linear() -> nn.Linear:
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.25, -1.0]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2]))
    return lin


def test_soft_and_hard_mask_match_hand_computed_values():
    lin = _linear()
    masks = add_masks(lin, ["weight"], init=-0.1)
    scores = next(masks.parameters())
    assert torch.all(scores == -0.1)
    with torch.no_grad():
        scores.copy_(torch.tensor([[0.5, -0.5, 0.0], [1.0, -1.0, 2.0]]))
    masks.set_beta(2.0)
    w = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.25, -1.0]])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    soft = torch.tensor([[sig(1.0), sig(-1.0), 0.5], [sig(2.0), sig(-2.0), sig(4.0)]])
    torch.testing.assert_close(lin.weight, w * soft)
    x = torch.tensor([[1.0, 1.0, 1.0]])
    expected = x @ (w * soft).T + torch.tensor([0.1, -0.2])
    torch.testing.assert_close(lin(x), expected)
    # penalty = sum sigmoid(beta * s) over all entries
    assert masks.penalty().item() == pytest.approx(float(soft.sum()), rel=1e-6)
    with masks.hard():  # 1[s > 0]: s == 0 is dropped
        hard = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
        torch.testing.assert_close(lin.weight, w * hard)
    torch.testing.assert_close(lin.weight, w * soft)  # back to soft outside the context
    assert masks.binary()["weight"].tolist() == [[True, False, False], [True, False, True]]


def test_penalty_at_init_is_n_times_sigmoid_of_init():
    lin = nn.Linear(4, 5)
    masks = add_masks(lin, ["weight"], init=-0.1)
    masks.set_beta(1.0)
    assert masks.penalty().item() == pytest.approx(20 / (1 + math.exp(0.1)), rel=1e-6)


def test_beta_schedule_end_points_and_constant_ratio():
    n, final = 50, 100.0
    betas = [beta_schedule(e, n, final) for e in range(n + 1)]
    assert betas[0] == pytest.approx(1.0)
    assert betas[-1] == pytest.approx(final)
    ratios = [b / a for a, b in zip(betas, betas[1:], strict=False)]
    assert all(r == pytest.approx(final ** (1 / n)) for r in ratios)


def test_only_mask_scores_receive_gradients():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    names = select_parameters(model, MaskSelection(module_types=("Linear",)))
    assert names == ["0.weight", "2.weight"]
    masks = add_masks(model, names)
    model(torch.randn(5, 4)).sum().backward()
    for mask in masks.parameters():
        assert mask.grad is not None and mask.grad.abs().sum() > 0
    base = [p for n, p in model.named_parameters() if not n.endswith("scores")]
    assert base and all(not p.requires_grad and p.grad is None for p in base)


def test_remove_restores_plain_model():
    model = nn.Sequential(nn.Linear(4, 3))
    before = model[0].weight.detach().clone()
    masks = add_masks(model, ["0.weight"])
    masks.remove()
    assert sorted(n for n, _ in model.named_parameters()) == ["0.bias", "0.weight"]
    assert torch.equal(model[0].weight, before) and model[0].weight.requires_grad


def test_selection_by_type_patterns_and_bias_option():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    assert select_parameters(model, MaskSelection(module_types=("Conv2d",))) == ["0.weight"]
    assert select_parameters(model, MaskSelection(include=("2.*",))) == ["2.weight"]
    with_bias = select_parameters(model, MaskSelection(include=("2.*",), mask_bias=True))
    assert with_bias == ["2.weight", "2.bias"]
    assert select_parameters(model, MaskSelection(exclude=("0.*",))) == ["2.weight"]
    with pytest.raises(ValueError, match="matches no parameter"):
        select_parameters(model, MaskSelection(module_types=("LSTM",)))


def _hf_conv1d_model() -> nn.Module:
    from transformers.pytorch_utils import Conv1D

    return nn.Sequential(Conv1D(6, 4), nn.GELU(), Conv1D(2, 6))


class _MHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


# One mechanism for every layer type; each entry: (model factory, selection, input shape).
LAYER_MATRIX = {
    "linear": (lambda: nn.Sequential(nn.Linear(4, 3)), MaskSelection(), (2, 4)),
    "conv2d": (lambda: nn.Sequential(nn.Conv2d(3, 2, 3)), MaskSelection(), (1, 3, 6, 6)),
    "hf-conv1d": (_hf_conv1d_model, MaskSelection(module_types=("Conv1D",)), (2, 5, 4)),
    "mha-in-proj": (_MHA, MaskSelection(include=("*in_proj_weight",)), (2, 5, 8)),
}


@pytest.mark.parametrize("kind", list(LAYER_MATRIX))
@pytest.mark.parametrize("hard", [False, True])
def test_masks_on_every_layer_type(kind, hard):
    factory, selection, shape = LAYER_MATRIX[kind]
    torch.manual_seed(0)
    model = factory()
    ref = factory()
    ref.load_state_dict(model.state_dict())
    names = select_parameters(model, selection)
    if kind == "mha-in-proj":
        assert names == ["attn.in_proj_weight"]
    masks = add_masks(model, names, init=0.5)
    x = torch.randn(*shape)
    masks.set_beta(200.0)  # sigmoid(100) == 1 in float32: the soft mask equals the identity
    torch.testing.assert_close(model(x), ref(x))
    masks.set_beta(1.0)
    if hard:  # every score is positive: the hard mask keeps everything
        with masks.hard():
            torch.testing.assert_close(model(x), ref(x))
        return
    y = model(x)
    assert torch.isfinite(y).all()
    y.square().sum().backward()
    for s in masks.parameters():
        assert s.grad is not None and s.grad.abs().sum() > 0 and torch.isfinite(s.grad).all()


def _gpt2_with_masks(seed=0):
    from benchmarks.arithmetic.gpt2 import GPT2, GPT2Config
    from benchmarks.arithmetic.stages import GPT2_MASKED

    torch.manual_seed(seed)
    model = GPT2(
        GPT2Config(vocab_size=23, n_positions=4, n_embd=32, n_layer=2, n_head=2, n_inner=64)
    )
    model.eval()
    return model, add_masks(model, select_parameters(model, GPT2_MASKED))


@pytest.mark.parametrize("beta", [1.0, 37.0])
def test_cached_step_is_bitwise_equal_to_the_per_tensor_formulation(beta):
    """Discovery's cached step (gates of all masks together, each weight once, foreach penalty)
    gives exactly the losses and scores of the straightforward per-tensor formulation over
    several Adam steps."""
    rows = torch.randint(0, 23, (50, 4), generator=torch.Generator().manual_seed(1))
    runs = {}
    for cached in (False, True):
        model, masks = _gpt2_with_masks()
        with torch.no_grad():  # spread the scores so some gates saturate
            for s in masks.parameters():
                s.normal_(generator=torch.Generator().manual_seed(s.numel()))
        masks.set_beta(beta)
        opt = torch.optim.Adam(list(masks.parameters()), lr=1e-2)
        losses = []
        for _ in range(3):
            if cached:
                with masks.cached():
                    task = F.cross_entropy(model(rows[:, :3], last_only=True), rows[:, 3])
                    loss = task + 1e-3 * masks.penalty()
            else:  # the original formulation: one sigmoid per read and per penalty term
                task = F.cross_entropy(model(rows[:, :3], last_only=True), rows[:, 3])
                pen = torch.stack([torch.sigmoid(beta * s).sum() for s in masks.parameters()])
                loss = task + 1e-3 * pen.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(task.item())
        runs[cached] = (losses, [s.detach().clone() for s in masks.parameters()])
    assert runs[False][0] == runs[True][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[False][1], runs[True][1], strict=True))


def test_cached_context_computes_each_weight_once_and_respects_hard_and_beta():
    model, masks = _gpt2_with_masks()
    conv = model.transformer.h[0].mlp.c_fc
    with masks.cached():
        assert conv.weight is conv.weight  # memoised within the step
        with masks.hard():
            torch.testing.assert_close(
                conv.weight, conv.parametrizations.weight.original * 0.0
            )  # init -0.1: the hard mask drops everything
        masks.set_beta(5.0)  # a changed beta is not served from the stale cache
        expected = conv.parametrizations.weight.original * torch.sigmoid(torch.tensor(-0.5))
        torch.testing.assert_close(conv.weight, expected)
    assert conv.weight is not conv.weight  # recomputed per read outside the context
