"""WebDataset pipelines over Mean-pooled ImageNet from a local folder, a pulled Hub snapshot or
``hf://datasets/ORG/NAME`` URLs, split by node (DDP rank) and by DataLoader worker.

``hf://`` shards are fetched with ``huggingface_hub.hf_hub_download``, so they go through the
Hugging Face cache and work offline (``HF_HUB_OFFLINE=1``) once cached.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import webdataset

_HF_RE = re.compile(
    r"^hf://(?:datasets/)?(?P<repo>[^/@]+/[^/@]+)(?:@(?P<rev>[^/]+))?/?(?P<file>.*)$"
)


def _parse_hf(url: str) -> tuple[str, str | None, str]:
    m = _HF_RE.match(url)
    assert m, f"expected hf://datasets/ORG/NAME[@REVISION][/FILE], got {url!r}"
    return m["repo"], m["rev"], m["file"]


def hf_file(url: str, cache_dir: str | None = None, local_only: bool = False) -> str:
    """The local path of one file of a Hub dataset, ``hf://datasets/ORG/NAME[@REV]/FILE``,
    through the Hugging Face cache: fetched when not cached, or, with ``local_only``, never
    (FileNotFoundError in one line saying how to get it: ``meanpool pull``)."""
    from huggingface_hub import hf_hub_download

    repo, rev, name = _parse_hf(url)
    try:
        return hf_hub_download(repo, name, repo_type="dataset", revision=rev,
                               cache_dir=cache_dir, local_files_only=local_only)  # fmt: skip
    except Exception as e:
        if not local_only:
            raise
        at = f" --revision {rev}" if rev else ""
        raise FileNotFoundError(
            f"{url} is not in the local Hugging Face cache ({type(e).__name__}); nothing is "
            f"downloaded here: fetch it first with `meanpool pull {repo}{at} --out DIR` (then "
            "pass DIR) where there is internet, or check the dataset's name"
        ) from None


def _base(source: str) -> str:
    """``hf://datasets/ORG/NAME[@REV][/SUBFOLDER]`` normalised (a path after the repo names a
    subfolder holding its own build: one per subset)."""
    repo, rev, sub = _parse_hf(source)
    return (
        f"hf://datasets/{repo}"
        + (f"@{rev}" if rev else "")
        + (f"/{sub.strip('/')}" if sub.strip("/") else "")
    )


def read_manifest(
    source: str | Path, cache_dir: str | None = None, local_only: bool = False
) -> dict[str, Any]:
    """The manifest of the build at ``source``: a folder (local build or pulled snapshot) or
    ``hf://datasets/ORG/NAME[@REV][/SUBFOLDER]`` (read through the Hugging Face cache; with
    ``local_only``, from the cache alone). Raises FileNotFoundError when a folder holds no
    finished build, or a ``local_only`` file is not cached."""
    source = str(source)
    if source.startswith("hf://"):
        path = hf_file(f"{_base(source)}/manifest.json", cache_dir, local_only)
        return json.loads(Path(path).read_text())
    manifest_path = Path(source) / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{source} has no manifest.json; is it a finished meanpool build?")
    return json.loads(manifest_path.read_text())


def shard_urls(
    source: str | Path, cache_dir: str | None = None, local_only: bool = False
) -> list[str]:
    """Shard locations listed by the manifest of ``source`` (see :func:`read_manifest`): a
    folder -> file paths; ``hf://`` -> ``hf://`` URLs, one per shard."""
    manifest = read_manifest(source, cache_dir, local_only)
    source = str(source)
    base = _base(source) if source.startswith("hf://") else source
    sep = "/" if source.startswith("hf://") else None
    if sep:
        return [f"{base}/{s['name']}" for s in manifest["shards"]]
    return [str(Path(source) / s["name"]) for s in manifest["shards"]]


def open_shards(
    srcs: Iterable[dict[str, Any]], cache_dir: str | None = None, local_only: bool = False
) -> Iterator[dict[str, Any]]:
    """Stage: {"url"} -> {"url", "stream"}; ``hf://`` shards are fetched into the HF cache first
    (``local_only``: read from the cache alone)."""
    for src in srcs:
        url = src["url"]
        path = hf_file(url, cache_dir, local_only) if url.startswith("hf://") else url
        with open(path, "rb") as stream:
            yield {**src, "stream": stream}


def _samples(
    srcs: Iterable[dict[str, Any]], cache_dir: str | None = None, local_only: bool = False
) -> Iterator[dict[str, Any]]:
    from webdataset.tariterators import group_by_keys, tar_file_expander

    return group_by_keys(tar_file_expander(open_shards(srcs, cache_dir, local_only)))


def read_samples(
    source: str | Path, cache_dir: str | None = None, local_only: bool = False
) -> Iterator[dict[str, Any]]:
    """Every raw sample ({"__key__", "jpg", "cls", "json"}: bytes) of the build at ``source``
    (see :func:`shard_urls`), in the order of the manifest's shards, in this one process.
    ``local_only``: ``hf://`` files from the local cache alone (FileNotFoundError otherwise)."""
    urls = shard_urls(source, cache_dir, local_only)
    return _samples(({"url": u} for u in urls), cache_dir, local_only)


def decode(samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Stage: raw samples -> {"__key__", "image": PIL RGB, "cls": int, "json": dict}."""
    from PIL import Image

    for s in samples:
        yield {
            "__key__": s["__key__"],
            "image": Image.open(io.BytesIO(s["jpg"])).convert("RGB"),
            "cls": int(s["cls"]),
            "json": json.loads(s["json"]),
        }


def to_pair(
    samples: Iterable[dict[str, Any]], transform: Callable | None = None
) -> Iterator[tuple[Any, int]]:
    """Stage: decoded samples -> (transform(image) or image, cls)."""
    for s in samples:
        yield (transform(s["image"]) if transform else s["image"], s["cls"])


def dataset(
    source: str | Path,
    *,
    pairs: bool = False,
    transform: Callable | None = None,
    shuffle: int = 0,
    seed: int = 0,
    cache_dir: str | None = None,
) -> webdataset.DataPipeline:
    """A ``webdataset.DataPipeline`` over ``source`` (see ``shard_urls``).

    Shards are split by DDP rank then by DataLoader worker (so each sample is seen once per epoch
    across all of them when shards >= ranks x workers). ``shuffle`` > 0 shuffles shard order
    (deterministically per epoch from ``seed``) and samples within a buffer of that size.
    Yields decoded dicts, or (image, cls) pairs with ``pairs=True`` (``transform`` applied).
    For DDP with equal steps per rank, add ``.with_epoch(n)`` (webdataset) to the result.
    """
    from functools import partial

    import webdataset as wds

    stages: list[Any] = [wds.SimpleShardList(shard_urls(source, cache_dir))]
    if shuffle:
        stages.append(wds.detshuffle(bufsize=10_000, seed=seed))
    stages += [wds.split_by_node, wds.split_by_worker, partial(_samples, cache_dir=cache_dir)]
    if shuffle:
        stages.append(wds.shuffle(shuffle, seed=seed))
    stages.append(decode)
    if pairs:
        stages.append(partial(to_pair, transform=transform))
    return wds.DataPipeline(*stages)
