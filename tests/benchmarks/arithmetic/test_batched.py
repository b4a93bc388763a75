import pytest
import torch

from benchmarks.arithmetic.batched import _dropout, fit_batched, gpt2_last_logits, stack_runs
from benchmarks.arithmetic.expression import Expression
from benchmarks.arithmetic.gpt2 import GPT2, GPT2Config
from benchmarks.arithmetic.tasks import (
    Batches,
    Numbers,
    accuracy,
    encode,
    last_token_loss,
    split_pairs,
)
from subind.conditions import CONDITIONS
from subind.subnetwork import Subnetwork
from subind.train import TrainConfig, fit
from subind.transfer import effective_parameters

CFG = GPT2Config(vocab_size=21, n_positions=4, n_embd=32, n_layer=2, n_head=2, n_inner=64)


def _subnetwork(model: GPT2, seed: int = 0) -> Subnetwork:
    gen = torch.Generator().manual_seed(seed)
    return Subnetwork(
        {
            n: torch.rand(p.shape, generator=gen) < 0.3
            for n, p in model.named_parameters()
            if n.endswith("weight") and p.ndim == 2 and "wte" not in n and "wpe" not in n
        }
    )


def _base(cfg: GPT2Config = CFG) -> GPT2:
    torch.manual_seed(123)
    return GPT2(cfg)


def _every_variant():
    """(condition, unmasked mode, trainable subnetwork) for every registry entry."""
    for cond in CONDITIONS:
        for mode in CONDITIONS.get(cond).modes(("inherit", "reinit")):
            for trainable in (False, True):
                yield cond, mode, trainable


def _build(cond, mode, trainable, seed, cfg=CFG):
    base = _base(cfg)
    torch.manual_seed(seed)
    fresh = GPT2(cfg)
    return CONDITIONS.get(cond).build(base, fresh, _subnetwork(base), mode, trainable, seed=seed)


@pytest.mark.parametrize("cond,mode,trainable", list(_every_variant()))
def test_every_condition_maps_onto_stacked_runs(cond, mode, trainable):
    model, info = _build(cond, mode, trainable, seed=1)
    stacked = stack_runs([model, model])
    eff = stacked.effective()
    ref = effective_parameters(model)
    assert set(eff) == set(ref)
    for name, t in ref.items():
        assert torch.equal(eff[name][0], t) and torch.equal(eff[name][1], t), name
    frozen_entries = sum(int(m[0].sum()) for m, _ in stacked.frozen.values())
    if trainable or info["subnetwork_density"] in (0.0, 1.0):
        # nothing frozen: a trainable subnetwork, scratch, full transfer, unmasked-only
        assert frozen_entries == 0
    else:
        masks = {n: p.mask for n, p in _frozen_parametrizations(model)}
        assert frozen_entries == sum(int(m.sum()) for m in masks.values()) > 0
        for name, m in masks.items():
            assert torch.equal(stacked.frozen[name][0][0], m)


def _frozen_parametrizations(model):
    for module_name, module in model.named_modules():
        plist = getattr(module, "parametrizations", None)
        if plist is not None:
            for pname in plist:
                yield f"{module_name}.{pname}", plist[pname][0]


def test_a_tensor_outside_the_trainable_set_is_frozen_whole():
    model, _ = _build("subtask-induction", "inherit", False, seed=0)
    model.transformer.ln_f.weight.requires_grad_(False)
    stacked = stack_runs([model])
    mask, values = stacked.frozen["transformer.ln_f.weight"]
    assert bool(mask.all()) and torch.equal(values[0], model.transformer.ln_f.weight)


def _data(seed: int, n_train: int = 120):
    nums = Numbers(20, 7)
    splits = split_pairs(nums, {"train": n_train, "val": 60, "test": 60}, seed=seed)
    return {k: encode(nums, Expression("a^2+ab", 7), v) for k, v in splits.items()}


def _variants_and_data(cfg):
    """A mixed group: every condition at both seeds (one training-set size)."""
    runs = []
    for i, (cond, mode, trainable) in enumerate(_every_variant()):
        seed = i % 2
        runs.append(((cond, mode, trainable, seed), _data(seed)))
    return runs


def _one_at_a_time(spec, rows, cfg, tc):
    cond, mode, trainable, seed = spec
    model, _ = _build(cond, mode, trainable, seed, cfg)
    torch.manual_seed(seed)
    res = fit(
        model,
        Batches(rows["train"], 25, seed),
        last_token_loss,
        lambda m: accuracy(m, rows["val"]),
        tc,
        progress=False,
    )
    return res, accuracy(model, rows["test"]), effective_parameters(model)


def _batched(specs_rows, cfg, tc, exact):
    models = [_build(*spec, cfg=cfg)[0] for spec, _ in specs_rows]
    results = fit_batched(
        models,
        [Batches(rows["train"], 25, spec[3]) for spec, rows in specs_rows],
        [rows["val"] for _, rows in specs_rows],
        tc,
        exact=exact,
        progress=False,
    )
    tests = [accuracy(m, rows["test"]) for m, (_, rows) in zip(models, specs_rows, strict=True)]
    return results, tests, [effective_parameters(m) for m in models]


@pytest.mark.parametrize("eval_every", [None, 3])
def test_batched_group_equals_one_at_a_time_exactly_without_dropout(eval_every):
    """Float32 on CPU, dropout off, exact kernels: the same accuracies at every evaluation
    (after each epoch, or every 3 steps across epoch ends and after the last), the same best
    epoch and test accuracy, and bit-identical final parameters for every condition."""
    cfg = GPT2Config(**{**CFG.__dict__, "dropout": 0.0})
    tc = TrainConfig(epochs=4, lr=3e-3, eval_every=eval_every)
    specs_rows = _variants_and_data(cfg)
    results, tests, params = _batched(specs_rows, cfg, tc, exact=True)
    moved = 0
    for (spec, rows), res, test, p in zip(specs_rows, results, tests, params, strict=True):
        ref, ref_test, ref_p = _one_at_a_time(spec, rows, cfg, tc)
        when = lambda h: [(e["epoch"], e["step"], e["val_accuracy"]) for e in h]  # noqa: E731
        assert when(res.history) == when(ref.history), spec
        assert (res.best_step, res.steps) == (ref.best_step, ref.steps), spec
        assert (res.best_accuracy, res.best_epoch, test) == (
            ref.best_accuracy,
            ref.best_epoch,
            ref_test,
        ), spec
        for name, t in ref_p.items():
            assert torch.equal(p[name], t), (spec, name)
        moved += len({h["val_accuracy"] for h in ref.history}) > 1
    assert moved >= len(specs_rows) // 2  # the runs learned something: the check has teeth


def test_fast_kernels_agree_to_float_rounding():
    cfg = GPT2Config(**{**CFG.__dict__, "dropout": 0.0})
    tc = TrainConfig(epochs=3, lr=3e-3)
    specs_rows = _variants_and_data(cfg)[:6]
    _, tests, params = _batched(specs_rows, cfg, tc, exact=False)
    for (spec, rows), test, p in zip(specs_rows, tests, params, strict=True):
        ref, ref_test, ref_p = _one_at_a_time(spec, rows, cfg, tc)
        for name, t in ref_p.items():
            torch.testing.assert_close(p[name], t, atol=1e-4, rtol=1e-4)
        assert abs(test - ref_test) <= 2 / 60  # at most a row or two flips at a rounding edge


def test_batched_forward_matches_the_model():
    torch.manual_seed(0)
    models = [GPT2(CFG).eval() for _ in range(3)]
    idx = torch.randint(0, 20, (3, 7, 3))
    p = stack_runs(models).effective()
    for exact in (True, False):
        out = gpt2_last_logits(CFG, p, idx, training=False, exact=exact)
        for r, m in enumerate(models):
            ref = m(idx[r], last_only=True)
            if exact:
                assert torch.equal(out[r], ref)
            else:
                torch.testing.assert_close(out[r], ref, atol=1e-5, rtol=1e-5)


def test_runs_of_different_sizes_are_refused():
    models = [GPT2(CFG), GPT2(CFG)]
    a, b = _data(0, 120), _data(1, 130)
    with pytest.raises(ValueError, match="group runs by training-set size"):
        fit_batched(
            models,
            [Batches(a["train"], 25, 0), Batches(b["train"], 25, 1)],
            [a["val"], b["val"]],
            TrainConfig(epochs=1),
            progress=False,
        )


def test_fast_dropout_keeps_each_entry_with_probability_1_minus_p():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = _dropout(x, 0.1, training=True, exact=False)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.9))
    assert torch.equal(_dropout(x, 0.1, training=False, exact=False), x)


def test_any_epoch_batches_callable_gives_the_rows_of_batches():
    """The one-gather fast path for Batches and the generic per-run iterators agree."""
    cfg = GPT2Config(**{**CFG.__dict__, "dropout": 0.0})
    data = [_data(0), _data(1)]
    out = []
    for wrap in (False, True):
        models = [_build("scratch", "reinit", False, s, cfg)[0] for s in (0, 1)]
        batches = [Batches(d["train"], 25, s) for s, d in enumerate(data)]
        if wrap:
            batches = [lambda e, b=b: b(e) for b in batches]
        res = fit_batched(
            models, batches, [d["val"] for d in data], TrainConfig(epochs=2), exact=True,
            progress=False,
        )  # fmt: skip
        out.append([(r.history, r.best_epoch) for r in res])
    assert out[0] == out[1]
