"""Stage 3 of the arithmetic experiments (paper Section 4, Figure 3): the transfer grid over
depths, conditions, unmasked modes, seeds and disambiguation sizes, run through the shared
harness (resume, rank slices). Runs of one depth and size train together in batched groups
(``batch_runs``, :mod:`benchmarks.arithmetic.batched`) or one at a time (``batch_runs=1``,
:func:`subind.train.fit`); the base models and subnetworks come from
:mod:`benchmarks.arithmetic.stages`.

    out/results.jsonl            one record per transfer run (appended as they finish)
    out/config.json              experiment, preset, the resolved config and provenance
    out/configs/{hash}.json      the config of each settings hash found in results.jsonl
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from benchmarks.arithmetic.batched import fit_batched
from benchmarks.arithmetic.config import TRANSFER_KEYS, Fig3Config, check_config
from benchmarks.arithmetic.gpt2 import GPT2
from benchmarks.arithmetic.stages import base_model, find_subnetwork, model_config, task_rows
from benchmarks.arithmetic.tasks import Batches, Numbers, accuracy, last_token_loss, transfer_pairs
from benchmarks.harness import Sync, execute, rank0_first, write_config
from subind.conditions import CONDITIONS
from subind.io import write_json_atomic
from subind.runtime import init_distributed, resolve_device
from subind.subnetwork import Subnetwork
from subind.train import FitResult, TrainConfig, fit

EXPERIMENT = "fig3"


@dataclass(frozen=True)
class Run:
    layers: int
    condition: str
    unmasked: str
    seed: int
    n_disambiguation: int

    def key(self, cfg: Fig3Config) -> str:
        return (
            f"L{self.layers}/{self.condition}/{self.unmasked}/s{self.seed}/"
            f"n{self.n_disambiguation}/{cfg.digest(*TRANSFER_KEYS)}"
        )


def plan_runs(cfg: Fig3Config) -> list[Run]:
    """Every (depth, condition, unmasked mode, seed, size); conditions with a fixed unmasked
    mode (scratch: all re-initialised, full transfer: all inherited) run once."""
    runs = []
    for layers in cfg.layers:
        for seed in cfg.seeds:
            for n in cfg.sizes:
                for cond in cfg.conditions:
                    modes = CONDITIONS.get(cond).modes(cfg.unmasked)
                    runs.extend(Run(layers, cond, mode, seed, n) for mode in modes)
    return runs


def _build(
    cfg: Fig3Config, run: Run, base: GPT2, sub: Subnetwork | None
) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """(the condition's model to train, its target-task rows, what it took from ``base``)."""
    nums = Numbers(cfg.max_number, cfg.modulus)
    splits = transfer_pairs(nums, run.n_disambiguation, cfg.eval_rows, seed=run.seed)
    rows = {k: task_rows(cfg, cfg.target_task, v) for k, v in splits.items()}
    torch.manual_seed(run.seed)  # the same fresh initialisation for every condition of a seed
    fresh = GPT2(model_config(cfg, run.layers)).to(resolve_device(cfg.device))
    model, info = CONDITIONS.get(run.condition).build(
        base, fresh, sub, run.unmasked, cfg.subnetwork_trainable, seed=run.seed
    )
    return model, rows, info


def _record(
    cfg: Fig3Config,
    run: Run,
    rows: dict[str, torch.Tensor],
    result: FitResult,
    test_accuracy: float,
    info: dict[str, Any],
    wall_seconds: float,
    trainer: dict[str, Any],
) -> dict[str, Any]:
    return {
        "experiment": EXPERIMENT,
        "key": run.key(cfg),
        "condition": run.condition,
        "source_task": cfg.source_task,
        "subtask": cfg.subtask,
        "target_task": cfg.target_task,
        "layers": run.layers,
        "seed": run.seed,
        "n_disambiguation": run.n_disambiguation,
        "train_rows": int(rows["train"].shape[0]),
        "val_accuracy": result.best_accuracy,
        "test_accuracy": test_accuracy,
        "best_epoch": result.best_epoch,
        "evaluations": len(result.history),
        "wall_seconds": wall_seconds,
        "max_number": cfg.max_number,
        "modulus": cfg.modulus,
        "epochs": cfg.transfer_epochs,
        "lr": cfg.transfer_lr,
        "batch_size": cfg.transfer_batch_size,
        "eval_every_epochs": cfg.transfer_eval_every,
        **trainer,
        **info,
    }


def transfer_train_config(cfg: Fig3Config, train_rows: int) -> TrainConfig:
    """The transfer runs' training settings for a training set of ``train_rows`` rows: an
    evaluation every ``transfer_eval_every`` epochs, in steps (batches of the last epoch
    included), so the one-at-a-time and batched trainers evaluate after the same steps."""
    steps_per_epoch = -(-train_rows // cfg.transfer_batch_size)
    every = cfg.transfer_eval_every
    return TrainConfig(
        epochs=cfg.transfer_epochs,
        lr=cfg.transfer_lr,
        eval_every=None if every == 1 else every * steps_per_epoch,
    )


def run_transfer(
    cfg: Fig3Config, run: Run, base: GPT2, sub: Subnetwork | None, progress: bool = False
) -> dict[str, Any]:
    """Build the condition's model, train it on the target task, return its results record."""
    start = time.perf_counter()
    model, rows, info = _build(cfg, run, base, sub)
    torch.manual_seed(run.seed)
    result = fit(
        model,
        Batches(rows["train"], cfg.transfer_batch_size, run.seed),
        last_token_loss,
        lambda m: accuracy(m, rows["val"]),
        transfer_train_config(cfg, rows["train"].shape[0]),
        desc=run.condition,
        progress=progress,
    )
    test = accuracy(model, rows["test"])
    trainer = {"trainer": "single", "group_size": 1}
    return _record(cfg, run, rows, result, test, info, time.perf_counter() - start, trainer)


def _group_seed(cfg: Fig3Config, runs: list[Run]) -> int:
    """The dropout seed of a batched group: a function of its runs, so the same command gives
    the same numbers whichever process or rank trains the group."""
    keys = "\n".join(r.key(cfg) for r in runs).encode()
    return int(hashlib.sha256(keys).hexdigest()[:8], 16)


def run_transfer_group(
    cfg: Fig3Config,
    runs: list[Run],
    bases: dict[int, GPT2],
    subs: dict[int, Subnetwork | None],
    progress: bool = False,
    exact: bool | None = None,
) -> list[dict[str, Any]]:
    """Train ``runs`` (one depth, one training-set size: see :func:`plan_groups`) together with
    :func:`benchmarks.arithmetic.batched.fit_batched`; return their records, in order."""
    if len(runs) == 1 and cfg.batch_runs == 1:
        return [run_transfer(cfg, runs[0], bases[runs[0].layers], subs[runs[0].layers])]
    start = time.perf_counter()
    built = [_build(cfg, r, bases[r.layers], subs[r.layers]) for r in runs]
    results = fit_batched(
        [b[0] for b in built],
        [
            Batches(b[1]["train"], cfg.transfer_batch_size, r.seed)
            for b, r in zip(built, runs, strict=True)
        ],
        [b[1]["val"] for b in built],
        transfer_train_config(cfg, built[0][1]["train"].shape[0]),
        seed=_group_seed(cfg, runs),
        exact=exact,
        desc=f"L{runs[0].layers} n={runs[0].n_disambiguation} x{len(runs)}",
        progress=progress,
    )
    seconds = time.perf_counter() - start
    trainer = {"trainer": "batched", "group_size": len(runs), "group_seconds": seconds}
    return [
        _record(cfg, r, b[1], res, accuracy(b[0], b[1]["test"]), b[2], seconds / len(runs), trainer)
        for r, b, res in zip(runs, built, results, strict=True)
    ]


def auto_group_size(cfg: Fig3Config, layers: int) -> int:
    """Runs per batched group when ``batch_runs`` is 0: as many as fit in a quarter of the free
    memory of the device (GPU) or of the machine (CPU), at most 256 on a GPU and 32 on a CPU
    (where larger groups gain nothing: the matmuls are already compute-bound)."""
    mcfg = model_config(cfg, layers)
    n_params = sum(p.numel() for p in GPT2(mcfg).parameters())
    # theta, its grad, two AdamW moments, best state, frozen values, effective tensor (+grad)
    per_run = 9 * 4 * n_params
    tokens = max(cfg.transfer_batch_size * 3, cfg.eval_rows * 3)
    per_run += tokens * mcfg.n_layer * (12 * mcfg.n_embd + mcfg.n_inner * 3) * 4
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        free, cap = torch.cuda.mem_get_info(device)[0], 256
    else:
        free, cap = _free_host_memory(), 32
    return max(1, min(cap, int(free * 0.25 // per_run)))


def _free_host_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def plan_groups(cfg: Fig3Config, runs: list[Run]) -> list[list[Run]]:
    """Split ``runs`` into groups trained together: runs of one depth and one size (so one
    number of training rows: batched runs take their steps together and each run sees exactly
    its own rows and steps per epoch), at most ``batch_runs`` per group (0: automatic), in
    plan order. Largest groups (training steps x runs) first, so parallel workers balance."""
    buckets: dict[tuple[int, int], list[Run]] = {}
    for r in runs:
        buckets.setdefault((r.layers, r.n_disambiguation), []).append(r)
    groups = []
    for (layers, _), bucket in buckets.items():
        size = cfg.batch_runs or auto_group_size(cfg, layers)
        groups.extend(bucket[i : i + size] for i in range(0, len(bucket), size))

    def cost(g: list[Run]) -> float:
        steps = -(-(cfg.max_number + g[0].n_disambiguation) // cfg.transfer_batch_size)
        evals = cfg.eval_rows / cfg.transfer_eval_every
        return len(g) * g[0].layers * (3 * steps * cfg.transfer_batch_size + evals)

    return sorted(groups, key=cost, reverse=True)


def _worker_init() -> None:
    torch.set_num_threads(1)


def _worker(cfg: Fig3Config, runs: list[Run], out: str) -> list[dict[str, Any]]:
    layers = runs[0].layers
    base = base_model(cfg, layers, Path(out), progress=False)
    sub = find_subnetwork(cfg, layers, base, Path(out), progress=False)
    return run_transfer_group(cfg, runs, {layers: base}, {layers: sub})


def _run_groups(
    cfg: Fig3Config,
    groups: list[list[Run]],
    bases: dict[int, GPT2],
    subs: dict[int, Subnetwork],
    out: Path,
) -> Iterator[dict[str, Any]]:
    """The records of ``groups``: trained here one group after the other, or by ``cfg.workers``
    processes (each loading the cached base model and subnetwork), as groups finish."""
    if cfg.workers <= 1 or len(groups) <= 1:
        for group in groups:
            yield from run_transfer_group(cfg, group, bases, subs)
        return
    ctx = get_context("spawn")  # no fork of a process that already ran torch threads
    with ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_worker_init) as pool:
        futures = [pool.submit(_worker, cfg, group, str(out)) for group in groups]
        for fut in as_completed(futures):
            yield from fut.result()


def prepare(
    cfg: Fig3Config, out: Path, progress: bool
) -> tuple[dict[int, GPT2], dict[int, Subnetwork]]:
    """Stages 1-2 for every depth (cached): the base models and their subnetworks."""
    bases, subs = {}, {}
    for layers in cfg.layers:
        bases[layers] = base_model(cfg, layers, out, progress)
        subs[layers] = find_subnetwork(cfg, layers, bases[layers], out, progress)
    return bases, subs


def run_fig3(
    cfg: Fig3Config,
    out: Path,
    progress: bool = True,
    preset: str | None = None,
    experiment: str = EXPERIMENT,
) -> tuple[list[dict[str, Any]], dict[int, Subnetwork]]:
    """Run every missing stage and transfer run; return all records for this config and the
    subnetwork of each depth.

    Under ``torchrun --nproc_per_node=N`` rank 0 trains the base models and subnetworks, every
    rank takes its slice of the missing runs (writing results.rank{r}.jsonl), and once all are
    done rank 0 merges them into results.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    check_config(cfg)
    rank, world = init_distributed("gloo")  # no data moves between ranks
    sync = Sync.start(out, rank, world)
    digest = cfg.digest(*TRANSFER_KEYS)
    if rank == 0:
        write_config(out, experiment, preset, cfg)
        write_json_atomic(out / "configs" / f"{digest}.json", {"config": asdict(cfg)})
    bases, subs = rank0_first(sync, lambda p: prepare(cfg, out, p), progress, "base+discovery")
    records = execute(
        plan_runs(cfg),
        lambda r: r.key(cfg),
        out,
        lambda units: _run_groups(cfg, units, bases, subs, out),
        config_digest=digest,
        # Groups are planned over every missing run, then dealt to ranks: the same groups (and
        # so the same numbers) whatever the number of ranks.
        plan_units=lambda todo: plan_groups(cfg, todo),
        sync=sync,
        progress=progress,
        desc="transfer runs",
        postfix=lambda rec: f"{rec['condition']} n={rec['n_disambiguation']}",
    )
    return records, subs
