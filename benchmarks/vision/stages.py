"""Stages 1-3 of the vision experiments (paper Section 5.2, Appendix C.1), each cached under the
output folder by the settings it depends on:

    out/{model}/linear-{hash}/                   model.safetensors, linear.json (stage 2)
    out/{model}/subnetworks/lam{λ}-{hash}/       subnetwork.safetensors, subnetwork.json (stage 3)
    out/{model}/subnetworks/random-init-{hash}/  Figure 11's control

1. the pretrained model (the user's weights, or the mini world's pretrained model);
2. "Linear FT": the frozen backbone with a 16-way head trained on the original images (Table 1's
   Linear FT row, Table 2's original model, and the model discovery starts from);
3. discovery on mean-pooled images for every lambda, the most accurate subnetwork kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from benchmarks.harness import StageError
from benchmarks.vision.config import DISCOVERY_KEYS, LINEAR_KEYS, Table1Config
from benchmarks.vision.data import FileImages, epoch_loader, eval_transform, in_order
from benchmarks.vision.evaluate import accuracy
from benchmarks.vision.inputs import Data, Inputs
from benchmarks.vision.models import ARCHS, VisionArch, load_weights, replace_head, set_head
from subind.discover import DiscoveryConfig, discover
from subind.io import save_state_dict, write_json_atomic
from subind.masks import select_parameters
from subind.provenance import provenance
from subind.runtime import resolve_device
from subind.subnetwork import Subnetwork
from subind.train import TrainConfig, fit

NUM_CLASSES = 16


def ce_loss(device: torch.device):
    """``loss_fn`` for :func:`subind.train.fit`: cross-entropy of a batch (images, labels)."""

    def loss(model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x.to(device)), y.to(device))

    return loss


# --- stage 1: the pretrained model ---------------------------------------------------------------
def pretrained_model(cfg: Table1Config, inputs: Inputs, model: str) -> nn.Module:
    arch = ARCHS.get(model)
    net = arch.build(inputs.num_pretrain_classes)
    load_weights(net, inputs.weights[model])
    return net.to(resolve_device(cfg.device)).eval()


# --- stage 2: Linear FT --------------------------------------------------------------------------
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


def linear_ft(
    cfg: Table1Config, inputs: Inputs, data: Data, model: str, out: Path, progress: bool
) -> tuple[nn.Module, dict[str, Any]]:
    """The pretrained backbone, frozen (eval mode, so BatchNorm statistics stay put), with a
    16-way head trained on the original training images (SGD on the backbone's features, computed
    once without augmentation). Table 1's "Linear FT" row and Table 2's original model."""
    arch, device = ARCHS.get(model), resolve_device(cfg.device)
    d = out / model / f"linear-{cfg.digest(*LINEAR_KEYS)}"
    net = replace_head(pretrained_model(cfg, inputs, model), arch, NUM_CLASSES).to(device)
    if (d / "linear.json").exists():
        net.load_state_dict(load_file(str(d / "model.safetensors")))
        return net.eval(), json.loads((d / "linear.json").read_text())
    head = net.get_submodule(arch.head)
    set_head(net, arch, nn.Identity())
    plain = FileImages(data.root, [(it.rel, it.label) for it in data.train_items],
                       eval_transform(arch))  # fmt: skip
    bs = cfg.eval_batch_size
    train_x, train_y = _features(net.eval(), plain, device, bs, cfg.loader_workers)
    eval_x, eval_y = _features(net, data.evaluation, device, bs, cfg.loader_workers)
    set_head(net, arch, head)
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
        ce_loss(device),
        head_accuracy,
        train_config(cfg, cfg.linear_lr, cfg.linear_steps, None),
        desc=f"linear FT {model}",
        progress=progress,
    )
    net.eval()
    meta = {
        "model": model,
        "evaluation_accuracy": result.best_accuracy,
        "pooled_evaluation_accuracy": accuracy(net, data.pooled_evaluation, device, bs),
        "best_step": best_step(result.history),
        "train_images": n,
        "seconds": result.seconds,
        "config": {k: getattr(cfg, k) for k in LINEAR_KEYS},
        "provenance": provenance(),
    }
    save_state_dict(net, d / "model.safetensors")
    write_json_atomic(d / "linear.json", meta)
    return net, meta


def best_step(history: list[dict[str, Any]]) -> int | None:
    """The step of the first evaluation with the best validation accuracy (fit's choice)."""
    if not history:
        return None
    best = max(range(len(history)), key=lambda i: (history[i]["val_accuracy"], -i))
    return history[best].get("step")


def train_config(
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
    device = resolve_device(cfg.device)
    loader = epoch_loader(
        data.pooled_discovery, cfg.discovery_batch_size, cfg.index_seed, cfg.loader_workers
    )
    sub = discover(
        base,
        select_parameters(base, arch.masked),
        loader,
        ce_loss(device),
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
        rand = arch.build(NUM_CLASSES).to(resolve_device(cfg.device)).eval()
        d = out / model / "subnetworks" / f"random-init-lam{best_lam:g}-{digest}"
        meta = {"base_model": f"{model} random init", "model": model, "penalty": best_lam}
        control = _discover(cfg, rand, arch, data, best_lam, d, meta, progress)
    return best, found, control
