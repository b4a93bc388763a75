"""A table1 run from start to end (paper Section 5, Tables 1-2, Figures 5 and 11): the checks,
the inputs resolved once, stages 1-3 of every model (:mod:`benchmarks.vision.stages`), then every
strategy of the grid (:mod:`benchmarks.vision.grid`) trained (:mod:`benchmarks.vision.training`)
and evaluated on original, mean-pooled and cue-conflict images, through the shared harness
(resume, rank slices or DDP).

    out/models/{run}.safetensors   every trained model (16-class torchvision state dict) ...
    out/models/{run}.json          ... and what its training recorded (a rerun evaluates it)
    out/responses/{run}.csv        cue-conflict responses, model-vs-human's format
    out/results.jsonl              one record per run, with provenance
    out/config.json                experiment, preset, the resolved config and provenance
    out/inputs.json                every input check and what it found

Under torchrun, stages 2-3 are dealt to the ranks (each model's adaptation, then every
discovery); with ``distributed="ddp"`` every run trains on all ranks together, with "slice"
each rank trains its own runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from benchmarks.harness import (
    StageError,
    Sync,
    claim_folder,
    deal,
    execute,
    write_config,
)
from benchmarks.vision.checks import check_config, require_inputs
from benchmarks.vision.config import FOLDER_FREE, RUN_KEYS, Table1Config
from benchmarks.vision.cue_conflict import same_class_note, scan_cue_conflict
from benchmarks.vision.data import ImageSets, training_set, transfer_transforms
from benchmarks.vision.evaluate import EvalConfig, evaluate_model
from benchmarks.vision.grid import Run, plan_runs
from benchmarks.vision.inputs import (
    Inputs,
    ModelEntry,
    resolve_inputs,
    user_resolver,
)
from benchmarks.vision.models import replace_head
from benchmarks.vision.stages import (
    NUM_CLASSES,
    adapted_model,
    choose_penalty,
    control_subnetwork,
    discovery_jobs,
    find_subnetwork,
    subnetwork_warnings,
)
from benchmarks.vision.strategies import STRATEGIES, StrategyInputs
from benchmarks.vision.timing import start_timings, timed, timed_job
from benchmarks.vision.training import run_cost, train_run, train_stacked
from subind.io import save_state_dict, write_json_atomic
from subind.runtime import dist_env, init_distributed, resolve_device
from subind.stacked import stack_key
from subind.subnetwork import Subnetwork
from subind.transfer import bake

EXPERIMENT = "table1"


@dataclass
class Stages:
    """What stages 1-3 produced for one model."""

    entry: ModelEntry  # the model resolved: its architecture as the pipeline uses it, weights
    pretrained: nn.Module  # on the run's device
    adapted: nn.Module
    adapted_meta: dict[str, Any]
    subnetwork: Subnetwork
    by_penalty: dict[float, Subnetwork]
    random_init: Subnetwork | None
    data: ImageSets

    def warnings(self) -> list[str]:
        """What the run says about the subnetwork it transfers (empty, no gain)."""
        lam = self.subnetwork.meta.get("penalty", self.subnetwork.meta.get("lambda"))
        whole = self.adapted_meta["pooled_evaluation_accuracy"]
        return subnetwork_warnings(self.entry.name, lam, self.subnetwork, whole)


def _start_model(
    cfg: Table1Config, run: Run, stages: Stages, device: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """The strategy's starting model and the record of what it took from the source."""
    strat, entry = STRATEGIES.get(run.strategy), stages.entry
    torch.manual_seed(run.seed)  # the same fresh initialisation for every strategy of a seed
    fresh = entry.arch.build(NUM_CLASSES).to(device)
    net, info = strat.build(
        StrategyInputs(
            stages.pretrained,
            stages.adapted,
            fresh,
            stages.subnetwork if strat.uses_subnetwork else None,
            run.unmasked,
            cfg.subnetwork_trainable,
            run.seed,
            mixture_recipe=cfg.mixture_recipe,
            new_head=lambda m: replace_head(m, entry.arch, NUM_CLASSES),
        )
    )
    if freezes_norms(cfg, run.strategy, entry.family):
        info["frozen_norms"] = freeze_norms_and_class_token(net)
    return net, info


def freezes_norms(cfg: Table1Config, strategy: str, family: str) -> bool:
    """Whether a run freezes its LayerNorms and class token: a ViT transfer (subtask induction
    and its controls) with ``freeze_vit_norms``, as the released ViT transfer."""
    return STRATEGIES.get(strategy).transfer and family == "vit" and cfg.freeze_vit_norms


def freeze_norms_and_class_token(net: nn.Module) -> int:
    """Freeze every LayerNorm's parameters and the class token (the released ViT transfer:
    NeuroSurgeon's ``init_subnet_transfer``); return how many tensors were frozen."""
    frozen = [p for m in net.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]
    frozen += [p for name, p in net.named_parameters() if name.split(".")[-1] == "class_token"]
    for p in frozen:
        p.requires_grad_(False)
    return len(frozen)


def _saved(cfg: Table1Config, run: Run, out: Path, net: nn.Module,
           device: torch.device) -> tuple[nn.Module, dict[str, Any]] | None:  # fmt: skip
    """The model and record fields this run trained and saved before (``models/{tag}``), in
    ``net`` (its start model, baked); None when there is none for this run's key."""
    saved = out / "models" / f"{run.tag()}.json"
    if saved.exists() and json.loads(saved.read_text()).get("key") == run.key(cfg):
        net = bake(net)
        net.load_state_dict(load_file(str(saved.with_suffix(".safetensors"))))
        return net.to(device).eval(), json.loads(saved.read_text())["fields"]
    return None


def _keep(cfg: Table1Config, run: Run, out: Path, net: nn.Module, fields: dict[str, Any],
          rank: int) -> nn.Module:  # fmt: skip
    """The trained model baked; saved (rank 0) before it is evaluated, so that a failed
    evaluation costs no training."""
    net = bake(net).eval()
    if rank == 0:
        saved = out / "models" / f"{run.tag()}.json"
        save_state_dict(net, saved.with_suffix(".safetensors"))
        write_json_atomic(saved, {"key": run.key(cfg), "fields": fields})
    return net


def _trained(
    cfg: Table1Config, run: Run, stages: Stages, out: Path, device: torch.device, rank: int,
    world: int, progress: bool,
) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    """The run's model, trained (unless the strategy is untrained), and its record's fields;
    a model this run trained before (and saved with ``models/{tag}.json``) is loaded instead."""
    net, info = _start_model(cfg, run, stages, device)
    found = _saved(cfg, run, out, net, device)
    if found is not None:
        return found
    fields = {"train_images": 0, "curve": [], **info}
    strat = STRATEGIES.get(run.strategy)
    if strat.trains:
        train_set = training_set(stages.data, strat.pooled_in_training)
        fields.update(train_run(cfg, run, stages.entry, net, train_set, stages.data, out, device,
                                rank, world, progress))  # fmt: skip
    return _keep(cfg, run, out, net, fields, rank), fields


def _trained_stacked(
    cfg: Table1Config, runs: list[Run], stages: Stages, out: Path, device: torch.device,
    progress: bool,
) -> list[tuple[nn.Module, dict[str, Any]]]:  # fmt: skip
    """:func:`_trained` of each of ``runs`` (one unit of :func:`stacked_units`): those not
    saved before trained together, a group per set of trainable tensors
    (:func:`train_stacked`; one alone as ever)."""
    starts = [_start_model(cfg, run, stages, device) for run in runs]
    done = {i: _saved(cfg, run, out, starts[i][0], device) for i, run in enumerate(runs)}
    groups: dict[Any, list[int]] = {}  # e.g. a ViT whose norms one strategy freezes: apart
    for i, found in done.items():
        if found is None:
            groups.setdefault(stack_key(starts[i][0]), []).append(i)
    strat = STRATEGIES.get(runs[0].strategy)
    train_set = training_set(stages.data, strat.pooled_in_training)
    for todo in groups.values():
        if len(todo) == 1:
            (i,) = todo
            more = [train_run(cfg, runs[i], stages.entry, starts[i][0], train_set, stages.data,
                              out, device, 0, 1, progress)]  # fmt: skip
        else:
            more = train_stacked(cfg, [runs[i] for i in todo], stages.entry,
                                 [starts[i][0] for i in todo], train_set, stages.data, device,
                                 progress)  # fmt: skip
        for i, m in zip(todo, more, strict=True):
            fields = {"train_images": 0, "curve": [], **starts[i][1], **m}
            done[i] = (_keep(cfg, runs[i], out, starts[i][0], fields, 0), fields)
    return [done[i] for i in range(len(runs))]  # type: ignore[misc]


def _evaluated(
    cfg: Table1Config, run: Run, stages: Stages, inputs: Inputs, out: Path, sync: Sync,
    ddp: bool, net: nn.Module, fields: dict[str, Any], start: float,
) -> dict[str, Any]:  # fmt: skip
    """The run's results record: its trained model ``net`` evaluated (rank 0), ``fields``
    from its training; ``wall_seconds`` since ``start``."""
    rank = sync.rank if ddp else 0
    device = resolve_device(cfg.device)
    strat = STRATEGIES.get(run.strategy)
    record = {
        "experiment": EXPERIMENT,
        "key": run.key(cfg),
        "model": run.model,
        "strategy": run.strategy,
        "unmasked": run.unmasked,
        "seed": run.seed,
        "steps": 0,  # a trained run's fields say how many
        # the model every strategy but scratch and pretrained starts from
        "adapted": {k: stages.adapted_meta[k] for k in ("adapt", "adapt_images", "train_images")},
        **fields,
    }
    if rank == 0:  # with slice, every rank evaluates its own runs
        transforms = transfer_transforms(stages.entry.arch, cfg.transfer_transforms)
        with timed(out, sync.rank, "evaluate", run.model, run.strategy):
            record.update(evaluate_model(
                net,
                stages.entry.arch,
                images=inputs.eval_images(),
                cue_conflict_dir=inputs.sources.cue_conflict_dir,
                mapping=inputs.mapping if strat.uses_mapping else None,
                out_dir=out,
                tag=run.tag(),
                cfg=EvalConfig(batch_size=cfg.eval_batch_size, workers=cfg.loader_workers,
                               device=str(device)),
                transform=transforms.eval,
                cue_transform=transforms.cue_conflict,
                ready=inputs.ready_images(run.model, cfg),
            ))  # fmt: skip
    if ddp:
        sync.wait(f"evaluated-{run.tag()}")  # the next DDP run starts with every rank there
    record["wall_seconds"] = time.perf_counter() - start
    return record


def run_strategy(
    cfg: Table1Config, run: Run, stages: Stages, inputs: Inputs, out: Path, sync: Sync,
    ddp: bool, progress: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Build the strategy's model, train it (unless the strategy is untrained or this run's
    model was saved before), evaluate it (rank 0); return its results record."""
    start = time.perf_counter()
    rank, world = (sync.rank, sync.world) if ddp else (0, 1)
    device = resolve_device(cfg.device)
    with timed(out, sync.rank, "train", run.model, run.strategy):
        net, fields = _trained(cfg, run, stages, out, device, rank, world, progress)
    return _evaluated(cfg, run, stages, inputs, out, sync, ddp, net, fields, start)


def run_stacked(
    cfg: Table1Config, runs: list[Run], stages: Stages, inputs: Inputs, out: Path, sync: Sync,
    progress: bool = False,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """:func:`run_strategy` of each of ``runs`` (a unit of :func:`stacked_units`; this process
    alone), trained together; each record's ``wall_seconds``: its share of the unit's training
    plus its own evaluation."""
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    label = "+".join(dict.fromkeys(run.strategy for run in runs))
    with timed(out, sync.rank, "train", runs[0].model, label):
        trained = _trained_stacked(cfg, runs, stages, out, device, progress)
    share = (time.perf_counter() - start) / len(runs)
    for run, (net, fields) in zip(runs, trained, strict=True):
        yield _evaluated(cfg, run, stages, inputs, out, sync, False, net, fields,
                         time.perf_counter() - share)  # fmt: skip


def stacked_units(runs: list[Run], stack: str) -> list[list[Run]]:
    """The runs cut into units of runs trained together, in plan order (``stack``): "seeds":
    the seeds of one trained (model, strategy, unmasked mode); "strategies": every trained run
    of one model with the same recipe, training set and kind of start (transferred or not:
    subtask induction and its controls, both unmasked modes, every seed). An untrained run is
    a unit alone."""
    units: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        s = STRATEGIES.get(run.strategy)
        if not s.trains:
            key: tuple[Any, ...] = (run.tag(),)
        elif stack == "seeds":
            key = (run.model, run.strategy, run.unmasked)
        else:
            key = (run.model, s.recipe, s.pooled_in_training, s.transfer)
        units.setdefault(key, []).append(run)
    return list(units.values())


def prepare(
    cfg: Table1Config, inputs: Inputs, sync: Sync, out: Path, progress: bool
) -> dict[str, Stages]:
    """Stages 1-3 of every model (cached). The adaptations, then every discovery, are dealt to
    the ranks; then every rank loads them all."""
    data = {m: inputs.image_sets(m, cfg) for m in cfg.models}
    device = resolve_device(cfg.device)

    def adapt(m: str):
        return lambda p: adapted_model(cfg, inputs.models[m], data[m], out, p)

    r = sync.rank
    deal(sync, [timed_job(adapt(m), out, r, "adaptation", m) for m in cfg.models], progress,
         "adapted")  # fmt: skip
    adapted = {m: adapt(m)(False) for m in cfg.models}
    jobs = [
        timed_job(job, out, r, "discovery", m, str(i))
        for m in cfg.models
        for i, job in enumerate(discovery_jobs(cfg, inputs.models[m], adapted[m][0], data[m], out))
    ]
    deal(sync, jobs, progress, "discovered")
    # Figure 11's control at the lambda chosen after discovery (transfer_penalty none): dealt
    # too, so that no rank waits while another computes it
    controls = []
    for m in cfg.models:
        if cfg.random_init_control and cfg.transfer_penalty is None:
            entry, base = inputs.models[m], adapted[m][0]
            found = [job(False) for job in discovery_jobs(cfg, entry, base, data[m], out)]
            lam = choose_penalty(cfg, dict(zip(cfg.penalties, found, strict=False)))
            control = lambda p, e=entry, d=data[m], lam=lam: control_subnetwork(  # noqa: E731
                cfg, e, d, lam, out, p)  # fmt: skip
            controls.append(timed_job(control, out, r, "control", m))
    deal(sync, controls, progress, "controls")
    stages = {}
    for m in cfg.models:
        net, meta = adapted[m]
        entry = inputs.models[m]
        found = find_subnetwork(cfg, entry, net, meta, data[m], out, False)  # all cached now
        pretrained = entry.pretrained.model.to(device).eval()
        stages[m] = Stages(entry, pretrained, net, meta, *found, data[m])
        if sync.rank == 0:
            for warning in stages[m].warnings():
                print(f"warning: {warning}", flush=True)
    return stages


@contextlib.contextmanager
def _all_cores(cfg: Table1Config, sync: Sync) -> Iterator[None]:
    """With local workers (``workers``), rank 0 takes every worker's threads while it computes
    a stage the others only wait for."""
    if sync.rank != 0 or cfg.workers <= 1 or sync.world <= 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(before * cfg.workers)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_table1(
    cfg: Table1Config, out: Path, progress: bool = True, preset: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Stages]]:
    """Run every missing stage and run; return the records of every planned run and the stages
    of each model (for the reports)."""
    out.mkdir(parents=True, exist_ok=True)
    archs = check_config(cfg, dist_env()[1])
    rank, world = init_distributed(timeout=datetime.timedelta(seconds=cfg.dist_timeout_s))
    sync = Sync.start(out, rank, world)
    start_timings(out, rank)
    resolver = None
    if rank == 0:  # every input, before the first training step; printed and recorded
        resolver = user_resolver(cfg, archs)
        checks = require_inputs(cfg, out, archs, resolver)  # checks the folder's claim too
        claim_folder(out, EXPERIMENT, cfg, FOLDER_FREE)
        for c in checks:
            print(f"{'warning' if c.warning else 'input'}: {c.line()}", flush=True)
        write_json_atomic(out / "inputs.json", [dataclasses.asdict(c) for c in checks])
    sync.wait("inputs checked")
    with _all_cores(cfg, sync):  # the world and its pretraining: rank 0 alone, the others wait
        inputs = resolve_inputs(cfg, out, sync, progress, resolver, archs)
    if rank == 0:
        write_config(out, EXPERIMENT, preset, cfg)
        if inputs.sources.cue_conflict_dir is not None:  # said once, not once per model
            print(same_class_note(scan_cue_conflict(inputs.sources.cue_conflict_dir)), flush=True)
    stages = prepare(cfg, inputs, sync, out, progress)
    ddp = cfg.distributed == "ddp"

    def run_unit(unit: list[Run]) -> Iterator[dict[str, Any]]:
        if len(unit) > 1:  # stack
            return run_stacked(cfg, unit, stages[unit[0].model], inputs, out, sync, progress)
        r = unit[0]
        return iter([run_strategy(cfg, r, stages[r.model], inputs, out, sync, ddp, progress)])

    def run_units(units: Iterable[list[Run]]) -> Iterator[dict[str, Any]]:
        return (record for unit in units for record in run_unit(unit))  # lazily: claimed

    records = execute(
        plan_runs(cfg),
        lambda r: r.key(cfg),
        out,
        run_units,
        config_digest=cfg.digest(*RUN_KEYS),
        sync=sync,
        progress=progress,
        plan_units=None if cfg.stack == "none" else lambda todo: stacked_units(todo, cfg.stack),
        desc="table1 runs",
        slice_runs=not ddp,
        claimed=True,  # with slice: each rank takes the costliest run left when it comes free
        cost=lambda unit: sum(_cost(cfg, r, stages[r.model]) for r in unit),
    )
    return records, stages


def _cost(cfg: Table1Config, run: Run, stages: Stages) -> int:
    """:func:`run_cost` of ``run``, its training images counted in its model's image sets."""
    data = stages.data  # what training_set would join, counted without joining it
    images = len(data.train)
    if STRATEGIES.get(run.strategy).pooled_in_training:
        images += len(data.pooled_training)
    return run_cost(cfg, run, stages.entry.family, images)


def run_table1_workers(cfg: Table1Config, out: Path, preset: str | None, progress: bool) -> None:
    """Run table1 in ``cfg.workers`` local processes, as ``torchrun --standalone
    --nproc_per_node=WORKERS`` would (``benchmarks.vision.worker``; the CPU cores shared out
    among them); rank 0 writes the reports. StageError (one line) when a worker fails (its own
    line says why, above)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    path = out / ".workers" / "config.json"
    write_json_atomic(path, {"config": dataclasses.asdict(cfg), "out": str(out),
                             "preset": preset, "progress": progress})  # fmt: skip
    threads = max(1, (os.cpu_count() or 1) // cfg.workers)
    launch = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=cfg.workers,
                          run_id=f"table1-{os.getpid()}", rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)  # fmt: skip
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # each worker's torch threads
    try:
        elastic_launch(launch, sys.executable)("-m", "benchmarks.vision.worker", str(path))
    except ChildFailedError:
        raise StageError(f"a table1 worker failed (its error is above); {out} keeps what the "
                         "others finished: rerun to resume") from None  # fmt: skip
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old
