"""The vision experiments (paper Section 5, Tables 1-2, Figures 5 and 11, Appendix C):
pretrained model -> 16-class "Linear FT" head -> discovery on mean-pooled images -> every training
strategy -> evaluation on original, mean-pooled and cue-conflict images -> table1.md, table2.md,
fig5.png. Finished stages and runs are cached in the output directory and reused.

    out/world/                               the synthetic world (mini preset only)
    out/pretrained/{model}-{hash}.safetensors mini preset: the model pretrained on the world
    out/{model}/linear-{hash}/               model.safetensors, linear.json (stage 2)
    out/{model}/subnetworks/lam{λ}-{hash}/   subnetwork.safetensors, subnetwork.json (stage 3)
    out/{model}/subnetworks/random-init-{hash}/   Figure 11's control
    out/models/{run}.safetensors             every trained model (16-class torchvision state dict)
    out/responses/{run}.csv                  cue-conflict responses, model-vs-human's format
    out/results.jsonl                        one record per run, with provenance
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, DistributedSampler

from benchmarks.harness import (
    StageError,
    barrier,
    dist_info,
    execute,
    one_at_a_time,
    planned_records,
)
from benchmarks.strategies import STRATEGIES, StrategyInputs
from benchmarks.table1_config import (
    DISCOVERY_KEYS,
    LINEAR_KEYS,
    PRETRAIN_KEYS,
    RUN_KEYS,
    Table1Config,
)
from meanpool.config import IndexConfig
from meanpool.imagenet import Item, build_index
from subind.discover import DiscoveryConfig, discover
from subind.io import write_json_atomic, write_with_atomic
from subind.masks import select_parameters
from subind.provenance import provenance
from subind.subnetwork import Subnetwork
from subind.train import TrainConfig, fit
from subind.transfer import bake
from subind.vision.data import (
    FileImages,
    PooledImages,
    eval_transform,
    train_transform,
)
from subind.vision.evaluate import EvalConfig, evaluate_model, load_decision_mapping
from subind.vision.models import ARCHS, VisionArch, load_weights, replace_head

EXPERIMENT = "table1"
NUM_CLASSES = 16


def device_of(cfg: Table1Config) -> torch.device:
    """cfg.device, "auto" meaning CUDA when available; a bare "cuda" under torchrun is the local
    rank's GPU (set as the current device, as NCCL needs)."""
    name = cfg.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


# --- inputs and data ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Inputs:
    """Where every input lives once resolved (the user's paths, or the synthetic world's)."""

    imagenet_dir: Path
    pooled: str
    cue_conflict_dir: Path | None
    mapping: dict[str, list[int]]
    num_pretrain_classes: int
    weights: dict[str, Path]
    index: IndexConfig
    val_labels: str | None = None


def _need(value: str | None, option: str, what: str) -> str:
    if value is None:
        raise StageError(f"{option} is required with this preset ({what}); or use --preset mini")
    return value


def world_config(cfg: Table1Config) -> Any:
    """The synthetic world's settings: "mini" (toyworld's defaults, calibrated so that the
    pretrained models are texture-biased yet above chance on pooled images) or "tiny" (a few
    images per class, for tests). With a world, its own subsets replace discovery_per_class /
    evaluation_per_class."""
    from benchmarks.toyworld import WorldConfig

    worlds = {
        "mini": WorldConfig(seed=cfg.world_seed),
        "tiny": WorldConfig(
            seed=cfg.world_seed,
            distractors=2,
            pretrain_per_class=6,
            train_per_class=8,
            val_per_class=2,
            discovery_per_class=3,
            evaluation_per_class=2,
            cue_shapes_per_class=1,
        ),
    }
    if cfg.world not in worlds:
        raise StageError(f"unknown world {cfg.world!r}; built-in worlds: {', '.join(worlds)}")
    return worlds[cfg.world]


def resolve_inputs(cfg: Table1Config, out: Path, rank: int, world: int, progress: bool) -> Inputs:
    """The user's inputs (paper preset), or the synthetic world and its pretrained models
    (``world="mini"``), built by rank 0 and cached in ``out``."""
    if cfg.world is None:
        imagenet = Path(_need(cfg.imagenet_dir, "--imagenet-dir", "an ImageNet root"))
        pooled = _need(cfg.pooled, "--pooled", "a meanpool output folder or hf:// dataset")
        weights = {}
        for m in cfg.models:
            opt = "--weights-vit" if m.startswith("vit") else "--weights-resnet18"
            weights[m] = Path(_need(cfg.weights(m), opt, f"{m}'s torchvision state dict"))
        cue = Path(cfg.cue_conflict_dir) if cfg.cue_conflict_dir else None
        return Inputs(
            imagenet_dir=imagenet,
            pooled=pooled,
            cue_conflict_dir=cue,
            mapping=load_decision_mapping(cfg.decision_mapping),
            num_pretrain_classes=1000,
            weights=weights,
            index=IndexConfig(cfg.discovery_per_class, cfg.evaluation_per_class, cfg.index_seed),
            val_labels=cfg.val_labels,
        )
    from benchmarks.toyworld import PretrainConfig, make_world, pretrain

    wcfg = world_config(cfg)
    if rank == 0:
        make_world(out / "world", wcfg, progress)
    barrier(world)
    w = make_world(out / "world", wcfg, progress=False)
    weights = {}
    pcfg = PretrainConfig(
        epochs=cfg.pretrain_epochs,
        lr=cfg.pretrain_lr,
        batch_size=cfg.pretrain_batch_size,
        seed=cfg.world_seed,
    )
    for m in cfg.models:
        path = out / "pretrained" / f"{m}-{cfg.digest(*PRETRAIN_KEYS)}.safetensors"
        if rank == 0 and not path.exists():
            pretrain(ARCHS.get(m), w, pcfg, path, progress=progress)
        weights[m] = path
    barrier(world)
    return Inputs(
        imagenet_dir=w.imagenet_dir,
        pooled=str(w.pooled_dir),
        cue_conflict_dir=w.cue_conflict_dir,
        mapping=load_decision_mapping(w.decision_mapping),
        num_pretrain_classes=len(w.pretrain_classes),
        weights=weights,
        index=w.index,
    )


@dataclass
class Data:
    """The image sets of one architecture (its transforms): training items exclude the
    evaluation subset; validation items are ImageNet's val split."""

    train: Dataset  # original 16-class train images minus the evaluation subset
    evaluation: Dataset  # the evaluation subset, original images (model selection, Figure 5)
    pooled_discovery: Dataset
    pooled_evaluation: Dataset
    root: Path
    train_items: list[Item]
    evaluation_items: list[Item]
    val_items: list[Item]


def split_items(index: dict[str, list[Item]]) -> tuple[list[Item], list[Item], list[Item]]:
    """(train, evaluation, val) items: every 16-class train image except the evaluation subset,
    de-duplicated by path; raises StageError if any evaluation or val image would be trained on."""
    held_out = {it.rel for it in index["evaluation"]}
    seen: set[str] = set()
    train = []
    for it in index["train"]:
        if it.rel not in held_out and it.rel not in seen:
            seen.add(it.rel)
            train.append(it)
    val_rels = {it.rel for it in index["val"]}
    leaked = (seen & held_out) | (seen & val_rels)
    if leaked:
        raise StageError(f"{len(leaked)} evaluation/val images are in the training set, e.g. "
                         f"{sorted(leaked)[0]}; check the ImageNet layout")  # fmt: skip
    return train, list(index["evaluation"]), list(index["val"])


def load_data(inputs: Inputs, arch: VisionArch) -> Data:
    index = build_index(inputs.imagenet_dir, inputs.index, inputs.val_labels)
    train, evaluation, val = split_items(index)
    pooled_eval = PooledImages(inputs.pooled, "evaluation", eval_transform(arch))
    want = {it.rel for it in evaluation}
    if set(pooled_eval.sources) != want:
        raise StageError(
            f"the pooled evaluation subset in {inputs.pooled} holds {len(pooled_eval.sources)} "
            f"images, not the {len(want)} of this index (discovery/evaluation per class "
            f"{inputs.index.discovery_per_class}/{inputs.index.evaluation_per_class}, seed "
            f"{inputs.index.seed}); build it with the same `meanpool index` settings"
        )
    leaked = {it.rel for it in train} & set(pooled_eval.sources)
    assert not leaked, f"evaluation images in the training set: {sorted(leaked)[:3]}"
    root = inputs.imagenet_dir
    return Data(
        train=FileImages(root, [(it.rel, it.label) for it in train], train_transform(arch)),
        evaluation=FileImages(
            root, [(it.rel, it.label) for it in evaluation], eval_transform(arch)
        ),
        pooled_discovery=PooledImages(inputs.pooled, "discovery", train_transform(arch)),
        pooled_evaluation=pooled_eval,
        root=root,
        train_items=train,
        evaluation_items=evaluation,
        val_items=val,
    )


def training_set(data: Data, pooled_in_training: bool) -> Dataset:
    """The original training images, plus (data mixture) the pooled discovery and evaluation
    images, really added to the stream."""
    if not pooled_in_training:
        return data.train
    return ConcatDataset([data.train, data.pooled_discovery, data.pooled_evaluation])


def epoch_loader(
    dataset: Dataset, batch_size: int, seed: int, workers: int, rank: int = 0, world: int = 1
) -> Any:
    """A function epoch -> DataLoader whose order is a deterministic function of (seed, epoch)
    and which gives each rank its own share (so a resumed run sees the same batches)."""
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=len(dataset) // world >= batch_size,
        persistent_workers=workers > 0,
    )

    def batches(epoch: int):
        sampler.set_epoch(epoch)
        return loader

    return batches


def _ce_loss(device: torch.device):
    def loss(model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x.to(device)), y.to(device))

    return loss


def _in_order(dataset: Dataset, batch_size: int, workers: int = 0) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, pin_memory=torch.cuda.is_available()
    )


@torch.no_grad()
def accuracy(
    model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int, workers: int = 0
) -> float:
    """Top-1 16-class accuracy of a 16-class model on ``dataset`` (model in eval mode)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in _in_order(dataset, batch_size, workers):
        pred = model(x.to(device)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


def _save_model(model: nn.Module, path: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_with_atomic(path, lambda tmp: save_file(state, str(tmp)))


# --- stage 1: the pretrained model ---------------------------------------------------------------
def pretrained_model(cfg: Table1Config, inputs: Inputs, model: str) -> nn.Module:
    arch = ARCHS.get(model)
    net = arch.build(inputs.num_pretrain_classes)
    load_weights(net, inputs.weights[model])
    return net.to(device_of(cfg)).eval()


# --- stage 2: Linear FT --------------------------------------------------------------------------
def _set_head(model: nn.Module, arch: VisionArch, head: nn.Module) -> None:
    parent_name, _, attr = arch.head.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, head)


@torch.no_grad()
def _features(
    backbone: nn.Module, dataset: Dataset, device: torch.device, bs: int, workers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) float32 features on the CPU and (N,) labels, in dataset order."""
    xs, ys = [], []
    for x, y in _in_order(dataset, bs, workers):
        xs.append(backbone(x.to(device)).float().cpu())
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def linear_ft(
    cfg: Table1Config, inputs: Inputs, data: Data, model: str, out: Path, progress: bool
) -> tuple[nn.Module, dict[str, Any]]:
    """The pretrained backbone, frozen (eval mode, so BatchNorm statistics stay put), with a
    16-way head trained on the original training images (SGD on the backbone's features, computed
    once without augmentation). Table 1's "Linear FT" row and Table 2's original model."""
    arch, device = ARCHS.get(model), device_of(cfg)
    d = out / model / f"linear-{cfg.digest(*LINEAR_KEYS)}"
    net = replace_head(pretrained_model(cfg, inputs, model), arch, NUM_CLASSES).to(device)
    if (d / "linear.json").exists():
        net.load_state_dict(load_file(str(d / "model.safetensors")))
        return net.eval(), json.loads((d / "linear.json").read_text())
    head = net.get_submodule(arch.head)
    _set_head(net, arch, nn.Identity())
    plain = FileImages(data.root, [(it.rel, it.label) for it in data.train_items],
                       eval_transform(arch))  # fmt: skip
    bs = cfg.eval_batch_size
    train_x, train_y = _features(net.eval(), plain, device, bs, cfg.loader_workers)
    eval_x, eval_y = _features(net, data.evaluation, device, bs, cfg.loader_workers)
    _set_head(net, arch, head)
    torch.manual_seed(cfg.index_seed)
    n = len(train_y)

    def batches(epoch: int):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, n, cfg.batch_size(model)):
            j = perm[i : i + cfg.batch_size(model)]
            yield train_x[j], train_y[j]

    def head_accuracy(h: nn.Module) -> float:
        return float((h(eval_x.to(device)).argmax(1).cpu() == eval_y).float().mean())

    result = fit(
        head,
        batches,
        _ce_loss(device),
        head_accuracy,
        _train_config(cfg, cfg.linear_lr, cfg.linear_steps, None),
        desc=f"linear FT {model}",
        progress=progress,
    )
    net.eval()
    meta = {
        "model": model,
        "evaluation_accuracy": result.best_accuracy,
        "pooled_evaluation_accuracy": accuracy(net, data.pooled_evaluation, device, bs),
        "best_step": _best_step(result.history),
        "train_images": n,
        "seconds": result.seconds,
        "config": {k: getattr(cfg, k) for k in LINEAR_KEYS},
        "provenance": provenance(),
    }
    _save_model(net, d / "model.safetensors")
    write_json_atomic(d / "linear.json", meta)
    return net, meta


def _best_step(history: list[dict[str, Any]]) -> int | None:
    """The step of the first evaluation with the best validation accuracy (fit's choice)."""
    if not history:
        return None
    best = max(range(len(history)), key=lambda i: (history[i]["val_accuracy"], -i))
    return history[best].get("step")


def _train_config(
    cfg: Table1Config, lr: float, steps: int, checkpoint: Path | None, ddp: bool = False
) -> TrainConfig:
    return TrainConfig(
        epochs=10**9,  # the step budget ends training
        lr=lr,
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        max_steps=steps,
        eval_every=min(cfg.eval_every, steps),
        checkpoint_dir=str(checkpoint) if checkpoint else None,
        amp=cfg.amp,
        ddp=ddp,
    )


# --- stage 3: discovery ----------------------------------------------------------------------------
def _discover(
    cfg: Table1Config,
    base: nn.Module,
    arch: VisionArch,
    data: Data,
    penalty: float,
    d: Path,
    meta: dict[str, Any],
    progress: bool,
) -> Subnetwork:
    if (d / "subnetwork.json").exists():
        return Subnetwork.load(d)
    device = device_of(cfg)
    loader = epoch_loader(
        data.pooled_discovery, cfg.discovery_batch_size, cfg.index_seed, cfg.loader_workers
    )
    sub = discover(
        base,
        select_parameters(base, arch.masked),
        loader,
        _ce_loss(device),
        lambda m: accuracy(
            m, data.pooled_evaluation, device, cfg.eval_batch_size, cfg.loader_workers
        ),  # fmt: skip
        DiscoveryConfig(
            epochs=cfg.discovery_epochs,
            lr=cfg.discovery_lr,
            penalty=penalty,
            beta_final=cfg.beta_final,
            seed=cfg.index_seed,
        ),
        meta={**meta, "config": {k: getattr(cfg, k) for k in DISCOVERY_KEYS}},
        progress=progress,
    )
    sub.save(d)
    return sub


def find_subnetwork(
    cfg: Table1Config,
    model: str,
    base: nn.Module,
    linear_meta: dict[str, Any],
    data: Data,
    out: Path,
    progress: bool,
) -> tuple[Subnetwork, dict[float, Subnetwork], Subnetwork | None]:
    """Discovery for every lambda; the most accurate on pooled evaluation images is kept (ties:
    the sparser). Checks the paper's Table 2 precondition: the subnetwork must beat the whole
    model on pooled images. Also runs Figure 11's control on a randomly initialised model."""
    arch, digest = ARCHS.get(model), cfg.digest(*DISCOVERY_KEYS)
    found = {}
    for lam in cfg.penalties:
        meta = {"base_model": f"{model} Linear FT", "model": model, "penalty": lam}
        d = out / model / "subnetworks" / f"lam{lam:g}-{digest}"
        found[lam] = _discover(cfg, base, arch, data, lam, d, meta, progress)
    best_lam = max(found, key=lambda k: (found[k].meta["val_accuracy"], -found[k].density))
    best = found[best_lam]
    whole = linear_meta["pooled_evaluation_accuracy"]
    if cfg.require_subnetwork_gain and best.meta["val_accuracy"] <= whole:
        raise StageError(
            f"the best {model} subnetwork (lambda {best_lam:g}) gets {best.meta['val_accuracy']:.3f} "
            f"on pooled evaluation images, no better than the whole model ({whole:.3f}): no "
            f"shape subtask was found; try more --set discovery_epochs=N or other "
            f"--set penalties=... (or --set require_subnetwork_gain=false to go on anyway; "
            f"{out / model / 'subnetworks'})"
        )
    control = None
    if cfg.random_init_control:
        torch.manual_seed(cfg.index_seed)
        rand = arch.build(NUM_CLASSES).to(device_of(cfg)).eval()
        d = out / model / "subnetworks" / f"random-init-lam{best_lam:g}-{digest}"
        meta = {"base_model": f"{model} random init", "model": model, "penalty": best_lam}
        control = _discover(cfg, rand, arch, data, best_lam, d, meta, progress)
    return best, found, control


# --- stage 4: strategies ---------------------------------------------------------------------------
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
    """Build the strategy's model, train it (step budget, evaluation every eval_every steps on
    the original and pooled evaluation subset), evaluate it; return its results record."""
    start = time.perf_counter()
    arch, device, strat = ARCHS.get(run.model), device_of(cfg), STRATEGIES.get(run.strategy)
    data = stages.data
    torch.manual_seed(run.seed)  # the same fresh initialisation for every strategy of a seed
    fresh = arch.build(NUM_CLASSES).to(device)
    net, info = strat.build(
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
    curve: list[dict[str, float]] = []
    train_images = 0
    if strat.trains:
        train_set = training_set(data, strat.pooled_in_training)
        train_images = len(train_set)
        ckpt = out / "checkpoints" / run.tag()

        def evaluate(m: nn.Module) -> dict[str, float]:
            # selection on the original evaluation subset; the pooled one is only recorded
            w, bs = cfg.loader_workers, cfg.eval_batch_size
            return {
                "val_accuracy": accuracy(m, data.evaluation, device, bs, w),
                "pooled_accuracy": accuracy(m, data.pooled_evaluation, device, bs, w),
            }

        torch.manual_seed(run.seed)
        result = fit(
            net,
            epoch_loader(
                train_set,
                _rank_batch(cfg, run.model, world),
                run.seed,
                cfg.loader_workers,
                rank,
                world,
            ),  # fmt: skip
            _ce_loss(device),
            evaluate,
            _train_config(cfg, cfg.lr, cfg.steps, ckpt, ddp=world > 1),
            desc=run.tag(),
            progress=progress,
        )
        curve = [  # Figure 5; fit's history survives a resume
            {"step": h["step"], "original": h["val_accuracy"], "pooled": h["pooled_accuracy"]}
            for h in result.history
        ]
        info["best_step"] = _best_step(result.history)
        shutil.rmtree(ckpt, ignore_errors=True)
    net = bake(net).eval()
    record = {
        "experiment": EXPERIMENT,
        "key": run.key(cfg),
        "model": run.model,
        "strategy": run.strategy,
        "unmasked": run.unmasked,
        "seed": run.seed,
        "train_images": train_images,
        "steps": cfg.steps if strat.trains else 0,
        "curve": curve,
        **info,
    }
    if rank == 0:
        _save_model(net, out / "models" / f"{run.tag()}.safetensors")
        metrics = evaluate_model(
            net,
            arch,
            imagenet_dir=inputs.imagenet_dir,
            val_labels=inputs.val_labels,
            pooled=inputs.pooled,
            cue_conflict_dir=inputs.cue_conflict_dir,
            mapping=inputs.mapping if strat.uses_mapping else None,
            out_dir=out,
            tag=run.tag(),
            cfg=EvalConfig(
                batch_size=cfg.eval_batch_size, workers=cfg.loader_workers, device=str(device)
            ),
        )
        record.update(metrics)
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


def run_table1(cfg: Table1Config, out: Path, progress: bool = True) -> dict[str, Any]:
    """Run every missing stage and run; return {"records", "stages"} for the reports."""
    out.mkdir(parents=True, exist_ok=True)
    for name in cfg.strategies:
        STRATEGIES.get(name)
    for model in cfg.models:
        ARCHS.get(model)
    rank, world = dist_info("nccl" if torch.cuda.is_available() else "gloo")
    prov = provenance()
    inputs = resolve_inputs(cfg, out, rank, world, progress)
    if rank == 0:
        write_json_atomic(out / "config.json", {"config": asdict(cfg), "provenance": prov})
    stages: dict[str, Stages] = {}
    for model in cfg.models:  # rank 0 fills the caches, the other ranks then read them
        if rank == 0:
            stages[model] = prepare(cfg, inputs, model, out, progress)
        barrier(world)
        if rank != 0:
            stages[model] = prepare(cfg, inputs, model, out, False)

    def stamp(rec: dict[str, Any]) -> None:
        rec["config_digest"] = cfg.digest(*RUN_KEYS)
        rec["provenance"] = {"git_commit": prov["git_commit"], "versions": prov["versions"]}

    ddp = cfg.distributed == "ddp"
    execute(
        plan_runs(cfg),
        lambda r: r.key(cfg),
        out,
        one_at_a_time(
            lambda r: run_strategy(
                cfg, r, stages[r.model], inputs, out, rank if ddp else 0, world if ddp else 1
            )  # fmt: skip
        ),
        rank=rank,
        world=world,
        stamp=stamp,
        progress=progress,
        desc="table1 runs",
        slice_runs=not ddp,
    )
    records = planned_records(out, (r.key(cfg) for r in plan_runs(cfg)))
    return {"records": records, "stages": stages, "rank": rank}
