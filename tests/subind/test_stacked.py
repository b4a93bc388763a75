"""subind.stacked.fit_stacked: R runs trained at once equal fit on each run (after
torch.manual_seed(seed)) up to float rounding: BatchNorm statistics, transfer parametrizations,
each run's random stream, evaluation points, best state, optimizer settings; clear errors."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subind.stacked import fit_stacked
from subind.train import TrainConfig, fit
from subind.transfer import effective_parameters, transfer

torch.set_num_threads(1)
N, C, S = 40, 4, 8  # images, classes, side


def _images(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 3, S, S, generator=g)
    y = torch.randint(0, C, (N,), generator=g)
    x[torch.arange(N), y % 3, :2, :2] += 2.0  # something to learn
    return x, y


X, Y = _images(0)
XV, YV = _images(1)


def _net(seed, dropout=0.0):
    # No bias before a BatchNorm (as in a ResNet): its gradient is rounding noise, which
    # AdamW's normalisation would turn into full-size steps that differ run by run.
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(8, C),
    )  # fmt: skip


def _transferred(seed):
    """A fresh net (seed) with per-seed random entries of a base net frozen in its convs."""
    base, fresh = _net(100), _net(seed)
    g = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(p.shape, generator=g) < 0.4
             for n, p in base.named_parameters() if p.dim() == 4}  # fmt: skip
    return transfer(base, fresh, masks, "reinit")


def _epoch_batches(batch_size=8):
    """Shuffle and flip with the global RNG: each run must draw from its own stream."""

    def epoch(e):
        order = torch.randperm(N)
        for i in range(0, N, batch_size):
            idx = order[i : i + batch_size]
            flip = torch.rand(len(idx)) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), X[idx].flip(3), X[idx])
            yield x, Y[idx]

    return epoch


def _loss(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def _evaluate(model):
    with torch.no_grad():
        acc = float((model(XV).argmax(-1) == YV).float().mean())
    # a draw from the run's stream, as a DataLoader's worker seed would be
    return {"val_accuracy": acc, "draw": float(torch.rand(()))}


CONFIG = TrainConfig(epochs=50, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=1e-3,
                     max_steps=17, eval_every=4)  # fmt: skip
SEEDS = (3, 5, 7)


def _one_at_a_time(nets, config, seeds=SEEDS):
    out = []
    for net, seed in zip(nets, seeds, strict=True):
        torch.manual_seed(seed)
        out.append(fit(net, _epoch_batches(), _loss, _evaluate, config, progress=False))
    return out


def _stacked(nets, config, seeds=SEEDS):
    return fit_stacked(nets, [_epoch_batches() for _ in nets], _loss, [_evaluate] * len(nets),
                       config, seeds, progress=False)  # fmt: skip


def _close_state(a, b, atol=2e-5):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if sa[k].is_floating_point():
            assert torch.allclose(sa[k], sb[k], rtol=1e-4, atol=atol), k
        else:
            assert torch.equal(sa[k], sb[k]), k


def _close_results(a, b):
    for ra, rb in zip(a, b, strict=True):
        assert (ra.best_step, ra.best_epoch, ra.steps) == (rb.best_step, rb.best_epoch, rb.steps)
        assert ra.best_accuracy == rb.best_accuracy
        assert len(ra.history) == len(rb.history)
        for ha, hb in zip(ra.history, rb.history, strict=True):
            assert (ha["epoch"], ha["step"], ha["val_accuracy"], ha["draw"]) == (
                hb["epoch"], hb["step"], hb["val_accuracy"], hb["draw"])  # fmt: skip
            assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-5)


@pytest.mark.parametrize(
    "config",
    [
        CONFIG,
        TrainConfig(epochs=3, lr=1e-2, optimizer="adamw", weight_decay=0.05),  # per epoch
        TrainConfig(
            epochs=50, lr=0.05, optimizer="sgd", lr_schedule="linear", max_steps=12, eval_every=5
        ),  # fmt: skip
    ],
    ids=["sgd-every-4", "adamw-epochs", "sgd-linear"],
)
def test_stacked_equals_one_at_a_time(config):
    nets = [_transferred(s) for s in SEEDS]
    ref = [copy.deepcopy(n) for n in nets]
    expected = _one_at_a_time(ref, config)
    got = _stacked(nets, config)
    _close_results(got, expected)
    for a, b in zip(nets, ref, strict=True):
        _close_state(a, b)  # the best state: parameters, BatchNorm statistics, frozen entries
    # the runs really differ (their seeds, data order, frozen entries) ...
    assert got[0].history[0]["draw"] != got[1].history[0]["draw"]
    assert not torch.allclose(nets[0][0].weight, nets[1][0].weight)
    # ... and frozen entries stayed bit for bit
    for n in nets:
        conv = n[0].parametrizations.weight[0]
        assert torch.equal(n[0].weight[conv.mask], conv.original[conv.mask])


def test_batchnorm_statistics_are_each_runs_own():
    nets = [_net(s) for s in SEEDS]
    ref = [copy.deepcopy(n) for n in nets]
    _one_at_a_time(ref, CONFIG)
    _stacked(nets, CONFIG)
    for a, b in zip(nets, ref, strict=True):
        assert torch.allclose(a[1].running_mean, b[1].running_mean, atol=1e-6)
        assert torch.equal(a[1].num_batches_tracked, b[1].num_batches_tracked)
    assert not torch.allclose(nets[0][1].running_mean, nets[1][1].running_mean)
    assert int(nets[0][1].num_batches_tracked) > 0


def test_norm_eval_is_honoured():
    config = TrainConfig(epochs=2, lr=0.05, optimizer="sgd", norm_eval=True)
    nets = [_net(s) for s in SEEDS[:2]]
    before = [n[1].running_mean.clone() for n in nets]
    ref = [copy.deepcopy(n) for n in nets]
    _one_at_a_time(ref, config, SEEDS[:2])
    _stacked(nets, config, SEEDS[:2])
    for a, b, m in zip(nets, ref, before, strict=True):
        assert torch.equal(a[1].running_mean, m)  # statistics frozen
        _close_state(a, b)


def test_frozen_parameters_stay_frozen():
    nets = [_net(s) for s in SEEDS[:2]]
    for n in nets:
        n[0].weight.requires_grad_(False)
    w = [n[0].weight.clone() for n in nets]
    _stacked(nets, CONFIG, SEEDS[:2])
    assert all(torch.equal(n[0].weight, x) for n, x in zip(nets, w, strict=True))
    assert not torch.equal(nets[0][3].weight, _net(SEEDS[0])[3].weight)  # the rest trained


def test_one_run_alone_is_fit():
    net, ref = _transferred(3), _transferred(3)
    got = _stacked([net], CONFIG, (3,))
    _close_results(got, _one_at_a_time([ref], CONFIG, (3,)))
    assert effective_parameters(net).keys() == effective_parameters(ref).keys()


def test_errors_are_clear():
    nets = [_net(s) for s in SEEDS[:2]]
    with pytest.raises(ValueError, match="one of each per run"):
        fit_stacked(nets, [_epoch_batches()], _loss, [_evaluate] * 2, CONFIG, SEEDS[:2])
    for bad, what in ((dict(checkpoint_dir="x"), "checkpoint_dir"), (dict(ddp=True), "ddp"),
                      (dict(stop_at_accuracy=0.5), "stop_at_accuracy")):  # fmt: skip
        cfg = TrainConfig(epochs=1, **bad)
        with pytest.raises(ValueError, match=what):
            fit_stacked(nets, [_epoch_batches()] * 2, _loss, [_evaluate] * 2, cfg, SEEDS[:2])
    other = _net(1)
    other[3].weight.requires_grad_(False)
    with pytest.raises(ValueError, match="model 1 differs"):
        _stacked([nets[0], other], CONFIG, SEEDS[:2])
    with pytest.raises(ValueError, match="dropout"):
        _stacked([_net(s, dropout=0.3) for s in SEEDS[:2]], CONFIG, SEEDS[:2])
    with pytest.raises(ValueError, match="same batch size"):
        fit_stacked(nets, [_epoch_batches(8), _epoch_batches(10)], _loss, [_evaluate] * 2,
                    CONFIG, SEEDS[:2], progress=False)  # fmt: skip
