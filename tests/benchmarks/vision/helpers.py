"""Generated data for the vision tests: cue-conflict folders, meanpool-format pooled builds and
weight files (tiny, written in milliseconds)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from meanpool.imagenet import sixteen_classes

SAMPLE_CUE_CONFLICT = Path(__file__).parents[3] / "../shared/data/cue-conflict-sample"


def image(seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def make_cue_conflict(root: Path, pairs: list[tuple[str, str]]) -> Path:
    """<root>/<shape>/<shape><i>-<texture><i>.png for each (shape, texture)."""
    for i, (shape, texture) in enumerate(pairs, 1):
        p = root / shape / f"{shape}{i}-{texture}{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        image(i, 36).save(p)
    return root


def write_pooled(
    source: Path,
    subset: str,
    labels: list[int],
    shard_size: int = 3,
    sources: list[str] | None = None,
) -> Path:
    """A meanpool-format build at <source>/<subset>: shards of {jpg, cls, json} and a manifest
    listing them. Sample i has label labels[i] and source sources[i] (default
    f"val/x/{i:03d}.JPEG")."""
    sources = sources or [f"val/x/{i:03d}.JPEG" for i in range(len(labels))]
    folder = source / subset
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(0, len(labels), shard_size):
        name = f"{subset}-r000-{s // shard_size:06d}.tar"
        with tarfile.open(folder / name, "w") as tar:
            for i in range(s, min(s + shard_size, len(labels))):
                buf = io.BytesIO()
                image(1000 + i).save(buf, format="JPEG")
                meta = {"label": labels[i], "source": sources[i]}
                for ext, data in [
                    ("jpg", buf.getvalue()),
                    ("cls", str(labels[i]).encode()),
                    ("json", json.dumps(meta).encode()),
                ]:
                    key = sources[i].replace("/", "_").replace(".", "_")
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shards.append({"name": name, "num_samples": min(shard_size, len(labels) - s)})
    manifest = {"subset": subset, "shards": shards, "label_order": sixteen_classes()[0]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def write_pooled_val(tree: Path, source: Path, shard_size: int = 8) -> Path:
    """A pooled "val" build at <source>/val of the validation images the paper evaluates in the
    ImageNet tree ``tree`` (the 202 listed WNIDs'): their sources and labels, other pixels."""
    from meanpool.config import IndexConfig
    from meanpool.imagenet import select

    items = select(tree, "val", IndexConfig(selection="paper"))
    return write_pooled(source, "val", [it.label for it in items], shard_size,
                        [it.rel for it in items])  # fmt: skip
