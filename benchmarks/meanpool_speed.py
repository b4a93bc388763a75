"""Mean-pooling speed: fast path vs SAM's reference generator, on the same images, in one run.

Reports images/s and the time split per image (image encoder, prompt encoder + mask decoder,
everything else = post-processing), measured with forward hooks on SAM's modules.

    # users, on a GPU (no checkpoint needed to time it):
    python benchmarks/meanpool_speed.py --device cuda --model-type vit_h --random-weights
    # CPU smoke run with the tiny test model:
    python benchmarks/meanpool_speed.py --device cpu --model-type tiny_test --random-weights

With random weights SAM's quality thresholds reject every mask, which would make
post-processing look free; they default to 0 then (override with --pred-iou-thresh etc.).
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from pathlib import Path

import click
import numpy as np
import torch


class _ModuleTimer:
    """Accumulates wall time spent inside the forward of chosen modules (synchronising CUDA)."""

    def __init__(self, modules: dict[str, torch.nn.Module], device: torch.device) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}
        self._cuda = device.type == "cuda"
        self._handles = []
        for name, mod in modules.items():
            self._handles.append(mod.register_forward_pre_hook(self._pre(name)))
            self._handles.append(mod.register_forward_hook(self._post(name)))

    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize()

    def _pre(self, name):
        def hook(module, args):
            self._sync()
            self._start[name] = time.perf_counter()

        return hook

    def _post(self, name):
        def hook(module, args, output):
            self._sync()
            self.totals[name] += time.perf_counter() - self._start.pop(name)

        return hook

    def reset(self) -> None:
        self.totals.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _images(folder: str | None, n: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """``n`` HWC uint8 images: from ``folder`` (sorted) or generated (gradients, discs, noise)."""
    from meanpool.images import ImageSkip, load_rgb

    if folder:
        out = []
        for p in sorted(p for p in Path(folder).iterdir() if p.is_file()):
            try:
                out.append(load_rgb(p))
            except ImageSkip:
                continue  # the benchmark times segmentation, not odd files
            if len(out) == n:
                break
        return out
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    out = []
    for _ in range(n):
        img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 100)], -1)
        for _ in range(6):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(h // 12, h // 3)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
        out.append(np.clip(img + rng.integers(-25, 26, img.shape), 0, 255).astype(np.uint8))
    return out


def _timed_modules(sam) -> dict[str, torch.nn.Module]:
    """The modules whose forward time counts as encoder or decoder. The decoder is timed through
    its parts (the fast path calls them directly to give each prompt its own crop's embedding);
    the few small ops between them count as post-processing in both paths."""
    dec = sam.mask_decoder
    parts = {"encoder": sam.image_encoder, "prompt": sam.prompt_encoder}
    parts |= {"transformer": dec.transformer, "upscaling": dec.output_upscaling}
    parts |= {"iou_head": dec.iou_prediction_head}
    parts |= {f"hyper{i}": mlp for i, mlp in enumerate(dec.output_hypernetworks_mlps)}
    return parts


def run(sam, images, cfg, device, warmup: int = 1) -> tuple[dict, list[np.ndarray]]:
    """Time ``cfg.backend`` over ``images``; returns (stats, masks per image)."""
    from meanpool.segment import generate_masks

    for image in images[:warmup]:
        generate_masks(sam, image, cfg)
    timer = _ModuleTimer(_timed_modules(sam), device)
    masks = []
    try:
        start = time.perf_counter()
        for image in images:
            masks.append(generate_masks(sam, image, cfg))
        if device.type == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - start
    finally:
        timer.remove()
    n = len(images)
    enc = timer.totals["encoder"]
    dec = sum(t for name, t in timer.totals.items() if name != "encoder")
    stats = {
        "backend": cfg.backend,
        "images": n,
        "images_per_s": n / total,
        "ms_per_image": 1000 * total / n,
        "encoder_ms": 1000 * enc / n,
        "decoder_ms": 1000 * dec / n,
        "postprocess_ms": 1000 * (total - enc - dec) / n,
        "masks_per_image": float(np.mean([len(m) for m in masks])),
    }
    return stats, masks


@click.command()
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
@click.option(
    "--model-type", default="vit_h", show_default=True, help="vit_h, vit_l, vit_b (or tiny_test)."
)
@click.option("--sam-checkpoint", default=None, help="SAM checkpoint; or --random-weights.")
@click.option("--random-weights", is_flag=True, help="Time SAM with random weights (no download).")
@click.option("--images", "folder", default=None, help="Folder of images [default: generated].")
@click.option("--n-images", default=8, show_default=True)
@click.option(
    "--size", default=None, help="HxW of generated images [375x500; 96x128 for tiny_test]."
)
@click.option(
    "--encoder-dtype", default="float32", show_default=True, help="Fast path encoder dtype."
)
@click.option("--points-per-batch", default=None, type=int, help="Prompts per decoder call [64].")
@click.option("--pred-iou-thresh", default=None, type=float)
@click.option("--stability-score-thresh", default=None, type=float)
@click.option("--threads", default=1, show_default=True, help="torch CPU threads.")
@click.option("--json-out", default=None, help="Also write the results as JSON here.")
def main(device, model_type, sam_checkpoint, random_weights, folder, n_images, size,
         encoder_dtype, points_per_batch, pred_iou_thresh, stability_score_thresh, threads,
         json_out) -> dict:  # fmt: skip
    """Images/s and time split for the fast and the reference mask generation paths."""
    from meanpool.config import SegmentConfig
    from meanpool.model import TINY_TEST, build_tiny_sam, load_sam
    from subind.provenance import provenance

    torch.set_num_threads(threads)
    if not random_weights and sam_checkpoint is None:
        raise click.UsageError("pass --sam-checkpoint PATH or --random-weights")
    dev = torch.device(device)
    if random_weights:
        sam = (
            build_tiny_sam(seed=0) if model_type == TINY_TEST else load_sam(model_type, None)
        ).to(dev)
    else:
        sam = load_sam(model_type, sam_checkpoint, dev)
    sam.eval()
    zero = 0.0 if random_weights else None
    base = SegmentConfig(
        **{
            k: v
            for k, v in dict(
                pred_iou_thresh=pred_iou_thresh if pred_iou_thresh is not None else zero,
                stability_score_thresh=stability_score_thresh
                if stability_score_thresh is not None
                else zero,
                points_per_batch=points_per_batch,
            ).items()
            if v is not None
        }
    )
    hw = size or ("96x128" if model_type == TINY_TEST else "375x500")
    images = _images(folder, n_images, tuple(int(x) for x in hw.split("x")), seed=0)
    fast, fast_masks = run(
        sam, images, dataclasses.replace(base, backend="fast", encoder_dtype=encoder_dtype), dev
    )
    ref, ref_masks = run(sam, images, dataclasses.replace(base, backend="reference"), dev)
    same = all(
        a.shape == b.shape and np.array_equal(a, b)
        for a, b in zip(fast_masks, ref_masks, strict=True)
    )
    result = {
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "model_type": model_type,
        "image_size": [int(x) for x in hw.split("x")] if not folder else "from folder",
        "settings": dataclasses.asdict(base),
        "fast": fast,
        "reference": ref,
        "speedup_fast_over_reference": ref["ms_per_image"] / fast["ms_per_image"],
        "same_masks": same,
        "provenance": provenance(),
    }
    cols = ("images_per_s", "ms_per_image", "encoder_ms", "decoder_ms", "postprocess_ms")
    click.echo("path       " + " ".join(f"{c:>14}" for c in (*cols, "masks_per_image")))
    for st in (fast, ref):
        values = [f"{st[c]:14.2f}" for c in (*cols, "masks_per_image")]
        click.echo(f"{st['backend']:<10} " + " ".join(values))
    click.echo(
        f"fast/reference speed-up: {result['speedup_fast_over_reference']:.2f}x; same masks: {same}"
    )
    if json_out:
        from subind.io import write_json_atomic

        write_json_atomic(json_out, result)
    return result


if __name__ == "__main__":
    main()
