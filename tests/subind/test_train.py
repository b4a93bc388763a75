"""subind.train.fit: the old behaviour pinned, optimizers, step budget, checkpoints and resume,
DDP on 2 CPU ranks, bf16 option handling, transfer parametrizations."""

import copy
import datetime
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subind.train import CHECKPOINT_FILE, LoaderEpochs, TrainConfig, _autocast, fit
from subind.transfer import effective_parameters, transfer

torch.set_num_threads(1)
N, D, C = 48, 6, 3


def _data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=gen)
    y = (x[:, :C] + 0.3 * torch.randn(N, C, generator=gen)).argmax(-1)
    return x, y


X, Y = _data()


def _model(seed=0, dropout=0.2):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, C))


def _batches(batch_size=8):
    """Shuffled with the global RNG: resume must replay the epoch's RNG to get the same order."""

    def epoch_batches(epoch):
        order = torch.randperm(N)
        for i in range(0, N, batch_size):
            idx = order[i : i + batch_size]
            yield X[idx], Y[idx]

    return epoch_batches


def _loss(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def _acc(model):
    with torch.no_grad():
        return float((model(X).argmax(-1) == Y).float().mean())


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _old_fit(model, epoch_batches, loss_fn, evaluate, config):
    """subind.train.fit as it was before steps, checkpoints and DDP (AdamW, evaluation after each
    epoch, earliest best kept): the defaults must reproduce it bit for bit (fig3's numbers)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    best_acc, best_epoch, best_state, history = -1.0, -1, None, []
    for epoch in range(config.epochs):
        model.train()
        total, count = 0.0, 0
        for batch in epoch_batches(epoch):
            loss = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            count += 1
        model.eval()
        acc = float(evaluate(model))
        history.append({"epoch": epoch, "loss": total / max(count, 1), "val_accuracy": acc})
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch
            best_state = copy.deepcopy(model.state_dict())
        if config.stop_at_accuracy is not None and acc >= config.stop_at_accuracy:
            break
    model.load_state_dict(best_state)
    return best_acc, best_epoch, history


@pytest.mark.parametrize("stop", [None, 0.6])
def test_defaults_reproduce_the_old_loop_bit_for_bit(stop):
    cfg = TrainConfig(epochs=6, lr=1e-2, stop_at_accuracy=stop)
    old = _model()
    torch.manual_seed(5)  # the dropout and shuffles draw from here on
    ref = _old_fit(old, _batches(), _loss, _acc, cfg)
    new = _model()
    torch.manual_seed(5)
    res = fit(new, _batches(), _loss, _acc, cfg, progress=False)
    assert _same_state(old, new)
    assert (res.best_accuracy, res.best_epoch) == ref[:2]
    assert [{k: v for k, v in h.items() if k != "step"} for h in res.history] == ref[2]
    assert [h["step"] for h in res.history] == [6 * (i + 1) for i in range(len(ref[2]))]
    if stop is not None:
        assert len(ref[2]) < 6  # the stop really happened


def test_sgd_is_torch_sgd_with_momentum_and_weight_decay():
    cfg = TrainConfig(epochs=2, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=1e-3)
    ref = _model(dropout=0.0)
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    torch.manual_seed(1)
    for epoch in range(2):
        for batch in _batches()(epoch):
            opt.zero_grad()
            _loss(ref, batch).backward()
            opt.step()
    model = _model(dropout=0.0)
    torch.manual_seed(1)
    # evaluate every epoch returns 1.0 only at the end, so the last state is kept
    scores = iter([0.0, 1.0])
    fit(model, _batches(), _loss, lambda m: next(scores), cfg, progress=False)
    assert _same_state(ref, model)


def test_step_budget_and_evaluation_every_n_steps():
    snaps = []

    def evaluate(m):  # scripted scores; keep each evaluated state
        snaps.append(copy.deepcopy(m.state_dict()))
        return [0.2, 0.9, 0.9, 0.5][len(snaps) - 1]

    model = _model()
    cfg = TrainConfig(epochs=10, lr=1e-2, max_steps=10, eval_every=3)
    res = fit(model, _batches(batch_size=12), _loss, evaluate, cfg, progress=False)
    # 4 batches per epoch; evaluations at steps 3, 6, 9 and the budget's end (10)
    assert [h["step"] for h in res.history] == [3, 6, 9, 10]
    assert [h["epoch"] for h in res.history] == [0, 1, 2, 2]
    assert res.steps == 10 and res.best_step == 6 and res.best_epoch == 1
    assert res.best_accuracy == 0.9  # the earliest of the tied best
    assert all(torch.equal(v, snaps[1][k]) for k, v in model.state_dict().items())

    # eval_every None: after each epoch, plus the budget's end mid-epoch
    res = fit(
        _model(), _batches(12), _loss, _acc, TrainConfig(epochs=9, max_steps=6), progress=False
    )
    assert [(h["epoch"], h["step"]) for h in res.history] == [(0, 4), (1, 6)]
    # epochs stay an upper bound: too few of them end the run before the budget
    res = fit(
        _model(), _batches(12), _loss, _acc, TrainConfig(epochs=2, max_steps=99), progress=False
    )
    assert res.steps == 8 and [h["step"] for h in res.history] == [4, 8]


def test_evaluate_may_return_several_metrics():
    res = fit(
        _model(),
        _batches(),
        _loss,
        lambda m: {"val_accuracy": _acc(m), "pooled": 0.5},
        TrainConfig(epochs=2),
        progress=False,
    )
    assert all(h["pooled"] == 0.5 and "val_accuracy" in h for h in res.history)
    with pytest.raises(ValueError, match="without 'val_accuracy'"):
        fit(_model(), _batches(), _loss, lambda m: {"acc": 1.0}, TrainConfig(1), progress=False)


def test_config_errors_are_one_line():
    with pytest.raises(ValueError, match="Did you mean 'sgd'"):
        TrainConfig(optimizer="sgdd")
    with pytest.raises(ValueError, match="amp must be"):
        TrainConfig(amp="fp16")
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint_dir"):
        TrainConfig(checkpoint_every=5)


class _Interrupt(Exception):
    pass


def _interrupting(epoch_batches, after):
    """epoch_batches that raises once ``after`` batches have been yielded in all."""
    seen = [0]

    def wrapped(epoch):
        for batch in epoch_batches(epoch):
            if seen[0] == after:
                raise _Interrupt
            seen[0] += 1
            yield batch

    return wrapped


@pytest.mark.parametrize(
    "optimizer, every, interrupt_after, ckpt_every",
    [
        ("adamw", 4, 13, 5),  # mid-epoch checkpoint (step 10), interrupted mid-epoch
        ("sgd", None, 19, None),  # checkpoint at epoch ends, interrupted in epoch 3
        ("sgd", 5, 12, 6),  # checkpoint exactly at an epoch's end (6 batches per epoch)
    ],
)
def test_resume_after_an_interruption_is_exact(
    tmp_path, optimizer, every, interrupt_after, ckpt_every
):
    base = dict(epochs=5, lr=1e-2, optimizer=optimizer, eval_every=every, max_steps=27)
    torch.manual_seed(3)
    ref_model = _model()
    ref = fit(ref_model, _batches(), _loss, _acc, TrainConfig(**base), progress=False)

    cfg = TrainConfig(**base, checkpoint_dir=str(tmp_path), checkpoint_every=ckpt_every)
    torch.manual_seed(3)
    with pytest.raises(_Interrupt):
        fit(_model(), _interrupting(_batches(), interrupt_after), _loss, _acc, cfg, progress=False)
    assert (tmp_path / CHECKPOINT_FILE).exists()
    torch.manual_seed(123)  # the RNG the resumed process happens to start with does not matter
    model = _model()
    res = fit(model, _batches(), _loss, _acc, cfg, progress=False)
    assert res.resumed_from is not None and 0 < res.resumed_from <= interrupt_after
    assert _same_state(ref_model, model)
    assert res.history == ref.history
    assert (res.best_accuracy, res.best_epoch, res.best_step, res.steps) == (
        ref.best_accuracy, ref.best_epoch, ref.best_step, ref.steps,
    )  # fmt: skip

    # a finished run's checkpoint: a second call trains nothing and returns the same
    def no_batches(epoch):
        raise AssertionError("a finished run must not train again")

    again = _model(seed=9)
    res2 = fit(again, no_batches, _loss, _acc, cfg, progress=False)
    assert _same_state(again, model) and res2.history == ref.history


def test_checkpoint_of_another_run_is_a_clear_error(tmp_path):
    cfg = TrainConfig(epochs=1, lr=1e-2, checkpoint_dir=str(tmp_path))
    fit(_model(), _batches(), _loss, _acc, cfg, progress=False)
    with pytest.raises(ValueError, match=r"written with lr=0\.01, this run has lr=0\.02"):
        fit(
            _model(), _batches(), _loss, _acc, TrainConfig(1, lr=2e-2, checkpoint_dir=str(tmp_path))
        )
    wider = nn.Sequential(nn.Linear(D, 17), nn.ReLU(), nn.Dropout(0.2), nn.Linear(17, C))
    with pytest.raises(ValueError, match="does not fit this model"):
        fit(wider, _batches(), _loss, _acc, cfg, progress=False)
    # a longer budget continues the finished run
    longer = TrainConfig(**{**vars(cfg), "epochs": 2})
    res = fit(_model(), _batches(), _loss, _acc, longer, progress=False)
    assert res.resumed_from == 6 and res.steps == 12 and len(res.history) == 2


def test_loader_epochs_makes_a_dataloader_resumable(tmp_path):
    ds = torch.utils.data.TensorDataset(X, Y)

    def loader():
        gen = torch.Generator().manual_seed(7)
        return LoaderEpochs(torch.utils.data.DataLoader(ds, 8, shuffle=True, generator=gen))

    epochs = loader()
    first = [b[1].tolist() for b in epochs(1)]
    list(epochs(0))
    assert [b[1].tolist() for b in epochs(1)] == first != [b[1].tolist() for b in epochs(2)]
    assert len(epochs) == 6

    cfg = dict(epochs=3, lr=1e-2, optimizer="sgd", eval_every=4)
    ref_model = _model()
    ref = fit(ref_model, loader(), _loss, _acc, TrainConfig(**cfg), progress=False)
    ck = TrainConfig(**cfg, checkpoint_dir=str(tmp_path), checkpoint_every=3)
    with pytest.raises(_Interrupt):
        fit(_model(), _interrupting(loader(), 10), _loss, _acc, ck, progress=False)
    model = _model()
    res = fit(model, loader(), _loss, _acc, ck, progress=False)
    assert res.resumed_from == 9 and _same_state(ref_model, model)
    assert res.history == ref.history


def test_loader_epochs_sets_the_distributed_samplers_epoch():
    ds = torch.utils.data.TensorDataset(X, Y)
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=1, seed=1)
    epochs = LoaderEpochs(torch.utils.data.DataLoader(ds, 8, sampler=sampler))
    order = [b[1].tolist() for b in epochs(3)]
    assert sampler.epoch == 3 and len(order) == 3  # this rank's half of 6 batches
    list(epochs(0))
    assert [b[1].tolist() for b in epochs(3)] == order != [b[1].tolist() for b in epochs(4)]


def test_norm_eval_keeps_batchnorm_statistics():
    def bn_model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(D, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, C))

    for norm_eval in (False, True):
        model = bn_model()
        model[0].requires_grad_(False)  # a frozen backbone, a trained head
        fit(
            model,
            _batches(),
            _loss,
            _acc,
            TrainConfig(epochs=1, norm_eval=norm_eval),
            progress=False,
        )
        assert torch.equal(model[1].running_mean, torch.zeros(8)) == norm_eval
        assert int(model[1].num_batches_tracked) == (0 if norm_eval else 6)


def test_progress_bar_shows_step_loss_val_best(capsys):
    fit(_model(), _batches(), _loss, _acc, TrainConfig(epochs=2, max_steps=9), desc="demo")
    err = capsys.readouterr().err
    assert "demo" in err and "/9" in err  # steps out of the budget
    assert all(f"{k}=" in err for k in ("loss", "val", "best"))


def _transferred(seed_fresh=1):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, C))
    torch.manual_seed(seed_fresh)
    fresh = copy.deepcopy(base)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    gen = torch.Generator().manual_seed(3)
    params = dict(base.named_parameters())
    masks = {n: torch.rand(params[n].shape, generator=gen) < 0.3 for n in ("0.weight", "3.weight")}
    return base, transfer(base, fresh, masks, unmasked="reinit"), masks


def _image_batches(epoch):
    gen = torch.Generator().manual_seed(epoch)
    for _ in range(4):
        x = torch.randn(8, 1, 4, 4, generator=gen)
        yield x, (x.sum((1, 2, 3)) > 0).long()


def test_frozen_entries_stay_bit_for_bit_under_sgd_weight_decay_and_resume(tmp_path):
    fixed = next(iter(_image_batches(99)))

    def score(m):  # a deterministic function of the state, so that selection can differ
        with torch.no_grad():
            return -float(_loss(m, fixed))

    kw = dict(epochs=3, lr=0.1, optimizer="sgd", weight_decay=0.1, eval_every=3)
    cfg = TrainConfig(**kw, checkpoint_dir=str(tmp_path), checkpoint_every=2)
    base, model, masks = _transferred()
    before = effective_parameters(model)
    with pytest.raises(_Interrupt):
        fit(model, _interrupting(_image_batches, 7), _loss, score, cfg, progress=False)
    _, model, _ = _transferred()
    res = fit(model, _image_batches, _loss, score, cfg, progress=False)
    assert res.resumed_from == 6
    after, orig = effective_parameters(model), dict(base.named_parameters())
    for name, m in masks.items():
        assert torch.equal(after[name][m], orig[name][m])  # frozen entries: bit for bit
        assert not torch.equal(after[name][~m], before[name][~m])  # the rest trained
    _, ref, _ = _transferred()
    ref_res = fit(ref, _image_batches, _loss, score, TrainConfig(**kw), progress=False)
    assert _same_state(ref, model) and ref_res.history == res.history


def test_bf16_option_on_cpu_warns_and_trains_in_fp32():
    cfg = TrainConfig(epochs=2, lr=1e-2)
    torch.manual_seed(0)
    ref = _model()
    fit(ref, _batches(), _loss, _acc, cfg, progress=False)
    torch.manual_seed(0)
    model = _model()
    with pytest.warns(UserWarning, match="autocasts on CUDA only") as record:
        fit(model, _batches(), _loss, _acc, TrainConfig(epochs=2, lr=1e-2, amp="bf16"))
    assert sum("autocasts" in str(w.message) for w in record) == 1  # once, not per step
    assert _same_state(ref, model)
    assert _autocast(None, torch.device("cuda"))().__enter__() is None  # no-op context
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that CUDA is absent on this machine
        ctx = _autocast("bf16", torch.device("cuda"))()
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16


# --- DDP: 2 gloo ranks x half batches == 1 process x whole batches -----------------------------
def _halves(epoch_batches):
    """Each rank's half of every batch (x, y): with a mean loss, DDP over the halves computes
    the gradient of the whole batch."""
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()

    def batches(epoch):
        for x, y in epoch_batches(epoch):
            yield torch.tensor_split(x, world)[rank], torch.tensor_split(y, world)[rank]

    return batches


_DDP_CFG = dict(epochs=4, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=1e-3, eval_every=2)


def _ddp_worker(rank, world, tmp):
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=60),  # a hang fails the test instead of blocking CI
    )  # fmt: skip
    try:
        ck = dict(checkpoint_dir=os.path.join(tmp, "ck"), checkpoint_every=3)
        model = _model(dropout=0.0)
        fit(model, _halves(_batches()), _loss, _acc, TrainConfig(**_DDP_CFG, **ck, ddp=True,
            max_steps=8), progress=False)  # fmt: skip
        model = _model(seed=4, dropout=0.0)  # a longer budget resumes the checkpoint
        res = fit(model, _halves(_batches()), _loss, _acc, TrainConfig(**_DDP_CFG, **ck, ddp=True,
            max_steps=16), progress=False)  # fmt: skip
        torch.save({"state": model.state_dict(), "history": res.history,
                    "resumed": res.resumed_from}, os.path.join(tmp, f"rank{rank}.pt"))  # fmt: skip
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_two_cpu_ranks_equal_one_process(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    one = _model(dropout=0.0)  # then the global RNG (the batches' shuffle) is as on each rank
    ref = fit(one, _batches(), _loss, _acc, TrainConfig(**_DDP_CFG, max_steps=16), progress=False)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["resumed"] == 8 and r1["resumed"] == 8  # mid-epoch (6 batches an epoch)
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])
    assert r0["history"] == r1["history"]
    for k, v in one.state_dict().items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-5, atol=1e-6)
    assert [h["step"] for h in r0["history"]] == [h["step"] for h in ref.history]
    for a, b in zip(r0["history"], ref.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["val_accuracy"] == b["val_accuracy"]
