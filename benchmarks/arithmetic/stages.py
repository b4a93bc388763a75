"""Stages 1-2 of the arithmetic experiments (paper Section 4, Appendix B.1): the base GPT-2
trained on the source task, and the subnetwork discovered in it for the subtask. Both are cached
under the output folder, named by the settings they depend on, and checked before use:

    out/base/L{layers}-{hash}/            model.safetensors, base.json
    out/subnetworks/L{layers}-{hash}/     subnetwork.safetensors, subnetwork.json
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from benchmarks.arithmetic.config import BASE_KEYS, DISCOVERY_KEYS, Fig3Config
from benchmarks.arithmetic.expression import Expression
from benchmarks.arithmetic.gpt2 import GPT2, GPT2Config
from benchmarks.arithmetic.tasks import (
    Batches,
    Numbers,
    accuracy,
    encode,
    last_token_loss,
    split_pairs,
)
from benchmarks.harness import StageError
from subind.discover import DiscoveryConfig, discover
from subind.io import save_state_dict, write_json_atomic
from subind.masks import MaskSelection, select_parameters
from subind.provenance import provenance
from subind.runtime import resolve_device
from subind.subnetwork import Subnetwork
from subind.train import TrainConfig, fit

# Every attention and feed-forward weight (Appendix B.1): GPT-2's Conv1D layers; not the
# embeddings, norms or biases.
GPT2_MASKED = MaskSelection(module_types=("Conv1D",))


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


def task_rows(cfg: Fig3Config, task: str, pairs) -> torch.Tensor:
    """The rows (B, 4) of ``task`` for the (a, b) ``pairs``, on the configured device."""
    rows = encode(Numbers(cfg.max_number, cfg.modulus), Expression(task, cfg.modulus), pairs)
    return rows.to(resolve_device(cfg.device))


def _load_model(cfg: Fig3Config, layers: int, path: Path) -> GPT2:
    model = GPT2(model_config(cfg, layers))
    model.load_state_dict(load_file(str(path)), strict=False)  # lm_head is tied to wte
    return model.to(resolve_device(cfg.device)).eval()


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
        rows = {k: task_rows(cfg, cfg.source_task, v) for k, v in splits.items()}
        torch.manual_seed(cfg.base_seed)
        model = GPT2(model_config(cfg, layers)).to(resolve_device(cfg.device))  # CPU init
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
        # lm_head is tied to wte; safetensors refuses shared storage
        save_state_dict(model, d / "model.safetensors", exclude=("lm_head.weight",))
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
        rows = {k: task_rows(cfg, cfg.subtask, v) for k, v in splits.items()}
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
