"""Pushing a built dataset to the Hugging Face Hub and pulling it back, with integrity checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .shards import sha256_file

MANIFEST = "manifest.json"
_UPLOAD_PATTERNS = ["*.tar", "manifest.json", "build.json", "failures.jsonl", "README.md"]


class HubError(ValueError):
    """A dataset folder or snapshot that is incomplete or corrupt."""


def verify(folder: str | Path) -> dict[str, Any]:
    """Check that every shard the manifest lists exists with its sha256; return the manifest."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise HubError(f"{folder} has no {MANIFEST}; run `meanpool build` to completion first")
    manifest = json.loads(path.read_text())
    for shard in manifest["shards"]:
        p = folder / shard["name"]
        if not p.is_file():
            raise HubError(f"shard {shard['name']} listed in {path} is missing")
        if sha256_file(p) != shard["sha256"]:
            raise HubError(
                f"shard {p} does not match its sha256 in {MANIFEST}; rebuild or re-pull it"
            )
    return manifest


def dataset_card(manifest: dict[str, Any], repo_id: str) -> str:
    """README.md for the dataset repo: what it is, how it was made, and how to load it."""
    settings = json.dumps(manifest["settings"], indent=2, sort_keys=True)
    prov = json.dumps(manifest["provenance"], indent=2, sort_keys=True)
    return f"""---
pretty_name: Mean-pooled ImageNet ({manifest["subset"]})
tags:
- webdataset
- image-classification
- shape-bias
task_categories:
- image-classification
---
# Mean-pooled ImageNet: `{manifest["subset"]}`

16-class ImageNet images in which every pixel is replaced by the mean colour of its Segment
Anything segment, erasing local texture while keeping global shape (Zhang, Lepori & Pavlick,
"Subtask Induction", arXiv 2310.10899, Section 5.1). Built with the `meanpool` package.

- samples: {manifest["num_samples"]} in {len(manifest["shards"])} WebDataset shards
  (`jpg`: pooled image, `cls`: 16-class index, `json`: wnid, category, source path, size,
  number of segments, settings digest); skipped inputs: {manifest["num_failures"]}
- classes (cls order): {", ".join(manifest["label_order"])}
- settings digest: `{manifest["settings_digest"]}`

The images derive from ImageNet (ILSVRC-2012); use is subject to the ImageNet terms of access.

## Loading

```python
from meanpool import loader
ds = loader.dataset("hf://datasets/{repo_id}")  # or a local folder from `meanpool pull`
```

## Settings

```json
{settings}
```

## Provenance

```json
{prov}
```
"""


def push(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    api: Any = None,
    revision: str | None = None,
) -> str:
    """Verify ``folder``, write its dataset card, and upload it to the dataset repo ``repo_id``.

    ``api`` is an ``HfApi`` (default: a new one using the saved token). Returns the commit URL.
    """
    folder = Path(folder)
    manifest = verify(folder)
    from subind.io import write_text_atomic

    write_text_atomic(folder / "README.md", dataset_card(manifest, repo_id))
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        allow_patterns=_UPLOAD_PATTERNS,
        revision=revision,
        commit_message=f"meanpool: {manifest['subset']}, {manifest['num_samples']} samples",
    )
    return str(getattr(info, "commit_url", info))


def pull(
    repo_id: str,
    out: str | Path | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> Path:
    """Download (or find in the cache, offline too) the dataset repo ``repo_id`` and verify it.

    With ``out``, the files are copied there; returns the verified folder.
    """
    from huggingface_hub import snapshot_download

    snapshot = Path(
        snapshot_download(repo_id, repo_type="dataset", revision=revision, cache_dir=cache_dir)
    )
    verify(snapshot)
    if out is None:
        return snapshot
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for src in sorted(snapshot.iterdir()):
        if src.is_file():
            shutil.copyfile(src, out / (src.name + ".tmp"))
            (out / (src.name + ".tmp")).replace(out / src.name)
    verify(out)
    return out
