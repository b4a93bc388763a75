"""Stage 4 of the vision experiments (paper Section 5, Tables 1-2, Figures 5 and 11): every
training strategy of every architecture and seed, trained on the original 16-class images and
evaluated on original, mean-pooled and cue-conflict images, through the shared harness (resume,
rank slices or DDP). Stages 1-3 come from :mod:`benchmarks.vision.stages`.

    out/models/{run}.safetensors   every trained model (16-class torchvision state dict) ...
    out/models/{run}.json          ... and what its training recorded (a rerun evaluates it)
    out/responses/{run}.csv        cue-conflict responses, model-vs-human's format
    out/results.jsonl              one record per run, with provenance
    out/config.json                experiment, preset, the resolved config and provenance

Under torchrun, stages 2-3 are dealt to the ranks (each architecture's adaptation, then every
discovery); with ``distributed="ddp"`` every run trains on all ranks together, with "slice"
each rank trains its own runs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from benchmarks.harness import Sync, deal, execute, one_at_a_time, rank0_first, write_config
from benchmarks.vision.config import RUN_KEYS, Table1Config
from benchmarks.vision.data import epoch_loader
from benchmarks.vision.evaluate import EvalConfig, accuracy, evaluate_model
from benchmarks.vision.inputs import (
    Data,
    Inputs,
    load_data,
    load_source,
    pipeline_arch,
    resolve_inputs,
    training_set,
)
from benchmarks.vision.models import VisionArch
from benchmarks.vision.plan import require_inputs
from benchmarks.vision.stages import (
    NUM_CLASSES,
    adapted_model,
    ce_loss,
    discovery_jobs,
    find_subnetwork,
)
from benchmarks.vision.strategies import STRATEGIES, StrategyInputs
from subind.io import save_state_dict, write_json_atomic
from subind.runtime import init_distributed, resolve_device
from subind.subnetwork import Subnetwork
from subind.train import TrainConfig, fit
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

    arch: VisionArch  # as the pipeline uses it (preprocessing, training crop)
    pretrained: nn.Module
    adapted: nn.Module
    adapted_meta: dict[str, Any]
    subnetwork: Subnetwork
    by_penalty: dict[float, Subnetwork]
    random_init: Subnetwork | None
    data: Data


def _rank_batch(cfg: Table1Config, model: str, world: int) -> int:
    """Each DDP rank's share of the global batch (the paper's 128 / 512 are global)."""
    batch = cfg.batch_size(model)
    if batch % world:
        raise ValueError(f"the batch size {batch} of {model} does not split over {world} ranks; "
                         f"set --set batch_size_resnet/batch_size_vit to a multiple of {world}")  # fmt: skip
    return batch // world


def best_step(history: list[dict[str, Any]]) -> int | None:
    """The step of the first evaluation with the best validation accuracy (fit's choice)."""
    if not history:
        return None
    best = max(range(len(history)), key=lambda i: (history[i]["val_accuracy"], -i))
    return history[best].get("step")


def train_config(
    cfg: Table1Config, model: str, checkpoint: Path | None, ddp: bool = False
) -> TrainConfig:
    """How a strategy's model trains: the step budget ends training; evaluation (and the
    choice of the best state) every eval_every steps."""
    steps = cfg.train_steps(model)
    return TrainConfig(
        epochs=10**9,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        max_steps=steps,
        eval_every=min(cfg.eval_every, steps),
        checkpoint_dir=str(checkpoint) if checkpoint else None,
        amp=cfg.amp,
        ddp=ddp,
    )


def dataset_labels(dataset: Dataset) -> list[int]:
    """The labels of a dataset of (image, label) items, without loading an image."""
    if isinstance(dataset, ConcatDataset):
        return [y for part in dataset.datasets for y in dataset_labels(part)]
    return list(dataset.labels)


def class_weights(labels: list[int], num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """(C,) loss weights N / N_c, scaled to unit L2 norm (the released code's weighting of
    16-class ImageNet, where dogs are half of the images); 0 for a class with no image."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes).double()
    w = torch.where(counts > 0, counts.sum() / counts.clamp(min=1), torch.zeros_like(counts))
    return (w / w.norm()).float()


def _start_model(
    cfg: Table1Config, run: Run, stages: Stages, device: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """The strategy's starting model and the record of what it took from the source."""
    strat = STRATEGIES.get(run.strategy)
    torch.manual_seed(run.seed)  # the same fresh initialisation for every strategy of a seed
    fresh = stages.arch.build(NUM_CLASSES).to(device)
    return strat.build(
        StrategyInputs(
            stages.pretrained,
            stages.adapted,
            fresh,
            stages.subnetwork if strat.uses_subnetwork else None,
            run.unmasked,
            cfg.subnetwork_trainable,
            run.seed,
        )
    )


def _ddp_ready(cfg: Table1Config, net: nn.Module, device: torch.device, world: int) -> nn.Module:
    """With DDP on GPUs and ``sync_batchnorm``: BatchNorm over the global batch."""
    if world > 1 and cfg.sync_batchnorm and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net


def _train(
    cfg: Table1Config, run: Run, net: nn.Module, data: Data, out: Path, device: torch.device,
    rank: int, world: int, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """Train ``net`` on the strategy's training set (step budget; evaluation every eval_every
    steps: selection on the original evaluation subset, the pooled one only recorded); return
    the record's training fields (train_images, curve, best_step)."""
    train_set = training_set(data, STRATEGIES.get(run.strategy).pooled_in_training)
    weight = class_weights(dataset_labels(train_set)) if cfg.class_weighted_loss else None
    ckpt = out / "checkpoints" / run.tag()

    def evaluate(m: nn.Module) -> dict[str, float]:
        w, bs = cfg.loader_workers, cfg.eval_batch_size
        return {
            "val_accuracy": accuracy(m, data.evaluation, device, bs, w),
            "pooled_accuracy": accuracy(m, data.pooled_evaluation, device, bs, w),
        }

    torch.manual_seed(run.seed)
    result = fit(
        _ddp_ready(cfg, net, device, world),
        epoch_loader(
            train_set, _rank_batch(cfg, run.model, world), run.seed, cfg.loader_workers, rank, world
        ),  # fmt: skip
        ce_loss(device, weight),
        evaluate,
        train_config(cfg, run.model, ckpt, ddp=world > 1),
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


def _trained(
    cfg: Table1Config, run: Run, stages: Stages, out: Path, device: torch.device, rank: int,
    world: int, progress: bool,
) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    """The run's model, trained (unless the strategy is untrained), and its record's fields;
    a model this run trained before (and saved with ``models/{tag}.json``) is loaded instead."""
    net, info = _start_model(cfg, run, stages, device)
    saved = out / "models" / f"{run.tag()}.json"
    if saved.exists() and json.loads(saved.read_text()).get("key") == run.key(cfg):
        net = bake(net)
        net.load_state_dict(load_file(str(saved.with_suffix(".safetensors"))))
        return net.to(device).eval(), json.loads(saved.read_text())["fields"]
    fields = {"train_images": 0, "curve": [], **info}
    if STRATEGIES.get(run.strategy).trains:
        fields.update(_train(cfg, run, net, stages.data, out, device, rank, world, progress))
    net = bake(net).eval()
    if rank == 0:  # kept before evaluating, so a failed evaluation costs no training
        save_state_dict(net, saved.with_suffix(".safetensors"))
        write_json_atomic(saved, {"key": run.key(cfg), "fields": fields})
    return net, fields


def run_strategy(
    cfg: Table1Config, run: Run, stages: Stages, inputs: Inputs, out: Path, sync: Sync,
    ddp: bool, progress: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Build the strategy's model, train it (unless the strategy is untrained or this run's
    model was saved before), evaluate it (rank 0); return its results record."""
    start = time.perf_counter()
    rank, world = (sync.rank, sync.world) if ddp else (0, 1)
    device = resolve_device(cfg.device)
    net, fields = _trained(cfg, run, stages, out, device, rank, world, progress)
    strat = STRATEGIES.get(run.strategy)
    record = {
        "experiment": EXPERIMENT,
        "key": run.key(cfg),
        "model": run.model,
        "strategy": run.strategy,
        "unmasked": run.unmasked,
        "seed": run.seed,
        "steps": cfg.train_steps(run.model) if strat.trains else 0,
        # the model every strategy but scratch and pretrained starts from
        "adapted": {k: stages.adapted_meta[k] for k in ("adapt", "adapt_images", "train_images")},
        **fields,
    }
    if rank == 0:  # with slice, every rank evaluates its own runs
        record.update(evaluate_model(
            net,
            stages.arch,
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
    if ddp:
        sync.wait(f"evaluated-{run.tag()}")  # the next DDP run starts with every rank there
    record["wall_seconds"] = time.perf_counter() - start
    return record


def prepare(
    cfg: Table1Config, inputs: Inputs, sync: Sync, out: Path, progress: bool
) -> dict[str, Stages]:
    """Stages 1-3 of every architecture (cached). The adaptations, then every discovery, are
    dealt to the ranks; then every rank loads them all."""
    sources = {m: load_source(inputs, m) for m in cfg.models}
    archs = {m: pipeline_arch(cfg, sources[m]) for m in cfg.models}
    data = {m: load_data(cfg, inputs, archs[m]) for m in cfg.models}
    device = resolve_device(cfg.device)

    def adapt(m: str):
        return lambda p: adapted_model(cfg, sources[m].model, data[m], archs[m], out, p)

    deal(sync, [adapt(m) for m in cfg.models], progress, "adapted")
    adapted = {m: adapt(m)(False) for m in cfg.models}
    jobs = [
        job
        for m in cfg.models
        for job in discovery_jobs(cfg, archs[m], adapted[m][0], data[m], out)
    ]
    deal(sync, jobs, progress, "discovered")
    stages = {}
    for m in cfg.models:
        net, meta = adapted[m]
        found = rank0_first(
            sync,
            lambda p, m=m, net=net, meta=meta: find_subnetwork(
                cfg, archs[m], net, meta, data[m], out, p
            ),
            progress,
            f"subnetworks-{m}",
        )  # the random-init control of the most accurate lambda, when it was not dealt
        pretrained = sources[m].model.to(device).eval()
        stages[m] = Stages(archs[m], pretrained, net, meta, *found, data[m])
    return stages


def check(cfg: Table1Config) -> None:
    """Fail early (with a suggestion) on an unknown strategy or architecture."""
    from benchmarks.vision.models import arch_for

    for name in cfg.strategies:
        STRATEGIES.get(name)
    for model in cfg.models:
        arch_for(model)


def run_table1(
    cfg: Table1Config, out: Path, progress: bool = True, preset: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Stages]]:
    """Run every missing stage and run; return the records of every planned run and the stages
    of each architecture (for the reports)."""
    import datetime

    out.mkdir(parents=True, exist_ok=True)
    check(cfg)
    rank, world = init_distributed(timeout=datetime.timedelta(seconds=cfg.dist_timeout_s))
    sync = Sync.start(out, rank, world)
    if rank == 0:  # every input, before the first training step; printed and recorded
        checks = require_inputs(cfg, out)
        for c in checks:
            print(f"input: {c.what}: {c.detail}", flush=True)
        write_json_atomic(out / "inputs.json", [dataclasses.asdict(c) for c in checks])
    sync.wait("inputs checked")
    inputs = resolve_inputs(cfg, out, sync, progress)
    if rank == 0:
        write_config(out, EXPERIMENT, preset, cfg)
    stages = prepare(cfg, inputs, sync, out, progress)
    ddp = cfg.distributed == "ddp"
    records = execute(
        plan_runs(cfg),
        lambda r: r.key(cfg),
        out,
        one_at_a_time(
            lambda r: run_strategy(cfg, r, stages[r.model], inputs, out, sync, ddp, progress)
        ),
        config_digest=cfg.digest(*RUN_KEYS),
        sync=sync,
        progress=progress,
        desc="table1 runs",
        slice_runs=not ddp,
    )
    return records, stages
