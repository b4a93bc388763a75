import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subind.discover import DiscoveryConfig, discover


def _problem(seed=0):
    """A 2-layer MLP whose output on the subtask depends only on input feature 0."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 6, generator=gen)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, x, y


def _acc(model, x, y):
    return float((model(x).argmax(-1) == y).float().mean())


def test_discovery_finds_a_sparse_subnetwork_that_solves_the_subtask():
    model, x, y = _problem()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    batches = lambda epoch: [(x[i : i + 64], y[i : i + 64]) for i in range(0, 512, 64)]  # noqa: E731
    loss_fn = lambda m, b: F.cross_entropy(m(b[0]), b[1])  # noqa: E731
    sub = discover(
        model,
        ["0.weight", "2.weight"],
        batches,
        loss_fn,
        lambda m: _acc(m, x, y),
        DiscoveryConfig(epochs=15, lr=0.05, penalty=1e-3, beta_final=100.0),
        evaluate_test=lambda m: _acc(m, x, y),
        progress=False,
    )
    assert sub.meta["val_accuracy"] >= 0.95
    assert sub.meta["test_accuracy"] == pytest.approx(sub.meta["val_accuracy"])
    assert 0 < sub.density < 0.6
    # the penalty should drop most weights reading the irrelevant features 1..5
    first = sub.masks["0.weight"]
    assert first[:, 0].float().mean() > first[:, 1:].float().mean()
    # model restored, weights untouched, trainable again
    assert sorted(n for n, _ in model.named_parameters()) == [
        "0.bias",
        "0.weight",
        "2.bias",
        "2.weight",
    ]
    for n, p in model.state_dict().items():
        assert torch.equal(p, before[n])
    assert all(p.requires_grad for p in model.parameters())
    h = sub.meta["history"]
    assert len(h) == 15 and h[0]["beta"] == pytest.approx(1.0)
    assert h[-1]["beta"] == pytest.approx(100.0 ** (14 / 15))
    assert sub.meta["lambda"] == 1e-3 and sub.meta["provenance"]["versions"]["torch"]


def test_ties_in_accuracy_pick_the_sparser_epoch():
    model, x, y = _problem()
    batches = lambda epoch: [(x, y)]  # noqa: E731
    loss_fn = lambda m, b: F.cross_entropy(m(b[0]), b[1])  # noqa: E731
    sub = discover(
        model,
        ["0.weight"],
        batches,
        loss_fn,
        lambda m: 1.0,  # every epoch ties
        DiscoveryConfig(epochs=6, lr=0.05, penalty=1e-2),
        progress=False,
    )
    densities = [h["density"] for h in sub.meta["history"]]
    assert sub.density == pytest.approx(min(densities))
    assert sub.meta["best_epoch"] == densities.index(min(densities))
