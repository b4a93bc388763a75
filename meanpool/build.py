"""``meanpool build``: 16-class ImageNet -> Mean-pooled ImageNet WebDataset shards.

Resumable (finished shards and recorded failures are skipped, half-written shards redone) and
distributed (under torchrun each rank takes a contiguous slice of the sorted remaining images,
writes its own shards, and rank 0 writes the manifest after a barrier).
"""

from __future__ import annotations

import io
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from subind.io import append_jsonl, read_jsonl, write_json_atomic
from subind.provenance import digest, provenance
from subind.runtime import barrier, init_distributed, resolve_device

from .config import BuildConfig, ImageConfig, PoolConfig, SegmentConfig, to_dict
from .imagenet import PAPER_LISTS, Item, missing_files, paper_items, select, sixteen_classes
from .images import ImageSkip, load_rgb
from .shards import ShardWriter, complete_shards, remove_partial, sha256_file, shard_keys

SETTINGS_FILE = "build.json"
MANIFEST_FILE = "manifest.json"
FAILURES_FILE = "failures.jsonl"
FORMAT = "meanpool-webdataset/1"
MAX_FAILURES_IN_A_ROW = 5


class BuildError(ValueError):
    """A build that cannot start or resume (e.g. the output holds a build with other settings)."""


# ---------------------------------------------------------------- pipeline stages (generators)
def read_images(items: Iterable[Item], root: str, cfg: ImageConfig) -> Iterator[dict[str, Any]]:
    """Item -> {"item", "image": HWC uint8 RGB} or {"item", "skip": reason, "stage": "read"}."""
    for item in items:
        try:
            yield {"item": item, "image": load_rgb(Path(root) / item.rel, cfg)}
        except ImageSkip as exn:
            yield {"item": item, "skip": str(exn), "stage": "read"}


def pool_images(
    samples: Iterable[dict[str, Any]],
    sam: torch.nn.Module,
    seg: SegmentConfig,
    pool_cfg: PoolConfig,
) -> Iterator[dict[str, Any]]:
    """Adds "pooled" (HWC uint8) and "n_segments". A failure inside SAM on one image (e.g. out of
    memory on a huge one) becomes a skip (stage "segment", retried when the build resumes);
    ``MAX_FAILURES_IN_A_ROW`` in a row stop the build, as they point at a broken setup rather
    than at odd images."""
    from .pool import pool
    from .segment import generate_masks

    in_a_row = 0
    for s in samples:
        if "skip" not in s:
            try:
                pooled, labels = pool(s["image"], generate_masks(sam, s["image"], seg), pool_cfg)
                s = {**s, "pooled": pooled, "n_segments": int(labels.max()) + 1}
                in_a_row = 0
            except Exception as exn:
                reason = f"segmentation failed ({type(exn).__name__}: {str(exn)[:200]})"
                in_a_row += 1
                if in_a_row >= MAX_FAILURES_IN_A_ROW:
                    raise BuildError(f"{in_a_row} images in a row: {reason}") from exn
                s = {**s, "skip": reason, "stage": "segment"}
        yield s


def encode_samples(
    samples: Iterable[dict[str, Any]], jpeg_quality: int, settings_digest: str
) -> Iterator[dict[str, Any]]:
    """-> WebDataset samples {"__key__", "jpg", "cls", "json"} (bytes), or skips unchanged."""
    for s in samples:
        if "skip" in s:
            yield s
            continue
        item: Item = s["item"]
        buf = io.BytesIO()
        Image.fromarray(s["pooled"]).save(buf, format="JPEG", quality=jpeg_quality)
        h, w = s["pooled"].shape[:2]
        meta = {
            "wnid": item.wnid,
            "category": item.category,
            "label": item.label,
            "source": item.rel,
            "width": w,
            "height": h,
            "n_segments": s["n_segments"],
            "settings_digest": settings_digest,
        }
        yield {
            "__key__": item.key,
            "jpg": buf.getvalue(),
            "cls": str(item.label).encode(),
            "json": json.dumps(meta, sort_keys=True).encode(),
        }


# ---------------------------------------------------------------- distributed helpers
def _slice(items: list[Item], rank: int, world: int) -> list[Item]:
    """Contiguous, near-equal slices of ``items`` for each rank."""
    bounds = np.linspace(0, len(items), world + 1).round().astype(int)
    return items[bounds[rank] : bounds[rank + 1]]


# ---------------------------------------------------------------- settings and manifest
def build_identity(cfg: BuildConfig, checkpoint_sha256: str) -> dict[str, Any]:
    """Everything that changes the output; a resumed build must match it exactly."""
    seg = to_dict(cfg.segment)
    seg.pop("points_per_batch")  # memory knob only; both paths' masks do not depend on it
    seg.pop("encoder_batch")  # likewise
    seg.pop("backend")  # both paths give the same masks in float32
    return {
        "format": FORMAT,
        "subset": cfg.subset,
        "model_type": cfg.model_type,
        "checkpoint_sha256": checkpoint_sha256,
        "segment": seg,
        "pool": to_dict(cfg.pool),
        "index": cfg.index.identity(),  # a random draw's is the dict recorded before lists
        "image": to_dict(cfg.image),
        "jpeg_quality": cfg.jpeg_quality,
    }


def _check_settings(out: Path, identity: dict[str, Any]) -> None:
    path = out / SETTINGS_FILE
    if not path.exists():
        return
    old = json.loads(path.read_text())["identity"]
    if old != identity:
        diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        index = f" (its index: {old.get('index')}; this run's: {identity['index']})"
        raise BuildError(
            f"{out} holds a build with different settings ({', '.join(diff)})"
            f"{index if 'index' in diff else ''}; use a new --out or rerun with the same settings"
        )


def missing_inputs(cfg: BuildConfig, selected: list[Item]) -> dict[str, Any] | None:
    """For a subset of the paper's lists: {"list", "listed", "count", "files"}, the listed images
    the build goes without (``allow_missing``); None for a random draw or for val (no list)."""
    if cfg.index.selection != "paper" or cfg.subset not in PAPER_LISTS:
        return None
    files = missing_files(cfg.subset, selected)
    listed = len(paper_items(cfg.subset))
    return {"list": f"{cfg.subset}.tsv.gz", "listed": listed, "count": len(files), "files": files}


def write_manifest(
    out: Path,
    cfg: BuildConfig,
    identity: dict[str, Any],
    items: list[Item],
    runtime: dict[str, Any],
    missing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """List every finished shard (samples, sha256, bytes) with the full settings and versions.

    ``missing`` (see ``missing_inputs``): listed images absent from the ImageNet tree, recorded
    under ``inputs.missing`` so that readers can say the subset is not the whole list."""
    shards, written = [], set()
    for p in complete_shards(out):
        keys = shard_keys(p)
        written.update(keys)
        shards.append(
            {
                "name": p.name,
                "num_samples": len(keys),
                "sha256": sha256_file(p),
                "bytes": p.stat().st_size,
            }
        )
    # A SAM failure that a resumed build got past is no longer a failure.
    failed = {r["key"] for r in read_jsonl(out / FAILURES_FILE)} - written
    inputs: dict[str, Any] = {"count": len(items), "paths_sha256": digest([it.rel for it in items])}
    if missing is not None:
        inputs["missing"] = missing
    manifest = {
        "format": FORMAT,
        "subset": cfg.subset,
        "num_samples": sum(s["num_samples"] for s in shards),
        "num_failures": len(failed),
        # Which inputs this run covered (the subset, after --limit): count and digest of paths.
        "inputs": inputs,
        "shards": shards,
        "label_order": sixteen_classes()[0],
        "fields": {
            "jpg": "mean-pooled image (RGB JPEG)",
            "cls": "16-class label index",
            "json": "metadata",
        },
        "settings": identity,
        "settings_digest": digest(identity),
        "build_config": to_dict(cfg),
        "runtime": runtime,  # resolved device, world size, paths
        "provenance": provenance(),
    }
    write_json_atomic(out / MANIFEST_FILE, manifest)
    return manifest


def _end_torn_line(path: Path) -> None:
    """A kill mid-append leaves a line without its newline; end it, so the next record starts a
    line of its own (read_jsonl skips the torn one and its image is redone)."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


# ---------------------------------------------------------------- the build
def build(cfg: BuildConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a build. Returns the manifest on rank 0 and a per-rank summary elsewhere."""
    from .model import load_sam

    device = str(resolve_device(cfg.device))  # before NCCL starts, so that it uses this GPU
    # Ranks finish their slices at different times; the final barrier must wait for all (the
    # process group's timeout is long).
    rank, world = init_distributed("nccl" if device.startswith("cuda") else "gloo")
    out = Path(cfg.out)

    sam = load_sam(cfg.model_type, cfg.checkpoint, device)  # fails before anything is written
    identity = build_identity(cfg, sha256_file(cfg.checkpoint))
    settings_digest = digest(identity)[:16]
    _check_settings(out, identity)
    selected = select(cfg.imagenet_dir, cfg.subset, cfg.index, cfg.val_labels)
    barrier(world)  # every rank has read the old state before rank 0 changes it
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        remove_partial(out)
        _end_torn_line(out / FAILURES_FILE)
        if not (out / SETTINGS_FILE).exists():
            record = {"identity": identity, "digest": digest(identity), "provenance": provenance()}
            write_json_atomic(out / SETTINGS_FILE, record)
    barrier(world)

    chosen = selected[: cfg.limit] if cfg.limit is not None else selected
    items = sorted(chosen, key=lambda it: it.rel)
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        clash = sorted(k for k, n in Counter(keys).items() if n > 1)[:3]
        raise BuildError(f"input files map to the same sample key {clash}; rename one of each pair")
    done = {k for p in complete_shards(out) for k in shard_keys(p)}
    # Unreadable inputs stay skipped; SAM failures (often out of memory) are retried.
    done |= {r["key"] for r in read_jsonl(out / FAILURES_FILE) if r.get("stage") != "segment"}
    mine = _slice([it for it in items if it.key not in done], rank, world)
    barrier(world)  # all ranks computed `done` before any rank writes

    stats = {"rank": rank, "written": 0, "skipped": 0, "already_done": len(set(keys) & done)}
    writer = ShardWriter(out, cfg.subset, rank, cfg.shard_size)
    stages = encode_samples(
        pool_images(read_images(mine, cfg.imagenet_dir, cfg.image), sam, cfg.segment, cfg.pool),
        cfg.jpeg_quality,
        settings_digest,
    )
    bar = _progress(len(mine), enabled=progress and rank == 0, world=world)
    for sample in stages:
        if "skip" in sample:
            item = sample["item"]
            append_jsonl(
                out / FAILURES_FILE,
                {
                    "key": item.key,
                    "path": item.rel,
                    "reason": sample["skip"],
                    "stage": sample["stage"],
                    "rank": rank,
                    "time": time.time(),
                },
            )
            stats["skipped"] += 1
        else:
            writer.write(sample)
            stats["written"] += 1
        bar.update(1)
    writer.close()
    bar.close()
    barrier(world)
    result: dict[str, Any] = stats
    if rank == 0:
        runtime = {
            "device": device,
            "world_size": world,
            "imagenet_dir": str(Path(cfg.imagenet_dir).resolve()),
            "checkpoint": str(Path(cfg.checkpoint).resolve()),
        }
        result = write_manifest(out, cfg, identity, items, runtime, missing_inputs(cfg, selected))
    barrier(world)
    if world > 1:
        torch.distributed.destroy_process_group()
    return result


def _progress(total: int, enabled: bool, world: int) -> Any:
    """A tqdm bar (img/s and time left), shown by rank 0 only."""
    from tqdm import tqdm

    desc = "meanpool" if world == 1 else f"meanpool rank 0/{world}"
    return tqdm(
        total=total, unit="img", desc=desc, disable=not enabled, smoothing=0.05, dynamic_ncols=True
    )
