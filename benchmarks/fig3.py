"""The arithmetic reproduction (paper Section 4, Figure 3, Table 3): base model -> discovery ->
transfer grid over conditions, sizes and seeds -> results.jsonl, table.md, fig3.png,
subnetworks.md. Finished stages and runs are cached in the output directory and reused.
Transfer runs of one depth and size train together in batched groups (``batch_runs``,
:mod:`subind.batched`) or one at a time (``batch_runs=1``, :func:`subind.train.fit`).

    out/base/L{layers}-{hash}/            model.safetensors, base.json
    out/subnetworks/L{layers}-{hash}/     subnetwork.safetensors, subnetwork.json
    out/results.jsonl                     one record per transfer run (appended as they finish)
    out/config.json                       the resolved config and provenance of the last run
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from benchmarks.fig3_config import BASE_KEYS, DISCOVERY_KEYS, TRANSFER_KEYS, Fig3Config
from subind.batched import fit_batched
from subind.conditions import CONDITIONS
from subind.discover import DiscoveryConfig, discover
from subind.io import append_jsonl, read_jsonl, write_json_atomic, write_with_atomic
from subind.masks import MaskSelection, select_parameters
from subind.models import GPT2, GPT2Config
from subind.provenance import provenance
from subind.subnetwork import Subnetwork
from subind.tasks.arithmetic import (
    Batches,
    Numbers,
    accuracy,
    encode,
    last_token_loss,
    split_pairs,
    transfer_pairs,
)
from subind.tasks.expression import Expression
from subind.train import FitResult, TrainConfig, fit

EXPERIMENT = "fig3"
# Every attention and feed-forward weight (Appendix B.1): GPT-2's Conv1D layers; not the
# embeddings, norms or biases.
GPT2_MASKED = MaskSelection(module_types=("Conv1D",))


class StageError(RuntimeError):
    """A precondition failed; every later number would be meaningless."""


def model_config(cfg: Fig3Config, layers: int) -> GPT2Config:
    return GPT2Config(
        vocab_size=Numbers(cfg.max_number, cfg.modulus).vocab_size,
        n_positions=4,
        n_embd=cfg.n_embd,
        n_layer=layers,
        n_head=cfg.n_head,
        n_inner=cfg.n_inner,
        dropout=cfg.dropout,
    )


def device_of(cfg: Fig3Config) -> torch.device:
    """cfg.device, with "auto" meaning CUDA when available."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _rows(cfg: Fig3Config, task: str, pairs) -> torch.Tensor:
    rows = encode(Numbers(cfg.max_number, cfg.modulus), Expression(task, cfg.modulus), pairs)
    return rows.to(device_of(cfg))


def _save_model(model: torch.nn.Module, path: Path) -> None:
    state = {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if k != "lm_head.weight"  # tied to wte; safetensors refuses shared storage
    }
    write_with_atomic(path, lambda tmp: save_file(state, str(tmp)))


def _load_model(cfg: Fig3Config, layers: int, path: Path) -> GPT2:
    model = GPT2(model_config(cfg, layers))
    model.load_state_dict(load_file(str(path)), strict=False)  # lm_head is tied to wte
    return model.to(device_of(cfg)).eval()


# --- stage 1: base model ------------------------------------------------------------------------
def base_model(cfg: Fig3Config, layers: int, out: Path, progress: bool = True) -> GPT2:
    """Train (or load the cached) base model on the source task and check it learned it."""
    d = out / "base" / f"L{layers}-{cfg.digest(*BASE_KEYS)}"
    meta_path = d / "base.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        model = _load_model(cfg, layers, d / "model.safetensors")
    else:
        nums = Numbers(cfg.max_number, cfg.modulus)
        sizes = {"train": cfg.base_train_rows, "val": cfg.base_val_rows, "test": cfg.base_test_rows}
        splits = split_pairs(nums, sizes, seed=cfg.base_seed)
        rows = {k: _rows(cfg, cfg.source_task, v) for k, v in splits.items()}
        torch.manual_seed(cfg.base_seed)
        model = GPT2(model_config(cfg, layers)).to(device_of(cfg))  # CPU init: same on any device
        result = fit(
            model,
            Batches(rows["train"], cfg.base_batch_size, cfg.base_seed),
            last_token_loss,
            lambda m: accuracy(m, rows["val"]),
            TrainConfig(
                epochs=cfg.base_epochs, lr=cfg.base_lr, stop_at_accuracy=cfg.base_stop_accuracy
            ),
            desc=f"base L{layers} {cfg.source_task}",
            progress=progress,
        )
        meta = {
            "task": cfg.source_task,
            "layers": layers,
            "model": asdict(model_config(cfg, layers)),
            "val_accuracy": result.best_accuracy,
            "test_accuracy": accuracy(model, rows["test"]),
            "best_epoch": result.best_epoch,
            "history": result.history,
            "seconds": result.seconds,
            "config": {k: getattr(cfg, k) for k in BASE_KEYS},
            "provenance": provenance(),
        }
        _save_model(model, d / "model.safetensors")
        write_json_atomic(meta_path, meta)
    if meta["val_accuracy"] < cfg.base_min_accuracy:
        raise StageError(
            f"the {layers}-layer base model reached only {meta['val_accuracy']:.3f} validation "
            f"accuracy on {cfg.source_task} (needs {cfg.base_min_accuracy}); train longer "
            f"(--set base_epochs=N), use fewer layers, or lower --set base_min_accuracy ({d})"
        )
    return model


# --- stage 2: discovery -------------------------------------------------------------------------
def find_subnetwork(
    cfg: Fig3Config, layers: int, base: GPT2, out: Path, progress: bool = True
) -> Subnetwork:
    """Discover (or load the cached) subnetwork for the subtask and check that it solves it."""
    d = out / "subnetworks" / f"L{layers}-{cfg.digest(*DISCOVERY_KEYS)}"
    if (d / "subnetwork.json").exists():
        sub = Subnetwork.load(d)
    else:
        nums = Numbers(cfg.max_number, cfg.modulus)
        sizes = {
            "train": cfg.discovery_rows,
            "val": cfg.discovery_eval_rows,
            "test": cfg.discovery_eval_rows,
        }
        splits = split_pairs(nums, sizes, seed=cfg.base_seed + 1)
        rows = {k: _rows(cfg, cfg.subtask, v) for k, v in splits.items()}
        dcfg = DiscoveryConfig(
            epochs=cfg.discovery_epochs,
            lr=cfg.discovery_lr,
            penalty=cfg.discovery_penalty,
            beta_final=cfg.beta_final,
            seed=cfg.base_seed,
        )
        sub = discover(
            base,
            select_parameters(base, dataclasses.replace(GPT2_MASKED, mask_bias=cfg.mask_bias)),
            Batches(rows["train"], cfg.discovery_batch_size, cfg.base_seed),
            last_token_loss,
            lambda m: accuracy(m, rows["val"]),
            dcfg,
            evaluate_test=lambda m: accuracy(m, rows["test"]),
            meta={
                "base_model": f"GPT-2 {layers} layers trained on {cfg.source_task} "
                f"mod {cfg.modulus}, numbers < {cfg.max_number}",
                "model": asdict(model_config(cfg, layers)),
                "subtask": cfg.subtask,
                "source_task": cfg.source_task,
                "layers": layers,
                "config": {k: getattr(cfg, k) for k in DISCOVERY_KEYS},
            },
            progress=progress,
        )
        sub.save(d)
    if sub.meta["val_accuracy"] < cfg.subnetwork_min_accuracy:
        raise StageError(
            f"the subnetwork found in the {layers}-layer model reaches only "
            f"{sub.meta['val_accuracy']:.3f} on {cfg.subtask} (needs "
            f"{cfg.subnetwork_min_accuracy}): it does not implement the subtask; try more "
            f"--set discovery_epochs=N or a smaller --set discovery_penalty ({d})"
        )
    return sub


# --- stage 3: transfer runs ---------------------------------------------------------------------
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
    rows = {k: _rows(cfg, cfg.target_task, v) for k, v in splits.items()}
    torch.manual_seed(run.seed)  # the same fresh initialisation for every condition of a seed
    fresh = GPT2(model_config(cfg, run.layers)).to(device_of(cfg))
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
        "wall_seconds": wall_seconds,
        "max_number": cfg.max_number,
        "modulus": cfg.modulus,
        "epochs": cfg.transfer_epochs,
        "lr": cfg.transfer_lr,
        "batch_size": cfg.transfer_batch_size,
        **trainer,
        **info,
    }


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
        TrainConfig(epochs=cfg.transfer_epochs, lr=cfg.transfer_lr),
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
    :func:`subind.batched.fit_batched`; return their records, in order."""
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
        TrainConfig(epochs=cfg.transfer_epochs, lr=cfg.transfer_lr),
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
    device = device_of(cfg)
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
        return len(g) * g[0].layers * (3 * steps * cfg.transfer_batch_size + cfg.eval_rows)

    return sorted(groups, key=cost, reverse=True)


def _worker_init() -> None:
    torch.set_num_threads(1)


def _worker(cfg: Fig3Config, runs: list[Run], out: str) -> list[dict[str, Any]]:
    layers = runs[0].layers
    base = base_model(cfg, layers, Path(out), progress=False)
    sub = find_subnetwork(cfg, layers, base, Path(out), progress=False)
    return run_transfer_group(cfg, runs, {layers: base}, {layers: sub})


def _dist() -> tuple[int, int]:
    """(rank, world size) under torchrun, joining a gloo process group; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), world


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def run_fig3(cfg: Fig3Config, out: Path, progress: bool = True) -> list[dict[str, Any]]:
    """Run every missing stage and transfer run; return all records for this config.

    Under ``torchrun --nproc_per_node=N`` rank 0 trains the base models and subnetworks, every
    rank takes its slice of the missing runs (writing results.rank{r}.jsonl), and after a
    barrier rank 0 merges them into results.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    for cond in cfg.conditions:
        CONDITIONS.get(cond)  # fail early on a typo, with a suggestion
    for task in (cfg.source_task, cfg.subtask, cfg.target_task):
        Expression(task, cfg.modulus)
    rank, world = _dist()
    prov = provenance()
    digest = cfg.digest(*TRANSFER_KEYS)
    bases, subs = {}, {}
    if rank == 0:
        write_json_atomic(out / "config.json", {"config": asdict(cfg), "provenance": prov})
        write_json_atomic(out / "configs" / f"{digest}.json", {"config": asdict(cfg)})
        for layers in cfg.layers:
            bases[layers] = base_model(cfg, layers, out, progress)
            subs[layers] = find_subnetwork(cfg, layers, bases[layers], out, progress)
    _barrier(world)
    for layers in cfg.layers:  # the other ranks load what rank 0 cached
        bases[layers] = bases.get(layers) or base_model(cfg, layers, out, False)
        subs[layers] = subs.get(layers) or find_subnetwork(cfg, layers, bases[layers], out, False)
    results_path = out / "results.jsonl"
    done = {r["key"] for r in read_jsonl(results_path)}
    todo = [r for r in plan_runs(cfg) if r.key(cfg) not in done]
    # Groups are planned over every missing run, then dealt to ranks: the same groups (and so
    # the same numbers) whatever the number of ranks.
    my_path = results_path if world == 1 else out / f"results.rank{rank}.jsonl"
    done_here = {r["key"] for r in read_jsonl(my_path)}  # a resumed rank skips its own finished
    groups = [
        [r for r in g if r.key(cfg) not in done_here] for g in plan_groups(cfg, todo)[rank::world]
    ]
    groups = [g for g in groups if g]
    bar = tqdm(
        total=sum(map(len, groups)), desc=f"transfer runs (rank {rank})", disable=not progress
    )

    def record(rec: dict[str, Any]) -> None:
        rec["config_digest"] = digest
        rec["provenance"] = {"git_commit": prov["git_commit"], "versions": prov["versions"]}
        append_jsonl(my_path, rec)
        bar.update(1)
        bar.set_postfix_str(f"{rec['condition']} n={rec['n_disambiguation']}")

    if cfg.workers <= 1 or len(groups) <= 1:
        for group in groups:
            for rec in run_transfer_group(cfg, group, bases, subs):
                record(rec)
    else:
        ctx = get_context("spawn")  # no fork of a process that already ran torch threads
        with ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_worker_init) as pool:
            futures = [pool.submit(_worker, cfg, group, str(out)) for group in groups]
            for fut in as_completed(futures):
                for rec in fut.result():
                    record(rec)
    bar.close()
    _barrier(world)
    if world > 1 and rank == 0:
        for part in sorted(out.glob("results.rank*.jsonl")):
            have = {r["key"] for r in read_jsonl(results_path)}
            for rec in read_jsonl(part):
                if rec["key"] not in have:
                    append_jsonl(results_path, rec)
            part.unlink()
    _barrier(world)
    keys = {r.key(cfg) for r in plan_runs(cfg)}
    return [r for r in read_jsonl(results_path) if r["key"] in keys]
