"""Mean-pooling speed: fast path vs SAM's reference generator, on the same images, in one run.

Reports images/s (from the median time per image, with its min and max), the time split per
image (image encoder, prompt encoder + mask decoder, everything else = post-processing, measured
with forward hooks on SAM's modules), the fast path's encoder time for the image and its crops
(the floor any path has to pay), and how many masks there are per image before and after each
filter. Fairness: ``--warmup`` extra images run through both paths untimed first, and the paths
alternate on every image (fast first on one, reference first on the next), ``--repeats`` times.

Two loads (``--load``):

* ``random``: SAM as loaded. With ``--random-weights`` no mask passes SAM's quality thresholds, so
  they default to 0 then; even so about one mask per image survives NMS.
* ``realistic``: ``benchmarks.speed.standin.realistic_sam`` around the same SAM: all of SAM's computation
  runs, but the decoder's outputs are masks of a known segmentation of generated images, so that
  at the paper's thresholds a few dozen masks per image survive, as with real weights.

    # on a GPU (no checkpoint needed to time it):
    python -m benchmarks.speed.pooling --device cuda --model-type vit_h --random-weights \\
        --load realistic --dtype bfloat16 --n-images 4 --warmup 1 --json speed.json
    # CPU smoke run with the tiny test model:
    python -m benchmarks.speed.pooling --device cpu --model-type tiny_test --random-weights
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import defaultdict
from pathlib import Path

import click
import numpy as np
import torch

from benchmarks.speed.result import Field, Row, write_result

PATHS = ("fast", "reference")
LOADS = ("random", "realistic")


class _ModuleTimer:
    """Accumulates wall time spent inside the forward of chosen modules (synchronising CUDA).
    Modules may nest: the time counts once, for the outermost chosen module that is running."""

    def __init__(self, modules: dict[str, torch.nn.Module], device: torch.device) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._outer: tuple[str, float] | None = None  # (name, start) of the outermost running
        self._depth = 0
        self._cuda = device.type == "cuda"
        self._handles = []
        for name, mod in modules.items():
            self._handles.append(mod.register_forward_pre_hook(self._pre(name)))
            self._handles.append(mod.register_forward_hook(self._post()))

    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize()

    def _pre(self, name):
        def hook(module, args):
            if self._depth == 0:
                self._sync()
                self._outer = (name, time.perf_counter())
            self._depth += 1

        return hook

    def _post(self):
        def hook(module, args, output):
            self._depth -= 1
            if self._depth == 0:
                self._sync()
                name, start = self._outer
                self.totals[name] += time.perf_counter() - start

        return hook

    def reset(self) -> None:
        self.totals.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _images(
    folder: str | None, n: int, size: tuple[int, int], seed: int, load: str = "random"
) -> list[np.ndarray]:
    """``n`` HWC uint8 images: from ``folder`` (sorted) or generated: gradients, discs and noise
    for the random load, ``benchmarks.speed.standin.realistic_image`` for the realistic load."""
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
    h, w = size
    if load == "realistic":
        from benchmarks.speed.standin import realistic_image

        return [realistic_image(h, w, seed=seed + i) for i in range(n)]
    rng = np.random.default_rng(seed)
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
    """The modules whose forward time counts as encoder or decoder. The reference calls the
    decoder's transformer as one module; the fast path calls its parts (each prompt gets its own
    crop's embedding, and the first layer's image-side projections are shared by the prompts of
    a crop), so the parts are timed too, down to the first layer's projections (nested modules
    count once). In the fast path the attention products and elementwise ops of the first layer,
    between those modules, count as post-processing."""
    dec = sam.mask_decoder
    parts = {"encoder": sam.image_encoder, "prompt": sam.prompt_encoder}
    tr = getattr(dec.transformer, "inner", dec.transformer)  # the stand-in wraps the real one
    parts["transformer"] = dec.transformer
    for i, layer in enumerate(tr.layers):
        parts[f"layer{i}"] = layer
        for name, m in layer.named_children():
            parts[f"layer{i}.{name}"] = m
            for sub in ("q_proj", "k_proj", "v_proj", "out_proj"):
                if hasattr(m, sub):
                    parts[f"layer{i}.{name}.{sub}"] = getattr(m, sub)
    parts |= {"final_attn": tr.final_attn_token_to_image, "final_norm": tr.norm_final_attn}
    parts |= {"upscaling": dec.output_upscaling, "iou_head": dec.iou_prediction_head}
    parts |= {f"hyper{i}": mlp for i, mlp in enumerate(dec.output_hypernetworks_mlps)}
    return parts


def _time_one(sam, image, cfg, device, counts: dict | None) -> tuple[dict, np.ndarray]:
    """Masks of one image with ``cfg.backend`` and its times in ms: total and split."""
    from meanpool.fast import generate_fast
    from meanpool.segment import generate_masks

    timer = _ModuleTimer(_timed_modules(sam), device)
    try:
        start = time.perf_counter()
        if cfg.backend == "fast" and counts is not None:
            masks = generate_fast(sam, image, cfg, counts=counts)
        else:
            masks = generate_masks(sam, image, cfg)
        if device.type == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - start
    finally:
        timer.remove()
    enc = timer.totals["encoder"]
    dec = sum(t for name, t in timer.totals.items() if name != "encoder")
    times = {"total_ms": 1000 * total, "encoder_ms": 1000 * enc, "decoder_ms": 1000 * dec}
    times["postprocess_ms"] = times["total_ms"] - times["encoder_ms"] - times["decoder_ms"]
    return times, masks


def compare(
    sam, images, configs: dict[str, object], device, warmup: list[np.ndarray], repeats: int = 1
) -> tuple[dict, dict]:
    """Time every config of ``configs`` (path -> SegmentConfig) on every image, alternating which
    path goes first from image to image, after running ``warmup`` images untimed.

    Returns (per path: per-image time records, per path: masks of each image from the first
    repeat) and fills the fast path's stage counts per image into the records.
    """
    for image in warmup:
        for cfg in configs.values():
            _time_one(sam, image, cfg, device, None)
    records: dict[str, list[dict]] = {p: [] for p in configs}
    masks: dict[str, list[np.ndarray]] = {p: [] for p in configs}
    order = list(configs)
    turn = 0
    for r in range(repeats):
        for i, image in enumerate(images):
            for path in order[turn % 2 :] + order[: turn % 2]:
                counts = {} if path == "fast" else None
                times, m = _time_one(sam, image, configs[path], device, counts)
                records[path].append({"image": i, "repeat": r, **times, "masks": len(m)})
                if counts is not None:
                    records[path][-1]["stages"] = counts
                if r == 0:
                    masks[path].append(m)
            turn += 1
    return records, masks


def summarize(path: str, records: list[dict]) -> dict:
    """Median (and min/max) time per image and the median of each part of the split."""
    total = [r["total_ms"] for r in records]
    med = statistics.median(total)
    out = {
        "backend": path,
        "images": len({r["image"] for r in records}),
        "timed_runs": len(records),
        "images_per_s": 1000 / med,
        "ms_per_image": med,
        "min_ms": min(total),
        "max_ms": max(total),
    }
    for part in ("encoder_ms", "decoder_ms", "postprocess_ms"):
        out[part] = statistics.median(r[part] for r in records)
    out["masks_per_image"] = float(np.mean([r["masks"] for r in records]))
    return out


def _stage_table(records: list[dict]) -> dict[str, dict[str, float]]:
    from meanpool.fast import STAGES

    per = [r["stages"] for r in records if "stages" in r]
    return {
        s: {
            "mean": float(np.mean([c.get(s, 0) for c in per])),
            "min": min(c.get(s, 0) for c in per),
            "max": max(c.get(s, 0) for c in per),
        }
        for s in STAGES
    }


@click.command()
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cuda" if torch.cuda.is_available() else "cpu",
    show_default=True,
)
@click.option(
    "--model-type", default="vit_h", show_default=True, help="vit_h, vit_l, vit_b (or tiny_test)."
)
@click.option("--sam-checkpoint", default=None, help="SAM checkpoint; or --random-weights.")
@click.option("--random-weights", is_flag=True, help="Time SAM with random weights (no download).")
@click.option(
    "--load",
    type=click.Choice(LOADS),
    default="random",
    show_default=True,
    help="realistic: masks of a known segmentation, a few dozen per image (benchmarks.speed.standin).",
)
@click.option("--images", "folder", default=None, help="Folder of images [default: generated].")
@click.option("--n-images", default=8, show_default=True, help="Timed images.")
@click.option("--warmup", default=1, show_default=True, help="Untimed images run first.")
@click.option("--repeats", default=1, show_default=True, help="Timed passes over the images.")
@click.option(
    "--size", default=None, help="HxW of generated images [375x500; 96x128 for tiny_test]."
)
@click.option(
    "--dtype",
    "--encoder-dtype",
    "dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
    help="Fast path's encoder dtype (the reference is SAM's generator: float32).",
)
@click.option(
    "--backend",
    "backends",
    type=click.Choice(PATHS),
    multiple=True,
    help="Paths to time (repeatable) [both].",
)
@click.option("--points-per-batch", default=None, type=int, help="Prompts per decoder call.")
@click.option("--encoder-batch", default=None, type=int, help="Crops per fast encoder call.")
@click.option("--pred-iou-thresh", default=None, type=float)
@click.option("--stability-score-thresh", default=None, type=float)
@click.option("--threads", default=1, show_default=True, help="torch CPU threads.")
@click.option("--json", "--json-out", "json_out", default=None, help="Write results as JSON here.")
def main(device, model_type, sam_checkpoint, random_weights, load, folder, n_images, warmup,
         repeats, size, dtype, backends, points_per_batch, encoder_batch, pred_iou_thresh,
         stability_score_thresh, threads, json_out) -> list[Row]:  # fmt: skip
    """Images/s and time split for the fast and the reference mask generation paths."""
    from meanpool.model import TINY_TEST

    torch.set_num_threads(threads)
    if not random_weights and sam_checkpoint is None:
        raise click.UsageError("pass --sam-checkpoint PATH or --random-weights")
    if device == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda but no CUDA device is visible; use --device cpu")
    if n_images < 1 or warmup < 0 or repeats < 1:
        raise click.UsageError("need --n-images >= 1, --warmup >= 0 and --repeats >= 1")
    dev = torch.device(device)
    sam = _sam(model_type, sam_checkpoint, random_weights, load, dev)
    # Random weights pass no quality threshold; the realistic load is made for the paper's.
    zero = 0.0 if random_weights and load == "random" else None
    given = dict(
        pred_iou_thresh=pred_iou_thresh if pred_iou_thresh is not None else zero,
        stability_score_thresh=stability_score_thresh
        if stability_score_thresh is not None
        else zero,
        points_per_batch=points_per_batch,
        encoder_batch=encoder_batch,
    )
    configs = _configs(given, dtype, backends)
    paths = list(configs)
    hw = size or ("96x128" if model_type == TINY_TEST else "375x500")
    shape = tuple(int(x) for x in hw.split("x"))
    all_images = _images(folder, warmup + n_images, shape, seed=0, load=load)
    if len(all_images) <= warmup:
        raise click.UsageError(f"need more than --warmup {warmup} images in {folder}")
    records, masks = compare(
        sam, all_images[warmup:], configs, dev, all_images[:warmup], repeats=repeats
    )
    stats = {p: summarize(p, records[p]) for p in paths}
    config = {
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "threads": threads,
        "model_type": model_type,
        "weights": "random" if random_weights else str(sam_checkpoint),
        "load": load,
        "dtype": dtype,
        "image_size": list(shape) if not folder else "from folder",
        "n_images": len(all_images) - warmup,
        "warmup": warmup,
        "repeats": repeats,
        "settings": {p: dataclasses.asdict(c) for p, c in configs.items()},
        "batches": {
            p: {
                "encoder": c.encoder_batch_for(dev.type) if p == "fast" else 1,
                "decoder": c.decoder_batch_for(dev.type),
            }
            for p, c in configs.items()
        },
    }
    head = (
        f"{model_type} on {dev}, {threads} threads, load {load}, fast encoder {dtype}; "
        f"medians over {len(records[paths[0]])} timed runs after {warmup} warm-up image(s)"
    )
    click.echo(head)
    rows, summary = _report(stats, records, masks)
    if json_out:
        write_result(json_out, "pooling", config, rows, [head, *summary])
    return rows


def _sam(model_type: str, checkpoint: str | None, random_weights: bool, load: str, dev):
    """SAM on ``dev`` in eval mode (random weights or the checkpoint's), wrapped by the
    realistic-load stand-in when ``load`` is "realistic"."""
    from benchmarks.speed.standin import realistic_sam
    from meanpool.model import TINY_TEST, build_tiny_sam, load_sam

    if random_weights:
        sam = (
            build_tiny_sam(seed=0) if model_type == TINY_TEST else load_sam(model_type, None)
        ).to(dev)
    else:
        sam = load_sam(model_type, checkpoint, dev)
    sam.eval()
    return realistic_sam(sam) if load == "realistic" else sam


def _configs(given: dict, dtype: str, backends: tuple[str, ...]) -> dict:
    """{path: SegmentConfig} of the paths to time (the given settings, None: default)."""
    from meanpool.config import SegmentConfig

    base = SegmentConfig(**{k: v for k, v in given.items() if v is not None})
    configs = {
        "fast": dataclasses.replace(base, backend="fast", encoder_dtype=dtype),
        "reference": dataclasses.replace(base, backend="reference"),
    }
    return {p: configs[p] for p in PATHS if not backends or p in backends}


def _report(stats: dict, records: dict, masks: dict) -> tuple[list[Row], list[str]]:
    """Print the table, the mask counts, the encoder floor and the speed-up; return the rows of
    the result (each path, each filter stage, the comparison, each timed image) and the
    one-line summary of the encoder floor and the speed-up."""
    cols = ("images_per_s", "ms_per_image", "min_ms", "max_ms")
    cols += ("encoder_ms", "decoder_ms", "postprocess_ms", "masks_per_image")
    click.echo("path       " + " ".join(f"{c:>14}" for c in cols))
    for st in stats.values():
        click.echo(f"{st['backend']:<10} " + " ".join(f"{st[c]:14.2f}" for c in cols))
    extra: dict[str, dict[str, Field]] = {p: {} for p in stats}  # per path, beyond summarize()
    stage_rows, summary = [], []
    if "fast" in stats:
        fast = stats["fast"]
        stages = _stage_table(records["fast"])
        stage_rows = [
            Row(f"stage {s}", "stage", {k: Field(v, "masks/image") for k, v in counts.items()})
            for s, counts in stages.items()
        ]
        floor = fast["ms_per_image"] / fast["encoder_ms"]
        extra["fast"]["encoder_floor_ratio"] = Field(floor, "x")
        click.echo(
            "masks per image (fast path, mean): "
            + ", ".join(f"{s} {v['mean']:.1f}" for s, v in stages.items())
        )
        summary.append(
            f"fast path: image + crops through the encoder {fast['encoder_ms']:.2f} ms; whole "
            f"fast path {floor:.2f}x that"
        )
        click.echo(summary[-1])
    comparison = []
    if len(stats) == 2:
        speedup = stats["reference"]["ms_per_image"] / stats["fast"]["ms_per_image"]
        same = all(
            a.shape == b.shape and np.array_equal(a, b)
            for a, b in zip(masks["fast"], masks["reference"], strict=True)
        )
        fields = {"speedup": Field(speedup, "x"), "same_masks": Field(same)}
        comparison = [Row("fast vs reference", "comparison", fields)]
        summary.append(f"fast/reference speed-up: {speedup:.2f}x; same masks: {same}")
        click.echo(summary[-1])
    paths = [_path_row(st, extra[p]) for p, st in stats.items()]
    images = [_image_row(p, r) for p, recs in records.items() for r in recs]
    return [*paths, *stage_rows, *comparison, *images], summary


# The unit of each number of summarize() and of a per-image record.
_PATH_UNITS = {"images": "images", "timed_runs": "runs", "images_per_s": "images/s"}
_PATH_UNITS |= {"masks_per_image": "masks/image"}
_IMAGE_UNITS = {"image": "index", "repeat": "index", "masks": "masks"}


def _path_row(stats: dict, extra: dict[str, Field]) -> Row:
    """A path's row: its summarize() figures (times in ms/image, medians unless min/max)."""
    fields = {"backend": Field(stats["backend"])}
    fields |= {
        k: Field(v, _PATH_UNITS.get(k, "ms/image")) for k, v in stats.items() if k != "backend"
    }
    return Row(stats["backend"], "path", fields | extra)


def _image_row(path: str, record: dict) -> Row:
    """One timed image of one path: its times (ms), masks and (fast path) masks per stage."""
    fields = {"path": Field(path)}
    fields |= {k: Field(v, _IMAGE_UNITS.get(k, "ms")) for k, v in record.items() if k != "stages"}
    fields |= {f"after_{s}": Field(n, "masks") for s, n in record.get("stages", {}).items()}
    name = f"{path} image {record['image']} repeat {record['repeat']}"
    return Row(name, "image", fields)


if __name__ == "__main__":
    main()
