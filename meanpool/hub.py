"""Pushing built datasets to the Hugging Face Hub and pulling them back, with integrity checks.

A pushed folder is either ONE build (``manifest.json`` at its root) or a folder of subsets, one
build per subfolder named after its subset (``discovery/``, ``evaluation/``, ``val/``), which
is what the vision experiment reads as ``--pooled hf://datasets/ORG/NAME``
(``<repo>/<subset>/manifest.json``). The repository keeps the folder's layout.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .shards import sha256_file

MANIFEST = "manifest.json"
CARD = "README.md"
_BUILD_FILES = ["*.tar", "manifest.json", "build.json", "failures.jsonl"]
_UPLOAD_PATTERNS = [*_BUILD_FILES, CARD]  # one build at the repository's root


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


def _looks_like_build(folder: Path) -> bool:
    return (folder / MANIFEST).is_file() or (folder / "build.json").is_file()


def find_builds(folder: str | Path) -> dict[str, Path]:
    """The builds in ``folder``: {"": folder} for one build at its root, or {subset: folder /
    subset} for a folder of subsets (subfolders holding a build; others are ignored).

    Raises HubError for a folder with neither, with both, or with an unfinished subset build.
    """
    folder = Path(folder)
    subs = {
        p.name: p
        for p in sorted(folder.iterdir())
        if p.is_dir() and not p.name.startswith(".") and _looks_like_build(p)
    }
    if (folder / MANIFEST).is_file():
        if subs:
            raise HubError(
                f"{folder} holds a build at its root and in {', '.join(subs)}/; push one layout: "
                f"a single build, or a folder of subset builds"
            )
        return {"": folder}
    if not subs:
        raise HubError(
            f"{folder} has no {MANIFEST} and no subset builds (<folder>/<subset>/{MANIFEST}); "
            f"run `meanpool build` to completion first"
        )
    unfinished = [name for name, p in subs.items() if not (p / MANIFEST).is_file()]
    if unfinished:
        raise HubError(
            f"{folder / unfinished[0]} has no {MANIFEST}; run `meanpool build` to completion "
            f"first (or move it out of {folder})"
        )
    return subs


def verify_all(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``verify`` every build of ``folder`` (see ``find_builds``); {subset or "": manifest}.

    A subset build must sit in the folder named after its subset, since readers find a subset
    by that name (``<pooled>/<subset>/manifest.json``)."""
    manifests = {}
    for name, path in find_builds(folder).items():
        manifest = verify(path)
        if name and manifest["subset"] != name:
            raise HubError(
                f"{path} holds the {manifest['subset']!r} subset; rename the folder to "
                f"{manifest['subset']}/ (readers find a subset by its folder name)"
            )
        manifests[name] = manifest
    return manifests


# ---------------------------------------------------------------- the dataset card
def _selection(manifest: dict[str, Any]) -> str:
    """Which images a build holds, in words (from its settings and recorded inputs)."""
    index, subset = manifest["settings"].get("index", {}), manifest["subset"]
    missing = manifest.get("inputs", {}).get("missing")
    if index.get("selection") == "paper":
        if subset == "val":
            return "ImageNet validation images of the paper's 202 WNIDs"
        text = f"the paper's {subset} list ({missing['listed']:,} images)" if missing else "paper"
        if missing and missing["count"]:
            text += f", {missing['count']:,} absent from the ImageNet tree"
        return text
    if subset in ("discovery", "evaluation") and f"{subset}_per_class" in index:
        n = index[f"{subset}_per_class"]
        return f"random class-balanced draw, {n} per class, seed {index.get('seed')}"
    return f"every 16-class ImageNet {subset} image"


def _front_matter(manifests: Mapping[str, dict[str, Any]]) -> str:
    """YAML header: tags, and one viewer configuration per build (its shards)."""
    lines = ["---", "pretty_name: Mean-pooled ImageNet"]
    lines += ["tags:", "- webdataset", "- image-classification", "- shape-bias"]
    lines += ["task_categories:", "- image-classification", "configs:"]
    for name, m in manifests.items():
        lines += [f"- config_name: {name or m['subset']}", "  data_files:"]
        lines += ["  - split: train", f'    path: "{name + "/" if name else ""}*.tar"']
    return "\n".join([*lines, "---"])


def _subset_table(manifests: Mapping[str, dict[str, Any]]) -> str:
    rows = [
        "| folder | subset | samples | shards | skipped | images | SAM | settings digest |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in manifests.items():
        rows.append(
            f"| `{name or '.'}/` | {m['subset']} | {m['num_samples']:,} | {len(m['shards'])} | "
            f"{m['num_failures']} | {_selection(m)} | {m['settings'].get('model_type')} | "
            f"`{m['settings_digest'][:16]}` |"
        )
    return "\n".join(rows)


def _loading(manifests: Mapping[str, dict[str, Any]], repo_id: str) -> str:
    url = f"hf://datasets/{repo_id}"
    if "" in manifests:
        return f"""```python
from meanpool import loader
ds = loader.dataset("{url}")  # or a local folder from `meanpool pull`
```"""
    first = next(iter(manifests))
    return f"""```python
from meanpool import loader
ds = loader.dataset("{url}/{first}")  # one subset; or a folder from `meanpool pull`
```

The vision experiment reads every subset from here:
`subind-bench run table1 --pooled {url} ...` (or `--pooled` a folder from
`meanpool pull {repo_id} --out DIR`)."""


def _details(manifests: Mapping[str, dict[str, Any]]) -> str:
    parts = []
    for name, m in manifests.items():
        settings = json.dumps(m["settings"], indent=2, sort_keys=True)
        prov = json.dumps(m["provenance"], indent=2, sort_keys=True)
        title = f"`{name}/`" if name else f"`{m['subset']}`"
        parts.append(
            f"### {title}\n\nSettings (digest `{m['settings_digest']}`):\n\n```json\n"
            f"{settings}\n```\n\nProvenance:\n\n```json\n{prov}\n```"
        )
    return "\n\n".join(parts)


_LISTS_NOTE = """The paper's image lists come with `meanpool` (`meanpool/data/image-lists/`): the
training list is (c) Robert Geirhos et al., "Generalisation in humans and deep neural networks"
(generalisation-humans-DNNs, `16-class-ImageNet/image_names/`), CC BY 4.0; the discovery and
evaluation lists are from the paper's released code
(`vision/16-class-ImageNet/downsampled_1000/{train,eval}/image_names/`).
"""


def dataset_card(manifests: Mapping[str, dict[str, Any]], repo_id: str) -> str:
    """README.md for the dataset repo: what it is, each build (samples, selection, settings,
    provenance), and how to load it. ``manifests``: {subset folder, or "" for one build at the
    root: its manifest} (see ``verify_all``)."""
    first = next(iter(manifests.values()))
    paper = any(
        m["settings"].get("index", {}).get("selection") == "paper" for m in manifests.values()
    )
    lists_note = "\n" + _LISTS_NOTE if paper else ""
    title = "" if len(manifests) > 1 or "" not in manifests else f": `{first['subset']}`"
    return f"""{_front_matter(manifests)}
# Mean-pooled ImageNet{title}

16-class ImageNet images in which every pixel is replaced by the mean colour of its Segment
Anything segment, erasing local texture while keeping global shape (Zhang, Lepori & Pavlick,
"Subtask Induction", arXiv 2310.10899, Section 5.1). Built with the `meanpool` package.

{_subset_table(manifests)}

Each sample: `jpg` (pooled image), `cls` (16-class index), `json` (wnid, category, source path,
size, number of segments, settings digest). Classes (cls order):
{", ".join(first["label_order"])}.

The images derive from ImageNet (ILSVRC-2012); use is subject to the ImageNet terms of access.
{lists_note}
## Loading

{_loading(manifests, repo_id)}

## Settings and provenance

{_details(manifests)}
"""


# ---------------------------------------------------------------- push and pull
def _commit_message(manifests: Mapping[str, dict[str, Any]]) -> str:
    parts = [f"{m['subset']} {m['num_samples']} samples" for m in manifests.values()]
    return "meanpool: " + ", ".join(parts)


def push(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    api: Any = None,
    revision: str | None = None,
) -> str:
    """Verify ``folder`` (one build, or a folder of subset builds), write its dataset card, and
    upload it in one commit to the dataset repo ``repo_id``, keeping its layout. Shards of an
    earlier push of a subset that this build no longer has are deleted. Returns the commit URL.
    ``api``: an ``HfApi`` (default: a new one, with the saved login)."""
    folder = Path(folder)
    manifests = verify_all(folder)
    from subind.io import write_text_atomic

    write_text_atomic(folder / CARD, dataset_card(manifests, repo_id))
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    subsets = [name for name in manifests if name]
    allow = [f"{s}/{p}" for s in subsets for p in _BUILD_FILES] + [CARD] if subsets else None
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    extra = {"delete_patterns": [f"{s}/*.tar" for s in subsets]} if subsets else {}
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        allow_patterns=allow or _UPLOAD_PATTERNS,
        revision=revision,
        commit_message=_commit_message(manifests),
        **extra,
    )
    return str(getattr(info, "commit_url", info))


def _copy_tree(src: Path, out: Path) -> None:
    """Copy every file under ``src`` to ``out`` (same relative paths), each one atomically."""
    for path in sorted(src.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(src).parts):
            continue
        dest = out / path.relative_to(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest.with_name(dest.name + ".tmp"))
        dest.with_name(dest.name + ".tmp").replace(dest)


def pull(
    repo_id: str,
    out: str | Path | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> Path:
    """Download (or find in the cache, offline too) the dataset repo ``repo_id`` and verify every
    build in it (one at the root, or one per subset folder; see ``find_builds``).

    With ``out``, the files are copied there with the same layout (a folder of subsets is then
    what ``--pooled`` reads); returns the verified folder.
    """
    from huggingface_hub import snapshot_download

    snapshot = Path(
        snapshot_download(repo_id, repo_type="dataset", revision=revision, cache_dir=cache_dir)
    )
    verify_all(snapshot)
    if out is None:
        return snapshot
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _copy_tree(snapshot, out)
    verify_all(out)
    return out
