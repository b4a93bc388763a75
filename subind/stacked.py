"""Train R models of one architecture at once: every parameter and buffer gets a leading run
dimension and one ``torch.func.vmap`` of the loss serves every run (:func:`fit_stacked`).

What each run keeps to itself: its parameters and buffers (BatchNorm statistics are updated in
place, per run, as in ``fit``), its frozen tensors and transfer parametrizations (their masks
and frozen values are stacked buffers), its batches, its random stream (each run's batches
and evaluations draw from the global RNG as ``torch.manual_seed(seed)`` then ``fit`` would:
the stream is swapped in around each of them), its optimizer state (elementwise optimizers:
SGD and AdamW update each entry from that entry's state alone), its evaluations and its best
state. Runs share the kernels only, which is the point: on a GPU, R small models in one
launch instead of R.

Equal to one run at a time (``fit`` on each model, after ``torch.manual_seed(seeds[r])``) up
to float rounding: a vmapped convolution is one grouped convolution, whose kernel may add in
another order (tests/subind/test_stacked.py). The model must draw no random numbers in its
forward pass (dropout off): a vmapped draw cannot come from each run's own stream.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from subind.train import (
    OPTIMIZERS,
    Batch,
    EvalFn,
    FitResult,
    LossFn,
    TrainConfig,
    _autocast,
    _get_rng,
    _metrics,
    _set_rng,
    train_mode,
)

EpochBatches = Callable[[int], Iterable[Batch]]


class _Stateless(nn.Module):
    """``template`` run with the tensors ``state`` (parameter and buffer names -> tensors):
    what a loss function sees as "the model" inside the vmap."""

    def __init__(self, template: nn.Module, state: tuple[dict[str, torch.Tensor], ...]) -> None:
        super().__init__()
        self.template, self.state = template, state

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.template, self.state, args, kwargs)


def stack_key(model: nn.Module) -> tuple[tuple[str, str, tuple[int, ...], str, bool], ...]:
    """What models trained together by :func:`fit_stacked` must share (and group by): every
    parameter and buffer's name, shape, dtype and whether it trains."""
    params = [("param", n, tuple(p.shape), str(p.dtype), p.requires_grad)
              for n, p in model.named_parameters()]  # fmt: skip
    buffers = [("buffer", n, tuple(b.shape), str(b.dtype), False)
               for n, b in model.named_buffers()]  # fmt: skip
    return tuple(params + buffers)


def _check(models: Sequence[nn.Module], epoch_batches: Sequence[Any], evaluates: Sequence[Any],
           seeds: Sequence[int], config: TrainConfig) -> None:  # fmt: skip
    if not models:
        raise ValueError("fit_stacked needs at least one model")
    if not len(models) == len(epoch_batches) == len(evaluates) == len(seeds):
        raise ValueError(
            f"fit_stacked needs one of each per run: {len(models)} models, "
            f"{len(epoch_batches)} epoch_batches, {len(evaluates)} evaluates, {len(seeds)} seeds"
        )
    for name, fix in (("ddp", "train DDP runs one at a time (fit)"),
                      ("checkpoint_dir", "a stacked group restarts from its start instead"),
                      ("stop_at_accuracy", "runs of a group stop together: use max_steps")):  # fmt: skip
        if getattr(config, name):
            raise ValueError(f"fit_stacked does not support {name}: {fix}")
    first = stack_key(models[0])
    for i, m in enumerate(models[1:], 1):
        if stack_key(m) != first:
            raise ValueError(
                f"model {i} differs from model 0 in its parameters, buffers or trainable set: "
                "stack only runs of one architecture that train the same tensors"
            )
    if not any(p.requires_grad for p in models[0].parameters()):
        raise ValueError("fit_stacked: the models have no trainable parameter")


def _stack(items: Sequence[Any]) -> Any:
    """Run r's batch ``items[r]`` (a tensor, or tuples/lists/dicts of them) -> one batch with
    a leading run dimension; ValueError when their shapes differ."""
    first = items[0]
    if isinstance(first, torch.Tensor):
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) != 1:
            raise ValueError(
                f"stacked runs got batches of shapes {sorted(shapes)} at one step: stack only "
                "runs with the same batch size and number of training items"
            )
        return torch.stack(list(items))
    if isinstance(first, (tuple, list)):
        return type(first)(_stack(parts) for parts in zip(*items, strict=True))
    if isinstance(first, dict):
        return {k: _stack([it[k] for it in items]) for k in first}
    raise TypeError(f"cannot stack batches of type {type(first).__name__}")


class _Streams:
    """Each run's global RNG state: run r's draws (batches, evaluation) happen with its stream
    swapped in, as if it trained alone after ``torch.manual_seed(seeds[r])``."""

    def __init__(self, seeds: Sequence[int]) -> None:
        outer = _get_rng()
        self.states = []
        for s in seeds:
            torch.manual_seed(s)
            self.states.append(_get_rng())
        _set_rng(outer)

    @contextlib.contextmanager
    def of(self, r: int) -> Iterator[None]:
        outer = _get_rng()
        _set_rng(self.states[r])
        try:
            yield
        finally:
            self.states[r] = _get_rng()
            _set_rng(outer)


class _StackedLoop:
    """One call of :func:`fit_stacked`: the stacked tensors, the optimizer, each run's position
    in its epoch, evaluations and best state."""

    def __init__(self, models: Sequence[nn.Module], loss_fn: LossFn, evaluates: Sequence[EvalFn],
                 config: TrainConfig, seeds: Sequence[int]) -> None:  # fmt: skip
        self.models, self.evaluates, self.config = models, evaluates, config
        self.R = len(models)
        self.template = models[0]
        with torch.no_grad():
            named = [dict(m.named_parameters()) for m in models]
            bufs = [dict(m.named_buffers()) for m in models]
            self.params = {n: torch.stack([d[n].detach() for d in named]).requires_grad_()
                           for n, p in named[0].items() if p.requires_grad}  # fmt: skip
            self.consts = {n: torch.stack([d[n].detach() for d in named])
                           for n, p in named[0].items() if not p.requires_grad}  # fmt: skip
            self.consts.update({n: torch.stack([d[n] for d in bufs]) for n in bufs[0]})
        self.opt = OPTIMIZERS.get(config.optimizer)(list(self.params.values()), config)
        device = next(iter(self.params.values())).device
        self.autocast = _autocast(config.amp, device)
        self.streams = _Streams(seeds)
        template = self.template

        def run_loss(p: dict, c: dict, batch: Batch) -> torch.Tensor:
            return loss_fn(_Stateless(template, (p, c)), batch)

        self.losses = vmap(run_loss)  # (R,) losses of the stacked (p, c, batch)
        self.step = self.epoch = 0
        self.loss_sum = torch.zeros(self.R, dtype=torch.float64, device=device)
        self.loss_count, self.evaluated = 0, False
        self.history: list[list[dict[str, float]]] = [[] for _ in range(self.R)]
        self.best: list[tuple[float, int, int]] = [(-1.0, -1, -1)] * self.R  # acc, epoch, step
        self.best_state: list[dict[str, torch.Tensor] | None] = [None] * self.R
        self.bar: Any = None

    def train_mode(self) -> None:
        train_mode(self.template, self.config.norm_eval)

    def spent(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    @torch.no_grad()
    def write_run(self, r: int) -> None:
        """Run r's current tensors into ``models[r]`` (its own parameters and buffers)."""
        m = self.models[r]
        for n, t in m.named_parameters():
            t.copy_((self.params if n in self.params else self.consts)[n][r])
        for n, b in m.named_buffers():
            b.copy_(self.consts[n][r])

    def evaluate_and_select(self) -> None:
        losses = (self.loss_sum / max(self.loss_count, 1)).tolist()
        for r, model in enumerate(self.models):
            self.write_run(r)
            model.eval()
            with self.streams.of(r):
                metrics = _metrics(self.evaluates[r](model))
            acc = metrics["val_accuracy"]
            self.history[r].append({"epoch": self.epoch, "step": self.step, "loss": losses[r],
                                    **metrics})  # fmt: skip
            if acc > self.best[r][0]:
                self.best[r] = (acc, self.epoch, self.step)
                self.best_state[r] = copy.deepcopy(model.state_dict())
        self.loss_sum.zero_()
        self.loss_count, self.evaluated = 0, True
        self.bar.set_postfix(best=f"{sum(b[0] for b in self.best) / self.R:.3f}")
        self.train_mode()

    def train_step(self, batch: Batch) -> None:
        if self.config.lr_schedule != "constant":
            for group in self.opt.param_groups:
                group["lr"] = self.config.lr_at(self.step)
        with self.autocast():
            try:
                losses = self.losses(self.params, self.consts, batch)  # (R,)
            except RuntimeError as e:
                if "randomness" not in str(e):
                    raise
                raise ValueError(
                    "stacked runs cannot draw random numbers in the forward pass (dropout?): "
                    "turn dropout off or train the runs one at a time"
                ) from None
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # runs share no tensor: each gets its own gradient
        self.opt.step()
        self.loss_sum.add_(losses.detach().to(torch.float64))
        self.loss_count += 1
        self.step, self.evaluated = self.step + 1, False
        self.bar.update()

    def run_epoch(self, epoch_batches: Sequence[EpochBatches]) -> None:
        its = []
        for r, eb in enumerate(epoch_batches):
            with self.streams.of(r):
                its.append(iter(eb(self.epoch)))
        self.train_mode()
        while True:
            batches = []
            for r, it in enumerate(its):
                with self.streams.of(r):
                    batches.append(next(it, None))
            ended = [b is None for b in batches]
            if all(ended):
                break
            if any(ended):
                raise ValueError(
                    f"in epoch {self.epoch} runs {[r for r, e in enumerate(ended) if e]} ran out "
                    "of batches before the others: stack only runs with equally many batches"
                )
            self.train_step(_stack(batches))
            c = self.config
            if (c.eval_every and self.step % c.eval_every == 0) or self.spent():
                self.evaluate_and_select()
            if self.spent():
                return
        if self.config.eval_every is None:
            self.evaluate_and_select()
        self.epoch += 1


def fit_stacked(
    models: Sequence[nn.Module],
    epoch_batches: Sequence[EpochBatches],
    loss_fn: LossFn,
    evaluates: Sequence[EvalFn],
    config: TrainConfig,
    seeds: Sequence[int],
    desc: str = "train (stacked)",
    progress: bool = True,
) -> list[FitResult]:
    """Train ``models`` (one architecture, the same tensors trainable) together: run r as
    ``torch.manual_seed(seeds[r])`` then ``fit(models[r], epoch_batches[r], loss_fn,
    evaluates[r], config)`` would, up to float rounding (module docstring). The runs' batches
    must have the same shapes at every step (the same batch size and number of items).

    ``loss_fn(model, batch)`` is ``fit``'s; inside the vmap ``model`` is a stand-in that runs
    one run's tensors and ``batch`` one run's batch. Evaluation, selection of the best state,
    the step budget, ``eval_every``, ``lr_schedule``, ``norm_eval`` and ``amp`` are ``fit``'s;
    ``ddp``, ``checkpoint_dir`` and ``stop_at_accuracy`` are not supported (ValueError). On
    return each model holds the state of its best evaluation; each result's ``seconds`` is the
    group's training time (the runs shared it)."""
    _check(models, epoch_batches, evaluates, seeds, config)
    loop = _StackedLoop(models, loss_fn, evaluates, config, seeds)
    start = time.perf_counter()
    loop.bar = tqdm(total=config.max_steps, desc=desc, unit="step", disable=not progress,
                    leave=False)  # fmt: skip
    with warnings.catch_warnings():
        # CPU attention has no vmap rule: torch runs it once per run and says so; that is
        # what one-at-a-time training does anyway (docs/speed.md has the step times)
        warnings.filterwarnings("ignore", "There is a performance drop because we have not")
        while not loop.spent() and loop.epoch < config.epochs:
            loop.run_epoch(epoch_batches)
        if not loop.evaluated:
            loop.evaluate_and_select()
    loop.bar.close()
    seconds = time.perf_counter() - start
    results = []
    for r, model in enumerate(models):
        assert loop.best_state[r] is not None, "expected at least one evaluation"
        model.load_state_dict(loop.best_state[r])
        model.eval()
        acc, epoch, step = loop.best[r]
        results.append(FitResult(acc, epoch, loop.history[r], seconds, step, loop.step))
    return results
