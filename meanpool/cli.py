"""``meanpool`` command line: index, build, preview, push, pull.

Options default to None and unset ones are dropped, so defaults live only in meanpool.config.
Expected problems (bad checkpoint, wrong folder, settings mismatch) exit non-zero with one line.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click

from .config import (
    BACKENDS,
    ENCODER_DTYPES,
    MERGES,
    SELECTIONS,
    SUBSETS,
    ImageConfig,
    IndexConfig,
    PoolConfig,
    SegmentConfig,
)
from .model import MODEL_TYPES, TINY_TEST


def _given(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _make(cls: type, **kw: Any) -> Any:
    """Build a config dataclass from the options a user set; a refused value is a usage error."""
    try:
        return cls(**_given(**kw))
    except AssertionError as exn:
        raise click.UsageError(str(exn)) from None


def _one_line_errors(f: Callable) -> Callable:
    """Turn this package's expected errors into click's one-line, non-zero exit."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kw: Any) -> Any:
        from .build import BuildError
        from .hub import HubError
        from .imagenet import ImageNetError
        from .images import ImageSkip
        from .model import CheckpointError

        try:
            return f(*args, **kw)
        except (BuildError, CheckpointError, HubError, ImageNetError) as exn:
            raise click.ClickException(str(exn)) from None
        except ImageSkip as exn:
            raise click.ClickException(f"cannot use this image: {exn}") from None

    return wrapper


def _check_model_type(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # tiny_test is accepted but not advertised: it is the random 64 px SAM used by the tests.
    if value is not None and value not in (*MODEL_TYPES, TINY_TEST):
        raise click.BadParameter(f"{value!r} is not one of {', '.join(MODEL_TYPES)}")
    return value


def _model_options(f: Callable) -> Callable:
    f = click.option(
        "--device",
        default=None,
        help="torch device [default: cuda:<local rank> if available, else cpu].",
    )(f)
    f = click.option(
        "--model-type",
        required=True,
        callback=_check_model_type,
        help=f"SAM size: {', '.join(MODEL_TYPES)}.",
    )(f)
    f = click.option(
        "--sam-checkpoint",
        required=True,
        type=click.Path(dir_okay=False),
        help="SAM checkpoint (.pth) that fits --model-type.",
    )(f)
    return f


_SEGMENT_OPTIONS = [
    ("--points-per-side", int, "Point grid per side on the whole image [16]."),
    ("--crop-n-layers", int, "Crop layers (layer i has 2^i x 2^i crops) [1]."),
    ("--crop-n-points-downscale-factor", int, "Points per side shrink by this per crop layer [2]."),
    ("--crop-overlap-ratio", float, "Crop overlap as a fraction of the image side [512/1500]."),
    ("--pred-iou-thresh", float, "Keep masks with predicted IoU above this [0.88]."),
    ("--stability-score-thresh", float, "Keep masks with stability score at least this [0.95]."),
    ("--stability-score-offset", float, "Logit offset for the stability score [1.0]."),
    ("--box-nms-thresh", float, "Box IoU for NMS within a crop [0.7]."),
    ("--crop-nms-thresh", float, "Box IoU for NMS across crops [0.7]."),
    ("--min-mask-region-area", int, "Remove mask islands and holes under this many px [100]."),
    ("--points-per-batch", int, "Prompts per decoder call, speed only [64; fast on GPU 256]."),
    ("--encoder-batch", int, "Crops per encoder call (fast), speed only [CPU 1; GPU all]."),
]


def _segment_options(f: Callable) -> Callable:
    for name, typ, text in reversed(_SEGMENT_OPTIONS):
        f = click.option(name, type=typ, default=None, help=text)(f)
    f = click.option(
        "--backend", type=click.Choice(BACKENDS), default=None, help="Mask generation path [fast]."
    )(f)
    f = click.option(
        "--encoder-dtype",
        type=click.Choice(ENCODER_DTYPES),
        default=None,
        help="Fast path encoder precision [float32].",
    )(f)
    f = click.option(
        "--merge",
        type=click.Choice(MERGES),
        default=None,
        help="partition: mean over final segments (paper) [default]; "
        "whole_mask: mean over each whole mask (released code).",
    )(f)
    return f


def _pop_segment(kw: dict[str, Any]) -> tuple[SegmentConfig, PoolConfig]:
    names = [n.lstrip("-").replace("-", "_") for n, _, _ in _SEGMENT_OPTIONS] + [
        "backend",
        "encoder_dtype",
    ]
    seg = _make(SegmentConfig, **{n: kw.pop(n) for n in names})
    return seg, _make(PoolConfig, merge=kw.pop("merge"))


@click.group()
def main() -> None:
    """Mean-pooled ImageNet with Segment Anything (Subtask Induction, Section 5.1)."""


def _index_options(f: Callable) -> Callable:
    f = click.option(
        "--allow-missing",
        is_flag=True,
        default=None,
        help="With --selection paper: go on without listed images the tree lacks (recorded).",
    )(f)
    f = click.option(
        "--selection",
        type=click.Choice(SELECTIONS),
        default=None,
        help="random: a seeded class-balanced draw from every 16-class image [default]; "
        "paper: the paper's exact image lists (train 213,555, discovery 13,929, evaluation 1,549).",
    )(f)
    f = click.option(
        "--val-labels",
        type=click.Path(dir_okay=False),
        default=None,
        help="Labels for a flat val/ (LOC_val_solution.csv or '<file> <wnid>' lines).",
    )(f)
    f = click.option("--seed", type=int, default=None, help="Seed of the subset draw [0].")(f)
    f = click.option(
        "--evaluation-per-class",
        type=int,
        default=None,
        help="Evaluation images per class [96: 1,536 in all].",
    )(f)
    f = click.option(
        "--discovery-per-class",
        type=int,
        default=None,
        help="Discovery images per class [869: 13,904 in all].",
    )(f)
    f = click.option(
        "--imagenet-dir",
        required=True,
        type=click.Path(file_okay=False),
        help="ImageNet root with train/ (and val/).",
    )(f)
    return f


_DRAW_OPTIONS = ("discovery_per_class", "evaluation_per_class", "seed")


def _index_config(kw: dict[str, Any]) -> IndexConfig:
    """Pop the index options from ``kw``; the draw's options with the lists are a usage error."""
    given = {k: kw.pop(k) for k in (*_DRAW_OPTIONS, "selection", "allow_missing")}
    given["allow_missing"] = given["allow_missing"] or None  # unset flag: the config's default
    if given["selection"] == "paper":
        clash = [f"--{k.replace('_', '-')}" for k in _DRAW_OPTIONS if given[k] is not None]
        if clash:
            raise click.UsageError(
                f"{', '.join(clash)} set the random draw; --selection paper uses the paper's "
                f"fixed lists, so drop {'them' if len(clash) > 1 else 'it'}"
            )
    elif given["allow_missing"]:
        raise click.UsageError(
            "--allow-missing applies to --selection paper only (a random draw takes what the "
            "tree holds)"
        )
    return _make(IndexConfig, **given)


@main.command()
@_index_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="index.json",
    show_default=True,
    help="Index JSON to write.",
)
@_one_line_errors
def index(imagenet_dir: str, out: str, val_labels: str | None, **kw: Any) -> None:
    """Select 16-class ImageNet and its discovery/evaluation subsets (the paper's lists or a
    class-balanced draw); write them with counts, settings and provenance."""
    from subind.io import write_json_atomic
    from subind.provenance import provenance

    from .imagenet import build_index, index_record

    cfg = _index_config(kw)
    idx = build_index(imagenet_dir, cfg, val_labels)
    record = index_record(idx, cfg, imagenet_dir)
    write_json_atomic(out, {**record, "provenance": provenance()})
    click.echo(f"wrote {out} ({cfg.selection}): " + _counts_line(record))


def _counts_line(record: dict[str, Any]) -> str:
    """The printed counts ("discovery 13,929, ...") and how many listed images were missing."""
    line = ", ".join(f"{k} {n:,}" for k, n in record["counts"].items())
    missing = {k: m["count"] for k, m in record["missing"].items() if m["count"]}
    if missing:
        line += "; missing from the lists: " + ", ".join(f"{k} {n:,}" for k, n in missing.items())
    return line


@main.command()
@_index_options
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder for shards and manifest.",
)
@_model_options
@click.option(
    "--subset", type=click.Choice(SUBSETS), default=None, help="Which images [discovery]."
)
@click.option(
    "--limit",
    type=int,
    default=None,
    help="Only the first N images of the subset (class-mixed order).",
)
@click.option(
    "--shard-size",
    type=int,
    default=None,
    help="Samples per shard [1000]; a kill loses at most one shard per rank.",
)
@click.option("--jpeg-quality", type=int, default=None, help="JPEG quality of pooled images [95].")
@click.option(
    "--min-side", type=int, default=None, help="Skip images whose shorter side is under this [32]."
)
@click.option(
    "--max-side",
    type=int,
    default=None,
    help="Downscale images whose longer side exceeds this [1024].",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_segment_options
@_one_line_errors
def build(
    imagenet_dir: str,
    out: str,
    sam_checkpoint: str,
    model_type: str,
    no_progress: bool,
    **kw: Any,
) -> None:
    """Build Mean-pooled ImageNet shards (resumable; run under torchrun for several GPUs)."""
    from .build import build as run_build
    from .config import BuildConfig

    seg, pool_cfg = _pop_segment(kw)
    index_cfg = _index_config(kw)
    image_cfg = _make(ImageConfig, min_side=kw.pop("min_side"), max_side=kw.pop("max_side"))
    cfg = _make(
        BuildConfig,
        imagenet_dir=imagenet_dir,
        out=out,
        model_type=model_type,
        checkpoint=sam_checkpoint,
        segment=seg,
        pool=pool_cfg,
        index=index_cfg,
        image=image_cfg,
        **kw,
    )
    result = run_build(cfg, progress=not no_progress)
    if "shards" in result:
        missing = result["inputs"].get("missing")
        gone = f", {missing['count']:,} listed images missing" if missing else ""
        click.echo(
            f"{out}: {result['num_samples']} samples in {len(result['shards'])} shards, "
            f"{result['num_failures']} skipped (see failures.jsonl){gone}"
        )


@main.command()
@click.argument("image", type=click.Path(dir_okay=False, exists=True))
@_model_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="preview.png",
    show_default=True,
    help="PNG to write.",
)
@click.option(
    "--max-side",
    type=int,
    default=None,
    help="Downscale images whose longer side exceeds this [1024].",
)
@_segment_options
@_one_line_errors
def preview(
    image: str,
    sam_checkpoint: str,
    model_type: str,
    device: str | None,
    out: str,
    max_side: int | None,
    **kw: Any,
) -> None:
    """Write original | segment boundaries | pooled side by side."""
    import numpy as np
    import torch
    from PIL import Image

    from subind.io import write_with_atomic

    from .images import load_rgb
    from .model import load_sam
    from .pool import pool
    from .preview import preview_panel
    from .segment import generate_masks

    seg, pool_cfg = _pop_segment(kw)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    sam = load_sam(model_type, sam_checkpoint, device)
    rgb = load_rgb(image, _make(ImageConfig, max_side=max_side))
    masks = generate_masks(sam, rgb, seg)
    pooled, labels = pool(rgb, masks, pool_cfg)
    panel = preview_panel(rgb, pooled, labels)
    from PIL.PngImagePlugin import PngInfo

    from subind.provenance import provenance

    from .config import to_dict

    record = {"image": image, "model_type": model_type, "checkpoint": sam_checkpoint}
    record |= {"segment": to_dict(seg), "pool": to_dict(pool_cfg), "provenance": provenance()}
    info = PngInfo()
    info.add_text("meanpool", json.dumps(record, sort_keys=True))  # settings travel with the PNG
    png = Image.fromarray(np.asarray(panel))
    write_with_atomic(out, lambda tmp: png.save(tmp, format="PNG", pnginfo=info))
    click.echo(f"wrote {out}: {int(labels.max()) + 1} segments from {len(masks)} masks")


@main.command()
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.option("--repo-id", required=True, help="Dataset repo ORG/NAME on the Hugging Face Hub.")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@_one_line_errors
def push(folder: str, repo_id: str, private: bool) -> None:
    """Verify a finished build, or a folder of subset builds (FOLDER/discovery, FOLDER/evaluation,
    FOLDER/val), and upload it with a dataset card to a Hub dataset repo."""
    from .hub import push as run_push

    click.echo(run_push(folder, repo_id, private=private))


@main.command()
@click.argument("repo_id")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to copy the dataset into.",
)
@click.option("--revision", default=None, help="Branch, tag or commit [main].")
@click.option("--cache-dir", default=None, help="Hugging Face cache folder [HF_HUB_CACHE].")
@_one_line_errors
def pull(repo_id: str, out: str, revision: str | None, cache_dir: str | None) -> None:
    """Download a dataset repo (one build, or a folder of subset builds; from the cache when
    offline) and verify every shard."""
    from .hub import find_builds
    from .hub import pull as run_pull

    path = run_pull(repo_id, out, revision=revision, cache_dir=cache_dir)
    for folder in find_builds(path).values():  # verified by pull; the counts only
        manifest = json.loads((folder / "manifest.json").read_text())
        click.echo(
            f"{folder}: {manifest['subset']}, {manifest['num_samples']} samples in "
            f"{len(manifest['shards'])} shards, verified"
        )
