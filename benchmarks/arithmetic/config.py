"""Settings of the arithmetic reproduction (paper Figure 3, Table 3, Appendix B) and its presets."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from benchmarks.arithmetic.expression import Expression
from benchmarks.base import ConfigError, check_names
from subind.conditions import CONDITIONS, DEFAULT_CONDITIONS
from subind.provenance import config_digest
from subind.registry import Registry
from subind.transfer import UNMASKED_MODES

# The paper's 16 log-spaced disambiguation sizes from 10 to 10^4, plus 0.
PAPER_SIZES = (0,) + tuple(int(round(x)) for x in np.logspace(1, 4, 16))


@dataclass(frozen=True)
class Fig3Config:
    # Tasks: expressions in a, b taken mod `modulus`; numbers are tokens in [0, max_number).
    source_task: str = "a+ab"
    subtask: str = "ab"
    target_task: str = "a^2+ab"
    max_number: int = 1000
    modulus: int = 7
    # GPT-2 decoder (Appendix B.1): n_embd 128, 4 heads, inner 512.
    layers: tuple[int, ...] = (2, 4, 6, 8, 10, 12)
    n_embd: int = 128
    n_head: int = 4
    n_inner: int = 512
    dropout: float = 0.1
    # Stage 1, base model on the source task: 20% of all pairs, 20,000 test rows.
    base_train_rows: int = 200_000
    base_val_rows: int = 2_000
    base_test_rows: int = 20_000
    base_epochs: int = 30
    base_lr: float = 5e-4
    base_batch_size: int = 50
    base_stop_accuracy: float = 0.999  # stop early once validation reaches it
    base_min_accuracy: float = 0.99  # precondition for discovery
    base_seed: int = 0
    # Stage 2, discovery of the subtask (50,000 rows; 50 epochs, lr 1e-3, lambda 1e-7).
    discovery_rows: int = 50_000
    discovery_eval_rows: int = 2_000
    discovery_epochs: int = 50
    discovery_lr: float = 1e-3
    discovery_penalty: float = 1e-7
    beta_final: float = 100.0
    discovery_batch_size: int = 50
    mask_bias: bool = False  # also mask the attention/MLP biases (the paper masked weights only)
    subnetwork_min_accuracy: float = 0.99  # precondition for transfer
    # Stage 3, transfer to the target task: ambiguous set (a == b) + n disambiguating rows.
    sizes: tuple[int, ...] = PAPER_SIZES
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    conditions: tuple[str, ...] = DEFAULT_CONDITIONS
    unmasked: tuple[str, ...] = ("inherit", "reinit")  # first entry: what subtask runs default to
    subnetwork_trainable: bool = False
    transfer_epochs: int = 100
    transfer_lr: float = 2e-4
    transfer_batch_size: int = 50
    # Epochs between validation evaluations (each picks the best state so far; the last epoch
    # is always evaluated): 1, after every epoch, as the paper.
    transfer_eval_every: int = 1
    eval_rows: int = 1_000  # validation and test, each
    # Execution (not part of any cache key): parallel worker processes for the transfer grid
    # (one torch thread each), the device ("auto": CUDA when available), and transfer runs
    # trained together per batched group (benchmarks.arithmetic.batched; 0: automatic,
    # memory-aware size; 1: one at a time with subind.train.fit).
    workers: int = 1
    device: str = "auto"
    batch_runs: int = 0

    def digest(self, *names: str) -> str:
        """A short hash of the named settings (all when none): the cache key of a stage."""
        return config_digest(self, *names)


# What may differ between runs into one output folder: which runs, and how they execute.
FOLDER_FREE = ("layers", "sizes", "seeds", "conditions", "unmasked", "workers", "device",
               "batch_runs")  # fmt: skip

# Settings each stage's output depends on (so editing e.g. the seeds reuses the base models).
BASE_KEYS = [
    "source_task",
    "max_number",
    "modulus",
    "n_embd",
    "n_head",
    "n_inner",
    "dropout",
    "base_train_rows",
    "base_val_rows",
    "base_test_rows",
    "base_epochs",
    "base_lr",
    "base_batch_size",
    "base_stop_accuracy",
    "base_seed",
]
DISCOVERY_KEYS = BASE_KEYS + [
    "subtask",
    "discovery_rows",
    "discovery_eval_rows",
    "discovery_epochs",
    "discovery_lr",
    "discovery_penalty",
    "beta_final",
    "discovery_batch_size",
    "mask_bias",
]
TRANSFER_KEYS = DISCOVERY_KEYS + [
    "target_task",
    "subnetwork_trainable",
    "transfer_epochs",
    "transfer_lr",
    "transfer_batch_size",
    "transfer_eval_every",
    "eval_rows",
]

# The quick preset before it had to fit 5 minutes (about 26 minutes on 2 cores): numbers in
# [0, 100), 2 layers of the paper's width 128, 6 sizes up to 1,000 (where every condition
# reaches 0.99), 2 seeds, every row count scaled down, validation after every epoch, plus the
# unmasked-only control; why each setting is what it is: docs/fig3.md ("The quick preset").
_CPU = Fig3Config(
    max_number=100,
    layers=(2,),
    base_train_rows=5_000,
    base_val_rows=500,
    base_test_rows=1_000,
    base_epochs=40,
    base_stop_accuracy=0.995,
    discovery_rows=3_000,
    discovery_eval_rows=500,
    discovery_epochs=40,
    discovery_lr=6e-3,
    sizes=(0, 10, 30, 100, 300, 1000),
    seeds=(0, 1),
    conditions=DEFAULT_CONDITIONS + ("unmasked-only",),
    transfer_epochs=150,
    eval_rows=500,
    workers=2,
)

_PRESETS: dict[str, Fig3Config] = {
    # The paper's settings (Section 4.2, Appendix B.1). Base epochs are not given in the paper;
    # 30 with an early stop at 99.9% validation accuracy.
    "paper": Fig3Config(),
    # CPU quick run, about 5 minutes on 2 cores (docs/speed.md): the cpu preset at width 64,
    # sizes up to 300, validation every 5 epochs and base lr 1e-3.
    "quick": replace(
        _CPU,
        n_embd=64,
        n_inner=256,
        base_lr=1e-3,
        sizes=(0, 10, 30, 100, 300),
        transfer_eval_every=5,
    ),
    "cpu": _CPU,
    # Seconds: for tests and smoke checks only (numbers in [0, 20), 1 layer, 2 epochs).
    "tiny": Fig3Config(
        max_number=20,
        layers=(1,),
        n_embd=32,
        n_head=2,
        n_inner=64,
        base_train_rows=200,
        base_val_rows=50,
        base_test_rows=50,
        base_epochs=2,
        base_min_accuracy=0.0,
        discovery_rows=100,
        discovery_eval_rows=50,
        discovery_epochs=2,
        subnetwork_min_accuracy=0.0,
        sizes=(0, 10),
        seeds=(0,),
        transfer_epochs=2,
        eval_rows=50,
    ),
}


PRESETS: Registry[Fig3Config] = Registry("preset")
for _name, _cfg in _PRESETS.items():
    PRESETS.register(_name, "")(_cfg)


def check_config(cfg: Fig3Config) -> None:
    """ConfigError (one line, naming the setting and the fix) for a config that cannot work: an
    unknown condition or unmasked mode, a task that does not parse, a negative --batch-runs."""
    for mode in cfg.unmasked:
        if mode not in UNMASKED_MODES:
            raise ConfigError(f"--unmasked takes inherit and/or reinit, got {mode!r}")
    check_names(cfg.conditions, CONDITIONS)
    for option, task in (("--source-task", cfg.source_task), ("--subtask", cfg.subtask),
                         ("--target-task", cfg.target_task)):  # fmt: skip
        try:
            Expression(task, cfg.modulus)
        except ValueError as e:
            raise ConfigError(f"{option}: {e}") from None
    if cfg.transfer_eval_every < 1:
        raise ConfigError(
            f"transfer_eval_every takes 1 (every epoch) or more, got {cfg.transfer_eval_every}"
        )
    if cfg.batch_runs < 0:
        raise ConfigError(f"--batch-runs takes 0 (automatic) or more, got {cfg.batch_runs}")
