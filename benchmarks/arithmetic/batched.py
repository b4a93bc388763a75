"""Train many runs of one GPT-2 architecture at once: every tensor gets a leading run dimension.

Each run keeps its own training rows, initial parameters, frozen entries (the transfer
parametrization ``where(mask, original, theta)`` of :mod:`subind.transfer`), trainable set,
AdamW state and best-on-validation bookkeeping; runs share nothing but the kernels, so a
group of R runs costs one forward/backward/optimizer step of R stacked models instead of R.

Runs are described by the models :meth:`subind.conditions.Condition.build` returns, so every
condition of the registry maps onto the batched trainer by construction: :func:`stack_runs`
reads each model's trainable tensors (``theta``), its frozen entries and values, and turns a
tensor that does not require grad into one whose entries are all frozen.

Grouping (a choice): runs trained together must see batches of the same size at every step,
i.e. have the same number of training rows and batch size; callers group runs by training-set
size (:func:`fit_batched` checks it). So each run sees exactly its own rows and its own number
of steps per epoch, and no compute is spent on masked-out steps.

Exactness: with ``exact`` (the default under ``torch.use_deterministic_algorithms(True)``)
every kernel computes each run's slice as the one-at-a-time model computes it (baddbmm runs one
gemm per run; layer norms run per run; embedding, attention and AdamW work per row or per
element), so with dropout off a group on CPU in float32 gives bit-identical parameters and the
same per-epoch validation accuracies as :func:`subind.train.fit` on each run
(tests/subind/test_batched.py). Otherwise one layer norm serves all runs and AdamW is fused:
equal up to float rounding, and faster.

Dropout: one draw per dropout site covers the whole (R, B, T, C) activation, seeded from the
group's ``seed``; one-at-a-time training draws each run's masks from the global generator
seeded with the run's seed. So each run's masks have the same distribution (i.i.d.
keep-probability 1 - p) but are other draws, and a run's draws depend on the group it was
trained in: results agree in distribution, not digit for digit (README: measured).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from benchmarks.arithmetic.gpt2 import GPT2, GPT2Config
from benchmarks.arithmetic.tasks import Batches
from subind.train import FitResult, TrainConfig
from subind.transfer import parameter_entries

EpochBatches = Callable[[int], Iterable[torch.Tensor]]


@dataclass
class StackedRuns:
    """R runs of one architecture as stacked tensors, each (R, *parameter shape).

    ``theta``: the trainable tensors (leaves with requires_grad), keyed by parameter name as in
    the un-parametrized model (tied parameters once). ``frozen``: {name: (mask bool, values)}
    for the tensors with frozen entries in at least one run; the forward pass uses
    ``where(mask, values, theta)`` (:meth:`effective`), or theta itself once
    :meth:`pin_frozen` has written the values into it (as :func:`fit_batched` does after every
    step, so whatever the optimizer does to frozen entries never reaches a forward pass).
    """

    theta: dict[str, torch.Tensor]
    frozen: dict[str, tuple[torch.Tensor, torch.Tensor]]

    @property
    def num_runs(self) -> int:
        return next(iter(self.theta.values())).shape[0]

    def effective(self) -> dict[str, torch.Tensor]:
        """{name: (R, *shape) tensor the forward pass uses}."""
        out = dict(self.theta)
        for name, (mask, values) in self.frozen.items():
            out[name] = torch.where(mask, values, self.theta[name])
        return out

    @torch.no_grad()
    def pin_frozen(self) -> None:
        """Write the frozen values into theta's frozen entries, in place: theta then equals
        :meth:`effective` and a forward pass can read it without a ``where`` (and its backward).
        A trainer that does so must pin again after every optimizer step."""
        for name, (mask, values) in self.frozen.items():
            self.theta[name].copy_(torch.where(mask, values, self.theta[name]))


def stack_runs(models: Sequence[nn.Module]) -> StackedRuns:
    """Stack the parameters of models of one architecture (e.g. from ``Condition.build``)."""
    assert models, "expected at least one model"
    per_run = [parameter_entries(m) for m in models]
    names = list(per_run[0])
    for i, t in enumerate(per_run[1:], 1):
        if set(t) != set(names) or any(t[n][0].shape != per_run[0][n][0].shape for n in names):
            raise ValueError(
                f"model {i} is not the architecture of model 0: batched runs must share it"
            )
    theta, frozen = {}, {}
    for name in names:
        thetas = [t[name][0].detach() for t in per_run]
        theta[name] = torch.stack(thetas).clone().requires_grad_(True)
        masks, values, any_frozen = [], [], False
        for t in per_run:
            th, fmask, fvalues = t[name]
            if not th.requires_grad:  # a tensor outside the trainable set: every entry frozen
                m, v = torch.ones_like(th, dtype=torch.bool), th.detach()
                if fmask is not None:
                    v = torch.where(fmask, fvalues, v)
            elif fmask is not None:
                m, v = fmask, fvalues
            else:
                m, v = torch.zeros_like(th, dtype=torch.bool), th.detach()
            any_frozen |= bool(m.any())
            masks.append(m)
            values.append(v)
        if any_frozen:
            frozen[name] = (torch.stack(masks), torch.stack(values).detach())
    return StackedRuns(theta, frozen)


def unstack_into(stacked: dict[str, torch.Tensor], models: Sequence[nn.Module]) -> None:
    """Write run r's slice of ``stacked`` ({name: (R, *shape) theta}) into ``models[r]``'s
    trainable tensors (frozen entries stay as their parametrization holds them)."""
    with torch.no_grad():
        for r, model in enumerate(models):
            for name, (theta, _, _) in parameter_entries(model).items():
                theta.copy_(stacked[name][r])


# --- the batched GPT-2 forward --------------------------------------------------------------------
def _linear(x: torch.Tensor, p: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """GPT-2 Conv1D per run: x (R, ..., in) -> (R, ..., out); one gemm per run as in addmm."""
    w, b = p[f"{name}.weight"], p[f"{name}.bias"]
    R, n_in = x.shape[0], x.shape[-1]
    y = torch.baddbmm(b.unsqueeze(1), x.reshape(R, -1, n_in), w)
    return y.view(*x.shape[:-1], w.shape[-1])


def _layer_norm(
    x: torch.Tensor, p: dict[str, torch.Tensor], name: str, eps: float, exact: bool
) -> torch.Tensor:
    w, b = p[f"{name}.weight"], p[f"{name}.bias"]
    if exact:  # the fused per-run kernel, forward and backward, as the one-at-a-time model
        return torch.stack(
            [F.layer_norm(x[r], x.shape[-1:], w[r], b[r], eps) for r in range(len(x))]
        )
    # One normalisation for all runs, then each run's affine: equal up to float rounding (the
    # fused kernel orders the affine's multiply-adds differently), and one kernel instead of R.
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return F.layer_norm(x, x.shape[-1:], None, None, eps) * w.view(shape) + b.view(shape)


def _dropout(x: torch.Tensor, p: float, training: bool, exact: bool) -> torch.Tensor:
    if not training or p == 0:
        return x
    if exact:
        return F.dropout(x, p, True)
    # The same Bernoulli(1 - p) keep mask and 1 / (1 - p) scale as F.dropout, from a uniform
    # draw: several times cheaper than bernoulli_ on a CPU.
    return torch.where(torch.rand_like(x) >= p, x * (1.0 / (1.0 - p)), 0.0)


def gpt2_last_logits(
    cfg: GPT2Config,
    p: dict[str, torch.Tensor],
    idx: torch.Tensor,
    training: bool,
    exact: bool = False,
) -> torch.Tensor:
    """Batched :class:`benchmarks.arithmetic.gpt2.GPT2` forward with ``last_only``: parameters ``p``
    ({name: (R, *shape)}), tokens ``idx`` (R, B, T) int64 -> logits (R, B, vocab).

    ``exact``: every kernel computes each run's slice as the one-at-a-time model does, bit for
    bit. Otherwise layer norms are fused across runs and dropout masks come from a uniform
    draw, which changes the result by float rounding only (about 1e-6 relative).
    """
    R, B, T = idx.shape
    wte = p["transformer.wte.weight"]  # (R, V, C)
    V, C = wte.shape[1:]
    eps, drop = cfg.layer_norm_epsilon, cfg.dropout
    offsets = (torch.arange(R, device=idx.device) * V).view(R, 1, 1)
    tok = F.embedding(idx + offsets, wte.reshape(R * V, C))  # (R, B, T, C)
    x = _dropout(tok + p["transformer.wpe.weight"][:, None, :T], drop, training, exact)
    h, d = cfg.n_head, C // cfg.n_head
    for i in range(cfg.n_layer):
        pre = f"transformer.h.{i}"
        last = i == cfg.n_layer - 1  # as GPT2.forward(last_only=True)
        a = _linear(_layer_norm(x, p, f"{pre}.ln_1", eps, exact), p, f"{pre}.attn.c_attn")
        q, k, v = (t.reshape(R * B, T, h, d).transpose(1, 2) for t in a.split(C, dim=-1))
        if last:  # the last query attends to every key: causal without a mask
            q, x = q[:, :, -1:], x[:, :, -1:]
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=drop if training else 0.0, is_causal=not last
        )
        y = y.transpose(1, 2).reshape(*x.shape)
        x = x + _dropout(_linear(y, p, f"{pre}.attn.c_proj"), drop, training, exact)
        m = _linear(_layer_norm(x, p, f"{pre}.ln_2", eps, exact), p, f"{pre}.mlp.c_fc")
        m = _linear(F.gelu(m, approximate="tanh"), p, f"{pre}.mlp.c_proj")
        x = x + _dropout(m, drop, training, exact)
    x = _layer_norm(x[:, :, -1], p, "transformer.ln_f", eps, exact)  # (R, B, C)
    return torch.bmm(x, wte.transpose(1, 2))  # tied head


@torch.no_grad()
def stacked_accuracies(
    cfg: GPT2Config,
    p: dict[str, torch.Tensor],
    rows: torch.Tensor,
    exact: bool,
    batch_size: int | None = None,
) -> list[float]:
    """Per run, the fraction of rows (R, N, T+1) whose last token is the argmax prediction.
    ``exact``: chunks of 8192 rows per run, as :func:`benchmarks.arithmetic.tasks.accuracy`; else
    on a CPU about 2048 rows for all runs together (activations that stay in cache: 1.6x
    faster than one large chunk), on a GPU 8192 per run."""
    if batch_size is None:
        batch_size = 8192 if exact or rows.is_cuda else max(16, 2048 // rows.shape[0])
    correct = torch.zeros(rows.shape[0], dtype=torch.long, device=rows.device)
    for i in range(0, rows.shape[1], batch_size):
        chunk = rows[:, i : i + batch_size]
        pred = gpt2_last_logits(cfg, p, chunk[..., :-1], False, exact).argmax(-1)
        correct += (pred == chunk[..., -1]).sum(1)
    return [c / max(rows.shape[1], 1) for c in correct.tolist()]


def _stack_rows(rows: Sequence[torch.Tensor], what: str) -> torch.Tensor:
    if len({tuple(r.shape) for r in rows}) != 1:
        raise ValueError(
            f"batched runs need {what} of one shape, got {sorted({tuple(r.shape) for r in rows})}: "
            "group runs by training-set size"
        )
    return torch.stack(list(rows))


def _stacked_train(epoch_batches: Sequence[EpochBatches]) -> torch.Tensor | None:
    """(R, N, T+1) training rows when every run is a :class:`Batches` of one shape and batch
    size (then one gather per step replaces R; the same rows in the same order)."""
    if not all(isinstance(eb, Batches) for eb in epoch_batches):
        return None
    if len({(eb.rows.shape, eb.batch_size) for eb in epoch_batches}) != 1:
        return None
    return torch.stack([eb.rows for eb in epoch_batches])


def _epoch_batches(
    epoch_batches: Sequence[EpochBatches], epoch: int, stacked: torch.Tensor | None
) -> Iterator[torch.Tensor]:
    """Each step's (R, B, T+1) batch: run r's batch from ``epoch_batches[r](epoch)``."""
    if stacked is None:
        for batch in zip(*(eb(epoch) for eb in epoch_batches), strict=True):
            yield _stack_rows(batch, "batches")
        return
    orders = torch.stack([eb.order(epoch) for eb in epoch_batches]).to(stacked.device)
    runs = torch.arange(len(epoch_batches), device=stacked.device).unsqueeze(1)
    size = epoch_batches[0].batch_size
    for i in range(0, orders.shape[1], size):
        yield stacked[runs, orders[:, i : i + size]]


def fit_batched(
    models: Sequence[GPT2],
    epoch_batches: Sequence[EpochBatches],
    val_rows: Sequence[torch.Tensor],
    config: TrainConfig,
    seed: int = 0,
    exact: bool | None = None,
    desc: str = "train (batched)",
    progress: bool = True,
) -> list[FitResult]:
    """Train ``models`` (same architecture, e.g. from ``Condition.build``) together on the
    last-token loss: run r trains on ``epoch_batches[r](epoch)`` (batches (B, T+1) int64 rows,
    the same B for every run at each step) and is evaluated on ``val_rows[r]`` (N, T+1) after
    each epoch, or every ``config.eval_every`` steps and after the last, as
    :func:`subind.train.fit`. AdamW with ``config`` as ``fit``; on return each model holds the
    state of its best evaluation (ties: the earliest). ``seed`` seeds dropout.

    ``exact`` (default: ``torch.are_deterministic_algorithms_enabled()``): compute each run
    bit for bit as :func:`subind.train.fit` would (with dropout off, the same accuracies on
    CPU); otherwise the faster kernels of :func:`gpt2_last_logits` and a fused AdamW, equal up
    to float rounding.
    """
    if exact is None:
        exact = torch.are_deterministic_algorithms_enabled()
    assert config.stop_at_accuracy is None, "fit_batched runs every epoch (no early stop)"
    assert config.max_steps is None, "fit_batched runs every epoch (no step budget)"
    assert len(models) == len(epoch_batches) == len(val_rows), "expected one of each per run"
    cfg = models[0].config
    if any(m.config != cfg for m in models):
        raise ValueError("batched runs must share one GPT2Config")
    runs = stack_runs(models)
    R = runs.num_runs
    params = list(runs.theta.values())
    opt = torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
        fused=None if exact else True,  # fused: one kernel per tensor, rounding-level changes
    )
    val = _stack_rows(val_rows, "validation rows")
    stacked_train = _stacked_train(epoch_batches)
    # The forward pass reads theta with its frozen entries pinned to their values (13% of a
    # step faster than where(mask, values, theta) at the quick preset's width). Frozen entries
    # then get gradients, AdamW moments and weight decay, all overwritten by the next pin;
    # AdamW updates each entry from that entry's gradient and state alone, so the trainable
    # entries follow exactly the steps they follow under the where.
    runs.pin_frozen()
    best_acc, best_epoch, best_step = [-1.0] * R, [-1] * R, [-1] * R
    best = {n: t.detach().clone() for n, t in runs.theta.items()}
    history: list[list[dict[str, float]]] = [[] for _ in range(R)]
    torch.manual_seed(seed)
    start = time.perf_counter()
    totals = torch.zeros(R, dtype=torch.float64, device=val.device)  # loss since the last eval
    count, step, epoch, evaluated = 0, 0, 0, False

    def evaluate_and_select() -> None:
        nonlocal totals, count, evaluated
        with torch.no_grad():
            accs = stacked_accuracies(cfg, runs.theta, val, exact)  # pinned: effective
        improved = [r for r in range(R) if accs[r] > best_acc[r]]
        if improved:
            idx = torch.tensor(improved, device=val.device)
            with torch.no_grad():
                for n, t in runs.theta.items():
                    best[n].index_copy_(0, idx, t.detach().index_select(0, idx))
        mean_loss = (totals / max(count, 1)).tolist()
        for r in range(R):
            if r in improved:
                best_acc[r], best_epoch[r], best_step[r] = accs[r], epoch, step
            history[r].append(
                {"epoch": epoch, "step": step, "loss": mean_loss[r], "val_accuracy": accs[r]}
            )
        totals, count, evaluated = torch.zeros_like(totals), 0, True
        bar.set_postfix(best=f"{sum(best_acc) / R:.3f}")

    bar = tqdm(range(config.epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        for rows in _epoch_batches(epoch_batches, epoch, stacked_train):  # (R, B, T+1)
            logits = gpt2_last_logits(cfg, runs.theta, rows[..., :-1], True, exact)
            R_, B, V = logits.shape
            losses = F.cross_entropy(
                logits.reshape(R_ * B, V), rows[..., -1].reshape(-1), reduction="none"
            )
            loss = losses.view(R_, B).mean(1)  # (R,): each run's mean, as in fit
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # runs share no parameter: each gets its own gradient
            opt.step()
            runs.pin_frozen()
            totals += loss.detach().double()  # on the device: no sync per step
            count, step, evaluated = count + 1, step + 1, False
            if config.eval_every and step % config.eval_every == 0:  # as fit: every N steps
                evaluate_and_select()
        if config.eval_every is None:  # after each epoch
            evaluate_and_select()
    if not evaluated:  # as fit: the last steps are always evaluated, as of epoch `epochs`
        epoch = config.epochs
        evaluate_and_select()
    seconds = time.perf_counter() - start
    unstack_into(best, models)
    for m in models:
        m.eval()
    return [
        FitResult(best_acc[r], best_epoch[r], history[r], seconds, best_step[r], step)
        for r in range(R)
    ]
