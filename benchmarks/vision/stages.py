"""Stages 1-3 of the vision experiments (paper Section 5.2, Appendix C.1), each cached under the
output folder by the settings it depends on:

    out/{model}/adapted-{hash}/                  model.safetensors, adapted.json (stage 2)
    out/{model}/subnetworks/lam{λ}-{hash}/       subnetwork.safetensors, subnetwork.json (stage 3)
    out/{model}/subnetworks/random-init-{hash}/  Figure 11's control

1. the pretrained model (the user's weights, or the mini world's pretrained model: a
   :class:`benchmarks.vision.inputs.ModelEntry`, which every stage takes);
2. adaptation to 16 classes: a new 16-way head on the frozen backbone, or the whole model
   fine-tuned (Table 1's Linear FT row, Table 2's original model, and the model discovery
   starts from);
3. discovery on mean-pooled images for every lambda; the subnetwork transferred is the one of
   ``transfer_penalty`` or the most accurate.

Every stage seeds the global generator itself, so its output does not depend on what ran before
it in the process (or on which rank ran it).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from benchmarks.harness import StageError
from benchmarks.vision.config import ADAPT_KEYS, DISCOVERY_KEYS, Table1Config
from benchmarks.vision.data import (
    ImageSets,
    epoch_loader,
    in_order,
)
from benchmarks.vision.evaluate import accuracy
from benchmarks.vision.inputs import ModelEntry
from benchmarks.vision.models import VisionArch, replace_head, set_head
from subind.discover import DiscoveryConfig, discover
from subind.io import save_state_dict, write_json_atomic
from subind.masks import MaskSelection, select_parameters
from subind.provenance import provenance
from subind.runtime import resolve_device
from subind.subnetwork import Subnetwork
from subind.train import LoaderEpochs, TrainConfig, fit

NUM_CLASSES = 16


def stage_seed(cfg: Table1Config, *parts: str) -> int:
    """A seed for one stage of one model, from the index seed and the stage's name."""
    text = "/".join((str(cfg.index_seed), *parts))
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def ce_loss(device: torch.device, weight: torch.Tensor | None = None):
    """``loss_fn`` for :func:`subind.train.fit`: cross-entropy of a batch (images, labels),
    weighted per class when ``weight`` (C,) is given."""
    w = None if weight is None else weight.to(device)

    def loss(model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x.to(device)), y.to(device), weight=w)

    return loss


# --- stage 2: adaptation to 16 classes ------------------------------------------------------------
@torch.no_grad()
def _features(
    backbone: nn.Module, dataset: Dataset, device: torch.device, bs: int, workers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) float32 features on the CPU and (N,) labels, in dataset order."""
    xs, ys = [], []
    for x, y in in_order(dataset, bs, workers):
        xs.append(backbone(x.to(device)).float().cpu())
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def adapt_train_config(cfg: Table1Config, family: str, steps: int) -> TrainConfig:
    """The adaptation's training: the family's epochs and lr, the shared optimizer, weight decay
    and schedule, ``steps`` optimizer steps in all."""
    return TrainConfig(
        epochs=cfg.per_family("adapt_epochs", family),
        lr=cfg.per_family("adapt_lr", family),
        optimizer=cfg.adapt_optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.adapt_weight_decay,
        lr_schedule=cfg.adapt_lr_schedule,
        max_steps=steps,
        amp=cfg.amp,
    )


def selection_set(cfg: Table1Config, data: ImageSets) -> Dataset:
    """The images a best epoch is chosen on (``select_on``): the evaluation subset (held out of
    training), or ImageNet's val split (the released code's choice: the images Table 1 reports)."""
    items = data.evaluation_items if cfg.select_on == "evaluation" else data.val_items
    return data.originals(items, False)


def _train_head(
    cfg: Table1Config, net: nn.Module, entry: ModelEntry, images: Dataset, data: ImageSets,
    progress: bool,
) -> Any:  # fmt: skip
    """A new head on the frozen backbone (eval mode: BatchNorm statistics stay put), trained on
    the backbone's features, computed once without augmentation."""
    arch, device = entry.arch, resolve_device(cfg.device)
    bs, w = cfg.eval_batch_size, cfg.loader_workers
    head = net.get_submodule(arch.head)
    set_head(net, arch, nn.Identity())
    train_x, train_y = _features(net.eval(), images, device, bs, w)
    eval_x, eval_y = _features(net, selection_set(cfg, data), device, bs, w)
    set_head(net, arch, head)
    n, batch = len(train_y), cfg.per_family("adapt_batch_size", entry.family)

    def batches(epoch: int):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, n, batch):
            yield train_x[perm[i : i + batch]], train_y[perm[i : i + batch]]

    def head_accuracy(h: nn.Module) -> float:
        return float((h(eval_x.to(device)).argmax(1).cpu() == eval_y).float().mean())

    steps = cfg.per_family("adapt_epochs", entry.family) * -(-n // batch)
    return fit(head, batches, ce_loss(device), head_accuracy,
               adapt_train_config(cfg, entry.family, steps), desc=f"adapt head {arch.name}",
               progress=progress)  # fmt: skip


def _train_whole(
    cfg: Table1Config, net: nn.Module, entry: ModelEntry, images: Dataset, data: ImageSets,
    progress: bool,
) -> Any:  # fmt: skip
    """The whole model fine-tuned (train mode, augmented images), best epoch on
    :func:`selection_set`."""
    arch, device = entry.arch, resolve_device(cfg.device)
    for p in net.parameters():
        p.requires_grad_(True)
    batch = cfg.per_family("adapt_batch_size", entry.family)
    loader = epoch_loader(images, batch, cfg.index_seed, cfg.loader_workers)
    steps = cfg.per_family("adapt_epochs", entry.family) * len(loader)
    select = selection_set(cfg, data)
    evaluate = lambda m: accuracy(m, select, device, cfg.eval_batch_size, cfg.loader_workers)  # noqa: E731
    return fit(net, loader, ce_loss(device), evaluate, adapt_train_config(cfg, entry.family, steps),
               desc=f"adapt {arch.name}", progress=progress)  # fmt: skip


def adapted_model(
    cfg: Table1Config, entry: ModelEntry, data: ImageSets, out: Path, progress: bool
) -> tuple[nn.Module, dict[str, Any]]:
    """The pretrained model adapted to 16 classes (``cfg.adapt(family)``: "head" or "full"), on
    the originals of the discovery images or on every training image (``adapt_images_*``);
    best epoch on ``select_on``. Cached."""
    model, arch, device = entry.name, entry.arch, resolve_device(cfg.device)
    d = out / model / f"adapted-{cfg.digest(*ADAPT_KEYS)}"
    torch.manual_seed(stage_seed(cfg, model, "adapt"))  # the new head's initialisation
    net = replace_head(copy.deepcopy(entry.pretrained.model), arch, NUM_CLASSES).to(device)
    if (d / "adapted.json").exists():
        net.load_state_dict(load_file(str(d / "model.safetensors")))
        return net.eval(), json.loads((d / "adapted.json").read_text())
    which = cfg.per_family("adapt_images", entry.family)
    items = data.discovery_items if which == "discovery" else data.train_items
    mode = cfg.adapt(entry.family)
    images = data.originals(items, mode != "head")  # head: features of unaugmented images
    train = _train_head if mode == "head" else _train_whole
    result = train(cfg, net, entry, images, data, progress)
    for p in net.parameters():
        p.requires_grad_(False)
    net.eval()
    meta = {
        "model": model,
        "adapt": mode,
        "adapt_images": which,
        "selected_on": cfg.select_on,
        "evaluation_accuracy": result.best_accuracy,
        "pooled_evaluation_accuracy": accuracy(
            net, data.source_pooled_evaluation, device, cfg.eval_batch_size
        ),  # fmt: skip
        "best_epoch": result.best_epoch,
        "train_images": len(images),
        "batch_size": cfg.per_family("adapt_batch_size", entry.family),
        "steps": result.steps,
        "seconds": result.seconds,
        "config": {k: getattr(cfg, k) for k in ADAPT_KEYS},
        "provenance": provenance(),
    }
    save_state_dict(net, d / "model.safetensors")
    write_json_atomic(d / "adapted.json", meta)
    return net, meta


# --- stage 3: discovery ----------------------------------------------------------------------------
def masked_selection(cfg: Table1Config, arch: VisionArch) -> MaskSelection:
    """The architecture's masking preset; for a ViT with ``mask_classifier`` the classifier's
    weight too (the released code masked every Linear of the ViT)."""
    if not (cfg.mask_classifier and arch.family == "vit"):
        return arch.masked
    head = f"{arch.head}.weight"
    exclude = tuple(p for p in arch.masked.exclude if not head.startswith(p.rstrip("*")))
    return dataclasses.replace(arch.masked, include=arch.masked.include + (head,), exclude=exclude)


def discovery_config(cfg: Table1Config, family: str, penalty: float) -> DiscoveryConfig:
    """How discovery trains the masks of a ``family`` model at lambda ``penalty``."""
    return DiscoveryConfig(
        epochs=cfg.per_family("discovery_epochs", family),
        lr=cfg.discovery_lr,
        penalty=penalty,
        beta_final=cfg.beta_final,
        seed=cfg.index_seed,
        optimizer=cfg.discovery_optimizer,
        beta_schedule=cfg.beta_schedule,
        mask_init=cfg.mask_init,
    )


def discovery_loader(cfg: Table1Config, family: str, data: ImageSets) -> LoaderEpochs:
    """Discovery's epochs over the pooled discovery images, at the family's batch size."""
    batch = cfg.per_family("discovery_batch_size", family)
    return epoch_loader(data.pooled_discovery, batch, cfg.index_seed, cfg.loader_workers)


def _discover(
    cfg: Table1Config, base: nn.Module, entry: ModelEntry, data: ImageSets, penalty: float,
    d: Path, meta: dict[str, Any], progress: bool,
) -> Subnetwork:  # fmt: skip
    if (d / "subnetwork.json").exists():
        return Subnetwork.load(d)
    device = resolve_device(cfg.device)
    sub = discover(
        base,
        select_parameters(base, masked_selection(cfg, entry.arch)),
        discovery_loader(cfg, entry.family, data),
        ce_loss(device),
        lambda m: accuracy(
            m, data.source_pooled_evaluation, device, cfg.eval_batch_size, cfg.loader_workers
        ),  # fmt: skip
        discovery_config(cfg, entry.family, penalty),
        meta={**meta, "config": {k: getattr(cfg, k) for k in DISCOVERY_KEYS}},
        progress=progress,
    )
    sub.save(d)
    return sub


def _subnetwork_dir(cfg: Table1Config, out: Path, model: str, lam: float, control: bool) -> Path:
    name = f"random-init-lam{lam:g}" if control else f"lam{lam:g}"
    return out / model / "subnetworks" / f"{name}-{cfg.digest(*DISCOVERY_KEYS)}"


def discovery_jobs(
    cfg: Table1Config, entry: ModelEntry, base: nn.Module, data: ImageSets, out: Path
) -> list[Callable[[bool], Subnetwork]]:
    """One cached discovery per lambda, and Figure 11's random-init control when its lambda is
    known before discovery (``transfer_penalty``): jobs that ranks can run side by side."""
    model = entry.name
    jobs = [
        lambda p, lam=lam: _discover(
            cfg,
            base,
            entry,
            data,
            lam,
            _subnetwork_dir(cfg, out, model, lam, False),
            {"base_model": f"{model} adapted", "model": model, "penalty": lam},
            p,
        )  # fmt: skip
        for lam in cfg.penalties
    ]
    if cfg.random_init_control and cfg.transfer_penalty is not None:
        jobs.append(lambda p: control_subnetwork(cfg, entry, data, cfg.transfer_penalty, out, p))
    return jobs


def control_subnetwork(
    cfg: Table1Config, entry: ModelEntry, data: ImageSets, lam: float, out: Path, progress: bool
) -> Subnetwork:
    """Figure 11's control: discovery on a randomly initialised model of the architecture.

    Its classifier is drawn with PyTorch's default Linear initialisation: torchvision's ViT
    initialises its head to zeros, which makes every gradient of a random model zero, so its
    masks could only shrink to nothing (transformers' random ViT, the released code's, has a
    non-zero head)."""
    arch, model = entry.arch, entry.name
    torch.manual_seed(cfg.index_seed)
    rand = replace_head(arch.build(NUM_CLASSES), arch, NUM_CLASSES)
    rand = rand.to(resolve_device(cfg.device)).eval()
    meta = {"base_model": f"{model} random init", "model": model, "penalty": lam}
    return _discover(cfg, rand, entry, data, lam, _subnetwork_dir(cfg, out, model, lam, True),
                     meta, progress)  # fmt: skip


def choose_penalty(cfg: Table1Config, found: dict[float, Subnetwork]) -> float:
    """The lambda whose subnetwork is transferred: ``transfer_penalty``, or (None) the most
    accurate on pooled evaluation images (ties: the sparser)."""
    if cfg.transfer_penalty is not None:
        return cfg.transfer_penalty
    return max(found, key=lambda k: (found[k].meta["val_accuracy"], -found[k].density))


def subnetwork_warnings(model: str, lam: float, sub: Subnetwork, whole: float) -> list[str]:
    """What a run must say about the subnetwork it transfers: empty (no masked weight kept:
    subtask induction, the random subnetwork and unmasked-only are then one model), or no
    better than the whole model on pooled images (Table 2's precondition)."""
    out = []
    if sub.density == 0:
        out.append(f"the {model} subnetwork of lambda {lam:g} keeps 0.0% of the masked weights: "
                   "subtask induction, random-subnetwork and unmasked-only are the same model")  # fmt: skip
    acc = sub.meta["val_accuracy"]
    if acc <= whole:
        out.append(f"the {model} subnetwork of lambda {lam:g} gets {acc:.3f} on pooled "
                   f"evaluation images, no better than the whole model ({whole:.3f}): no shape "
                   "subtask was found")  # fmt: skip
    return out


def require_gain(
    cfg: Table1Config, entry: ModelEntry, lam: float, sub: Subnetwork, whole: float, where: Path
) -> None:
    """With ``require_subnetwork_gain``: StageError unless the subnetwork beats the whole model
    on pooled evaluation images (this project's gate; the released code has none)."""
    acc = sub.meta["val_accuracy"]
    if cfg.require_subnetwork_gain and acc <= whole:
        raise StageError(
            f"the {entry.name} subnetwork of lambda {lam:g} gets {acc:.3f} on pooled evaluation "
            f"images, no better than the whole model ({whole:.3f}): no shape subtask was found; "
            f"try more --set discovery_epochs_{entry.family}=N or other --set penalties=... (or "
            f"--set require_subnetwork_gain=false to go on anyway; {where})"
        )


def find_subnetwork(
    cfg: Table1Config,
    entry: ModelEntry,
    base: nn.Module,
    adapted_meta: dict[str, Any],
    data: ImageSets,
    out: Path,
    progress: bool,
) -> tuple[Subnetwork, dict[float, Subnetwork], Subnetwork | None]:
    """Discovery for every lambda (cached: see :func:`discovery_jobs`); the subnetwork of
    :func:`choose_penalty` is kept. The paper's Table 2 precondition (the subnetwork beats the
    whole model on pooled images) stops the run with ``require_subnetwork_gain``; otherwise it
    and an empty subnetwork are warned about (:func:`subnetwork_warnings`). Also Figure 11's
    control on a randomly initialised model."""
    model = entry.name
    found = dict(zip(cfg.penalties, (job(progress) for job in
                                     discovery_jobs(cfg, entry, base, data, out)), strict=False))  # fmt: skip
    best_lam = choose_penalty(cfg, found)
    best = found[best_lam]
    whole = adapted_meta["pooled_evaluation_accuracy"]
    require_gain(cfg, entry, best_lam, best, whole, out / model / "subnetworks")
    control = (
        control_subnetwork(cfg, entry, data, best_lam, out, progress)
        if cfg.random_init_control
        else None
    )
    return best, found, control
