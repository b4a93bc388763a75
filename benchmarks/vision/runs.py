"""Stage 4 of the vision experiments (paper Section 5, Tables 1-2, Figures 5 and 11): every
training strategy of every architecture and seed, trained on the original 16-class images and
evaluated on original, mean-pooled and cue-conflict images, through the shared harness (resume,
rank slices or DDP). Stages 1-3 come from :mod:`benchmarks.vision.stages`.

    out/models/{run}.safetensors   every trained model (16-class torchvision state dict)
    out/responses/{run}.csv        cue-conflict responses, model-vs-human's format
    out/results.jsonl              one record per run, with provenance
    out/config.json                experiment, preset, the resolved config and provenance
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.harness import StageError, execute, one_at_a_time, rank0_first, write_config
from benchmarks.vision.config import RUN_KEYS, Table1Config
from benchmarks.vision.data import epoch_loader
from benchmarks.vision.evaluate import EvalConfig, accuracy, evaluate_model
from benchmarks.vision.inputs import Data, Inputs, load_data, resolve_inputs, training_set
from benchmarks.vision.models import ARCHS
from benchmarks.vision.stages import (
    NUM_CLASSES,
    best_step,
    ce_loss,
    find_subnetwork,
    linear_ft,
    pretrained_model,
    train_config,
)
from benchmarks.vision.strategies import STRATEGIES, StrategyInputs
from subind.io import save_state_dict
from subind.runtime import init_distributed, resolve_device
from subind.subnetwork import Subnetwork
from subind.train import fit
from subind.transfer import bake

EXPERIMENT = "table1"


@dataclass(frozen=True)
class Run:
    model: str
    strategy: str
    unmasked: str
    seed: int

    def key(self, cfg: Table1Config) -> str:
        return f"{self.model}/{self.strategy}/{self.unmasked}/s{self.seed}/{cfg.digest(*RUN_KEYS)}"

    def tag(self) -> str:
        return f"{self.model}_{self.strategy}_{self.unmasked}_s{self.seed}"


def plan_runs(cfg: Table1Config) -> list[Run]:
    """Every (model, strategy, unmasked mode, seed); untrained strategies run once (seed 0)."""
    runs = []
    for model in cfg.models:
        for name in cfg.strategies:
            strat = STRATEGIES.get(name)
            seeds = cfg.seeds if strat.trains else cfg.seeds[:1]
            for seed in seeds:
                runs.extend(Run(model, name, mode, seed) for mode in strat.modes(cfg.unmasked))
    return runs


@dataclass
class Stages:
    """What stages 1-3 produced for one architecture."""

    pretrained: nn.Module
    linear: nn.Module
    linear_meta: dict[str, Any]
    subnetwork: Subnetwork
    by_penalty: dict[float, Subnetwork]
    random_init: Subnetwork | None
    data: Data


def _rank_batch(cfg: Table1Config, model: str, world: int) -> int:
    """Each DDP rank's share of the global batch (the paper's 128 / 512 are global)."""
    batch = cfg.batch_size(model)
    if batch % world:
        raise StageError(f"the batch size {batch} of {model} does not split over {world} ranks; "
                         f"set --set batch_size_resnet/batch_size_vit to a multiple of {world}")  # fmt: skip
    return batch // world


def _start_model(
    cfg: Table1Config, run: Run, stages: Stages, device: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """The strategy's starting model and the record of what it took from the source."""
    strat = STRATEGIES.get(run.strategy)
    torch.manual_seed(run.seed)  # the same fresh initialisation for every strategy of a seed
    fresh = ARCHS.get(run.model).build(NUM_CLASSES).to(device)
    return strat.build(
        StrategyInputs(
            stages.pretrained,
            stages.linear,
            fresh,
            stages.subnetwork if strat.uses_subnetwork else None,
            run.unmasked,
            cfg.subnetwork_trainable,
            run.seed,
        )
    )


def _train(
    cfg: Table1Config,
    run: Run,
    net: nn.Module,
    data: Data,
    out: Path,
    device: torch.device,
    rank: int,
    world: int,
    progress: bool,
) -> dict[str, Any]:
    """Train ``net`` on the strategy's training set (step budget; evaluation every eval_every
    steps: selection on the original evaluation subset, the pooled one only recorded); return
    the record's training fields (train_images, curve, best_step)."""
    train_set = training_set(data, STRATEGIES.get(run.strategy).pooled_in_training)
    ckpt = out / "checkpoints" / run.tag()

    def evaluate(m: nn.Module) -> dict[str, float]:
        w, bs = cfg.loader_workers, cfg.eval_batch_size
        return {
            "val_accuracy": accuracy(m, data.evaluation, device, bs, w),
            "pooled_accuracy": accuracy(m, data.pooled_evaluation, device, bs, w),
        }

    torch.manual_seed(run.seed)
    result = fit(
        net,
        epoch_loader(
            train_set, _rank_batch(cfg, run.model, world), run.seed, cfg.loader_workers, rank, world
        ),  # fmt: skip
        ce_loss(device),
        evaluate,
        train_config(cfg, cfg.lr, cfg.steps, ckpt, ddp=world > 1),
        desc=run.tag(),
        progress=progress,
    )
    shutil.rmtree(ckpt, ignore_errors=True)
    return {
        "train_images": len(train_set),
        "curve": [  # Figure 5; fit's history survives a resume
            {"step": h["step"], "original": h["val_accuracy"], "pooled": h["pooled_accuracy"]}
            for h in result.history
        ],
        "best_step": best_step(result.history),
    }


def run_strategy(
    cfg: Table1Config,
    run: Run,
    stages: Stages,
    inputs: Inputs,
    out: Path,
    rank: int = 0,
    world: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Build the strategy's model, train it (unless the strategy is untrained), save and
    evaluate it (rank 0); return its results record."""
    start = time.perf_counter()
    strat, device = STRATEGIES.get(run.strategy), resolve_device(cfg.device)
    net, info = _start_model(cfg, run, stages, device)
    trained = {"train_images": 0, "curve": []}
    if strat.trains:
        trained = _train(cfg, run, net, stages.data, out, device, rank, world, progress)
        info["best_step"] = trained.pop("best_step")
    net = bake(net).eval()
    record = {
        "experiment": EXPERIMENT,
        "key": run.key(cfg),
        "model": run.model,
        "strategy": run.strategy,
        "unmasked": run.unmasked,
        "seed": run.seed,
        "steps": cfg.steps if strat.trains else 0,
        **trained,
        **info,
    }
    if rank == 0:
        save_state_dict(net, out / "models" / f"{run.tag()}.safetensors")
        record.update(evaluate_model(
            net,
            ARCHS.get(run.model),
            imagenet_dir=inputs.imagenet_dir,
            val_labels=inputs.val_labels,
            pooled=inputs.pooled,
            cue_conflict_dir=inputs.cue_conflict_dir,
            mapping=inputs.mapping if strat.uses_mapping else None,
            out_dir=out,
            tag=run.tag(),
            cfg=EvalConfig(batch_size=cfg.eval_batch_size, workers=cfg.loader_workers,
                           device=str(device)),
        ))  # fmt: skip
    record["wall_seconds"] = time.perf_counter() - start
    return record


def prepare(cfg: Table1Config, inputs: Inputs, model: str, out: Path, progress: bool) -> Stages:
    """Stages 1-3 for one architecture (cached)."""
    arch = ARCHS.get(model)
    data = load_data(inputs, arch)
    pretrained = pretrained_model(cfg, inputs, model)
    linear, linear_meta = linear_ft(cfg, inputs, data, model, out, progress)
    best, found, control = find_subnetwork(cfg, model, linear, linear_meta, data, out, progress)
    return Stages(pretrained, linear, linear_meta, best, found, control, data)


def check(cfg: Table1Config) -> None:
    """Fail early (with a suggestion) on an unknown strategy or architecture."""
    for name in cfg.strategies:
        STRATEGIES.get(name)
    for model in cfg.models:
        ARCHS.get(model)


def run_table1(
    cfg: Table1Config, out: Path, progress: bool = True, preset: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Stages]]:
    """Run every missing stage and run; return the records of every planned run and the stages
    of each architecture (for the reports)."""
    out.mkdir(parents=True, exist_ok=True)
    check(cfg)
    rank, world = init_distributed()
    inputs = resolve_inputs(cfg, out, rank, world, progress)
    if rank == 0:
        write_config(out, EXPERIMENT, preset, cfg)
    stages = {
        model: rank0_first(
            rank, world, lambda p, m=model: prepare(cfg, inputs, m, out, p), progress
        )
        for model in cfg.models
    }
    ddp = cfg.distributed == "ddp"
    records = execute(
        plan_runs(cfg),
        lambda r: r.key(cfg),
        out,
        one_at_a_time(
            lambda r: run_strategy(
                cfg, r, stages[r.model], inputs, out, rank if ddp else 0, world if ddp else 1
            )  # fmt: skip
        ),
        config_digest=cfg.digest(*RUN_KEYS),
        rank=rank,
        world=world,
        progress=progress,
        desc="table1 runs",
        slice_runs=not ddp,
    )
    return records, stages
