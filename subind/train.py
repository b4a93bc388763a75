"""The training loop shared by every stage: best-on-validation model selection, an optimizer
choice, a step budget, resumable checkpoints, DDP under torchrun and bf16 autocast.

Resume is exact (the same final state and history as an uninterrupted run, on CPU) when
``epoch_batches(epoch)`` yields the same batches whenever it is called with the same global RNG
state (torch, python ``random``, numpy) for the same epoch, e.g. a shuffle seeded by
``(seed, epoch)``, a DataLoader driven by :class:`LoaderEpochs`, or one that draws from the global
RNG. ``fit`` restores the RNG state it saw at the start of the interrupted epoch, calls
``epoch_batches(epoch)`` again and draws (and discards) the batches already trained on, then
restores the RNG state of the checkpoint. Skipping thus costs the loading of at most one epoch's
batches, no forward or backward pass; since the skipped batches are really drawn, random
augmentations (in the main process or in DataLoader workers, whose seeds come from the epoch's
RNG; not with ``persistent_workers``) replay too. On CUDA, "exact" further needs deterministic
kernels (``torch.use_deterministic_algorithms``); otherwise a resumed run differs by float noise.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import itertools
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from subind.io import write_with_atomic
from subind.registry import Registry
from subind.runtime import group_rank_world

Batch = Any
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
# The selection metric, or {"val_accuracy": selection metric, other metrics...} (all recorded).
EvalFn = Callable[[nn.Module], "float | Mapping[str, float]"]
OptimizerFn = Callable[[list[nn.Parameter], "TrainConfig"], torch.optim.Optimizer]

CHECKPOINT_FILE = "checkpoint.pt"
AMP_MODES = ("bf16",)
LR_SCHEDULES = ("constant", "linear")
_CHECKPOINT_FORMAT = 1
# Fields that may change between an interrupted run and its resumption (a longer budget, another
# checkpoint cadence); every other field must match the checkpoint's.
_RESUMABLE_CHANGES = ("epochs", "max_steps", "checkpoint_dir", "checkpoint_every")

OPTIMIZERS: Registry[OptimizerFn] = Registry("optimizer")


@OPTIMIZERS.register("adamw", "AdamW: lr, betas, decoupled weight_decay")
def _adamw(params: list[nn.Parameter], c: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)


@OPTIMIZERS.register("sgd", "SGD: lr, momentum, L2 weight_decay (the paper's vision training)")
def _sgd(params: list[nn.Parameter], c: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100  # with max_steps: an upper bound
    lr: float = 2e-4
    weight_decay: float = 0.01  # AdamW's default; decoupled, so frozen entries must be guarded
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    # Stop once validation accuracy has reached this value (None: run every epoch).
    stop_at_accuracy: float | None = None
    optimizer: str = "adamw"  # a name in OPTIMIZERS
    momentum: float = 0.9  # sgd
    # "constant", or "linear": lr * (1 - step / max_steps) after each step, down to 0 at the
    # budget's end (transformers' default schedule, no warm-up); needs max_steps.
    lr_schedule: str = "constant"
    max_steps: int | None = None  # stop after this many optimizer steps (summed over epochs)
    eval_every: int | None = None  # evaluate and select every N steps; None: after each epoch
    checkpoint_dir: str | None = None  # keep a resumable checkpoint here; fit() resumes from it
    checkpoint_every: int | None = None  # write it every N steps; None: after each evaluation
    amp: str | None = None  # "bf16": autocast the loss to bfloat16 on CUDA (fp32 on CPU)
    # BatchNorm layers stay in eval mode while training: running statistics frozen, as a linear
    # probe on a frozen backbone needs (Linear FT).
    norm_eval: bool = False
    # Train across the ranks of an initialized process group with DDP. Off by default: a rank that
    # trains runs of its own (e.g. a rank-sliced sweep, a stage only rank 0 runs) must not wait
    # for the others.
    ddp: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(OPTIMIZERS.unknown_message(self.optimizer))
        if self.amp is not None and self.amp not in AMP_MODES:
            raise ValueError(f"amp must be None or one of {AMP_MODES}, got {self.amp!r}")
        for name in ("max_steps", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every needs checkpoint_dir: set both or neither")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_schedule == "linear" and self.max_steps is None:
            raise ValueError("lr_schedule='linear' decays over max_steps: set max_steps")

    def lr_at(self, step: int) -> float:
        """The learning rate of the step after ``step`` steps."""
        if self.lr_schedule == "linear":
            return self.lr * max(0.0, 1.0 - step / self.max_steps)
        return self.lr


@dataclass
class FitResult:
    best_accuracy: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  # training time, summed over resumed sessions
    best_step: int = -1  # optimizer steps taken when the kept state was evaluated
    steps: int = 0  # optimizer steps taken in all
    resumed_from: int | None = None  # the checkpoint's step, if this call resumed one


class LoaderEpochs:
    """``epoch -> iterator over loader``, for ``fit``: calls ``set_epoch`` on a sampler that has it
    (DistributedSampler) and reseeds the loader's and sampler's own ``torch.Generator`` (if any)
    from ``(seed, epoch)``, so each epoch's order and worker seeds depend on the epoch alone, as
    resume requires. ``seed`` defaults to the generator's initial seed."""

    def __init__(self, loader: torch.utils.data.DataLoader, seed: int | None = None) -> None:
        self.loader = loader
        sampler = self._sampler()
        self._generators = {
            id(g): g
            for g in (loader.generator, getattr(sampler, "generator", None))
            if isinstance(g, torch.Generator)
        }
        gens = list(self._generators.values())
        self.seed = seed if seed is not None else (gens[0].initial_seed() if gens else 0)

    def _sampler(self) -> Any:
        batch_sampler = self.loader.batch_sampler
        return getattr(batch_sampler, "sampler", None) or self.loader.sampler

    def __call__(self, epoch: int) -> Iterator[Batch]:
        sampler = self._sampler()
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for g in self._generators.values():
            g.manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


# --- RNG and checkpoints ------------------------------------------------------------------------
def _get_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # this rank's device only: touching every device would open a context on each
        state["cuda"] = torch.cuda.get_rng_state()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
    except ImportError:  # numpy is optional; nothing can draw from it then
        pass
    return state


def _set_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


@dataclass
class _State:
    """Everything a resumed run needs besides model, optimizer and RNG."""

    step: int = 0
    epoch: int = 0  # the epoch in progress
    batch: int = 0  # batches of that epoch already trained on
    loss_sum: float = 0.0  # training loss summed since the last evaluation ...
    loss_count: int = 0  # ... over this many steps
    best_accuracy: float = -1.0
    best_epoch: int = -1
    best_step: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    evaluated: bool = False  # the current step has been evaluated
    stopped: bool = False  # stop_at_accuracy was reached


def _config_key(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d["betas"] = list(d["betas"])
    return {k: v for k, v in d.items() if k not in _RESUMABLE_CHANGES}


def _save_checkpoint(
    path: Path,
    module: nn.Module,
    opt: torch.optim.Optimizer,
    s: _State,
    best_state: dict[str, torch.Tensor] | None,
    config: TrainConfig,
    rng: tuple[dict, dict | None],
    rank: int,
    world: int,
) -> None:
    """Write the checkpoint atomically from rank 0 (every rank must call: RNG states are
    gathered, one per rank, and the others wait until it is written)."""
    rngs = [rng]
    if world > 1:
        rngs = [None] * world
        dist.all_gather_object(rngs, rng)
    if rank == 0:
        payload = {
            "format": _CHECKPOINT_FORMAT,
            "config": _config_key(config),
            "world": world,
            "model": module.state_dict(),
            "optimizer": opt.state_dict(),
            "state": asdict(s),
            "best_state": best_state,
            "rng": [r[0] for r in rngs],
            "rng_epoch": [r[1] for r in rngs],
        }
        write_with_atomic(path, lambda tmp: torch.save(payload, tmp))
    if world > 1:  # no rank reads (e.g. resumes from) a checkpoint that is not finished
        dist.barrier()


def _load_checkpoint(
    path: Path,
    module: nn.Module,
    opt: torch.optim.Optimizer,
    config: TrainConfig,
    rank: int,
    world: int,
) -> tuple[_State, dict | None, dict, dict | None]:
    """Load ``path`` into module and optimizer; return (state, best state, rng, epoch rng)."""
    fix = f"delete {path} to start afresh, or give another checkpoint_dir"
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path} ({type(e).__name__}): {fix}") from None
    if ck.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} has an unknown format: {fix}")
    key = _config_key(config)
    saved = {"lr_schedule": "constant", **ck["config"]}  # written before lr_schedule existed
    for name, value in key.items():
        if saved.get(name) != value:
            raise ValueError(
                f"checkpoint {path} was written with {name}={saved.get(name)!r}, this run "
                f"has {name}={value!r}: {fix}"
            )
    if ck["world"] != world:
        raise ValueError(
            f"checkpoint {path} was written by {ck['world']} processes, this run has {world}: "
            f"resume with the same number of processes, or {fix}"
        )
    try:
        module.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"checkpoint {path} does not fit this model ({first}): {fix}") from None
    return _State(**ck["state"]), ck["best_state"], ck["rng"][rank], ck["rng_epoch"][rank]


def _broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's changing buffers (BatchNorm statistics); parametrization
    buffers (transfer's masks and frozen originals) are constants, the same on every rank."""
    for name, b in model.named_buffers():
        if ".parametrizations." not in name:
            dist.broadcast(b, 0)


def _no_forward_sync() -> dict[str, bool]:
    """DDP's option for no buffer broadcast at each forward (renamed in newer torch, which
    still syncs at construction)."""
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    if "forward_sync_buffers" in params:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


# --- the loop -----------------------------------------------------------------------------------
def _autocast(
    amp: str | None, device: torch.device
) -> Callable[[], contextlib.AbstractContextManager]:
    if amp is None:
        return contextlib.nullcontext
    if device.type != "cuda":
        warnings.warn(
            f"amp={amp!r} autocasts on CUDA only; the model is on {device.type}, training in fp32",
            stacklevel=3,
        )
        return contextlib.nullcontext
    return lambda: torch.autocast("cuda", dtype=torch.bfloat16)


def _metrics(value: float | Mapping[str, float]) -> dict[str, float]:
    if isinstance(value, Mapping):
        if "val_accuracy" not in value:
            raise ValueError(
                "evaluate returned a mapping without 'val_accuracy' (the selection metric): "
                f"got keys {sorted(value)}"
            )
        return {k: float(v) for k, v in value.items()}
    return {"val_accuracy": float(value)}


def train_mode(model: nn.Module, norm_eval: bool) -> None:
    """``model.train()``; with ``norm_eval`` its BatchNorm layers stay in eval mode (running
    statistics frozen: TrainConfig.norm_eval)."""
    model.train()
    if norm_eval:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


class _Loop:
    """One call of :func:`fit`: the model, its optimizer, the position and the best state so
    far; one method per part of the loop (evaluate and select, checkpoint, train one epoch)."""

    def __init__(
        self, model: nn.Module, loss_fn: LossFn, evaluate: EvalFn, config: TrainConfig
    ) -> None:
        self.model, self.loss_fn, self.evaluate, self.config = model, loss_fn, evaluate, config
        self.rank, self.world = group_rank_world() if config.ddp else (0, 1)
        params = [p for p in model.parameters() if p.requires_grad]
        assert params, "expected at least one trainable parameter"
        self.opt = OPTIMIZERS.get(config.optimizer)(params, config)
        self.autocast = _autocast(config.amp, params[0].device)
        self.ckpt = Path(config.checkpoint_dir) / CHECKPOINT_FILE if config.checkpoint_dir else None
        self.s, self.best_state, self.rng, self.rng_epoch = _State(), None, None, None
        self.resumed_from: int | None = None
        if self.ckpt is not None and self.ckpt.exists():
            self.s, self.best_state, self.rng, self.rng_epoch = _load_checkpoint(
                self.ckpt, model, self.opt, config, self.rank, self.world
            )
            self.resumed_from = self.s.step
        self.net: nn.Module = model
        if self.world > 1:
            device = params[0].device
            ids = [device.index] if device.type == "cuda" else None
            # Buffers are synchronised before each evaluation instead of at every forward:
            # training uses batch statistics, and transfer's frozen originals never change.
            self.net = nn.parallel.DistributedDataParallel(
                model, device_ids=ids, **_no_forward_sync()
            )
        self.seconds0, self.start = self.s.seconds, time.perf_counter()
        self.loss_sum = torch.tensor(self.s.loss_sum, dtype=torch.float64, device=params[0].device)
        self.bar: Any = None

    def train_mode(self) -> None:
        train_mode(self.net, self.config.norm_eval)

    def spent(self) -> bool:
        return self.config.max_steps is not None and self.s.step >= self.config.max_steps

    def evaluate_and_select(self) -> None:
        s = self.s
        totals = torch.stack([self.loss_sum, self.loss_sum.new_tensor(float(s.loss_count))])
        if self.world > 1:  # the mean over every rank's steps; rank 0's BatchNorm statistics
            dist.all_reduce(totals)
            _broadcast_buffers(self.model)
        loss = float(totals[0]) / max(int(totals[1]), 1)
        self.model.eval()
        metrics = _metrics(self.evaluate(self.model))
        if self.world > 1:
            box = [metrics]
            dist.broadcast_object_list(box, 0)
            metrics = box[0]
        acc = metrics["val_accuracy"]
        s.history.append({"epoch": s.epoch, "step": s.step, "loss": loss, **metrics})
        if acc > s.best_accuracy:
            s.best_accuracy, s.best_epoch, s.best_step = acc, s.epoch, s.step
            self.best_state = copy.deepcopy(self.model.state_dict())
        self.loss_sum.zero_()
        s.loss_count, s.evaluated = 0, True
        if self.config.stop_at_accuracy is not None and acc >= self.config.stop_at_accuracy:
            s.stopped = True
        self.bar.set_postfix(
            epoch=s.epoch, loss=f"{loss:.3f}", val=f"{acc:.3f}", best=f"{s.best_accuracy:.3f}"
        )

    def save(self) -> None:
        s = self.s
        s.loss_sum, s.seconds = (
            float(self.loss_sum),
            self.seconds0 + time.perf_counter() - self.start,
        )
        _save_checkpoint(
            self.ckpt, self.model, self.opt, s, self.best_state, self.config,
            (_get_rng(), self.rng_epoch), self.rank, self.world,
        )  # fmt: skip

    def _epoch_start(self, epoch_batches: Callable[[int], Iterable[Batch]]) -> Iterator[Batch]:
        """This epoch's batches; on a resume mid-epoch, the epoch's start is replayed (same RNG
        state) and the batches already trained on are drawn and dropped."""
        s, skip = self.s, self.s.batch
        if skip:
            _set_rng(self.rng_epoch)
        elif self.ckpt is not None:
            self.rng_epoch = _get_rng()
        batches = iter(epoch_batches(s.epoch))
        if skip:
            skipped = sum(1 for _ in itertools.islice(batches, skip))
            if skipped != skip:
                raise ValueError(
                    f"on resume epoch_batches({s.epoch}) yielded {skipped} batches, the "
                    f"checkpoint had trained on {skip}: it must be deterministic per epoch"
                )
            _set_rng(self.rng)
        return batches

    def _step(self, batch: Batch) -> None:
        if self.config.lr_schedule != "constant":
            for group in self.opt.param_groups:
                group["lr"] = self.config.lr_at(self.s.step)
        with self.autocast():
            loss = self.loss_fn(self.net, batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.loss_sum.add_(loss.detach().to(torch.float64))
        s = self.s
        s.loss_count += 1
        s.step, s.batch, s.evaluated = s.step + 1, s.batch + 1, False
        self.bar.update()

    def epoch(self, epoch_batches: Callable[[int], Iterable[Batch]]) -> None:
        """Train on the batches of the epoch in progress (from where a resume left it), with
        the evaluations and checkpoints that fall in it."""
        s, config = self.s, self.config
        batches = self._epoch_start(epoch_batches)
        self.train_mode()
        for batch in batches:
            self._step(batch)
            if (config.eval_every and s.step % config.eval_every == 0) or self.spent():
                self.evaluate_and_select()
                self.train_mode()
            if self.ckpt is not None and (
                (config.checkpoint_every and s.step % config.checkpoint_every == 0)
                or (config.checkpoint_every is None and s.evaluated)
            ):
                self.save()
            if s.stopped or self.spent():
                return
        if config.eval_every is None:  # the epoch is complete
            self.evaluate_and_select()
        s.epoch, s.batch = s.epoch + 1, 0
        if self.ckpt is not None and config.checkpoint_every is None and config.eval_every is None:
            self.save()

    def finish(self) -> FitResult:
        """The last evaluation (if the last steps had none), the final checkpoint, and the best
        state loaded into the model."""
        s = self.s
        if not s.evaluated:
            self.evaluate_and_select()
        self.bar.close()
        if self.ckpt is not None:
            self.save()
        assert self.best_state is not None, "expected at least one evaluation"
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        seconds = self.seconds0 + time.perf_counter() - self.start
        return FitResult(
            s.best_accuracy, s.best_epoch, s.history, seconds, s.best_step, s.step,
            self.resumed_from,
        )  # fmt: skip


def fit(
    model: nn.Module,
    epoch_batches: Callable[[int], Iterable[Batch]],
    loss_fn: LossFn,
    evaluate: EvalFn,
    config: TrainConfig,
    desc: str = "train",
    progress: bool = True,
) -> FitResult:
    """Train the parameters of ``model`` that require grad; evaluate (model in eval mode) after
    each epoch or every ``config.eval_every`` steps, and at the end of a step budget, keeping the
    best state. On return ``model`` holds the state of its best evaluation (ties: the earliest).

    ``loss_fn(model, batch)`` returns a scalar loss; ``evaluate(model)`` returns the selection
    metric, or a mapping with it as ``"val_accuracy"`` and further metrics, all recorded in the
    history (entries ``{"epoch", "step", "loss", "val_accuracy", ...}``; ``loss`` is the mean
    training loss since the previous evaluation).

    With ``config.checkpoint_dir``, a checkpoint (model incl. parametrizations' tensors,
    optimizer, position, RNG states, best state, history) is written there atomically, and a call
    that finds one resumes from it (see the module docstring for when that is exact). A finished
    run's checkpoint makes a second call return the same result at once.

    With ``config.ddp`` under ``torch.distributed`` with world > 1 the model is wrapped in
    DistributedDataParallel (``loss_fn`` gets the wrapper); each rank must yield its own,
    equally many batches (e.g. :class:`LoaderEpochs` over a DataLoader with a
    DistributedSampler). Before each evaluation buffers (e.g. BatchNorm statistics) are
    broadcast from rank 0; ``evaluate`` runs on every rank on the unwrapped model (it may shard
    its data and all-reduce) and rank 0's metrics are used by all, so every rank selects and
    returns the same state. Rank 0 writes the checkpoints (a resumed run must see them at the
    same path, with the same world size). With NCCL each rank must have set its CUDA device
    (:func:`subind.runtime.resolve_device`) and moved the model there."""
    loop = _Loop(model, loss_fn, evaluate, config)
    loop.bar = tqdm(
        total=config.max_steps, initial=loop.s.step, desc=desc, unit="step", disable=not progress,
        leave=False,
    )  # fmt: skip
    if loop.rng is not None:
        _set_rng(loop.rng)
    while not loop.s.stopped and not loop.spent() and loop.s.epoch < config.epochs:
        loop.epoch(epoch_batches)
    return loop.finish()
