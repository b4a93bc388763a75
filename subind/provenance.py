"""What produced a result: package versions, git commit, host and time; and the digests that
name a result by the settings it depends on."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
_PACKAGES = ("subind", "torch", "torchvision", "numpy", "segment-anything", "webdataset")


def git_commit(path: str | Path | None = None) -> str:
    """The commit of the git checkout holding ``path`` (default: this package), with a
    ``-dirty`` suffix when tracked files are modified; ``"unknown"`` outside a checkout."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        )
        suffix = "-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
        return commit.stdout.strip() + suffix
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions(names: tuple[str, ...] = _PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance() -> dict[str, Any]:
    """A dict to store beside every artifact and result."""
    return {
        "schema_version": SCHEMA_VERSION,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": platform.node(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def record_stamp() -> dict[str, Any]:
    """The part of :func:`provenance` stored in every results record (commit and versions)."""
    prov = provenance()
    return {"git_commit": prov["git_commit"], "versions": prov["versions"]}


def digest(obj: Any) -> str:
    """sha256 (hex) of the canonical JSON of ``obj``: equal settings give equal digests."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def config_digest(cfg: Any, *names: str) -> str:
    """A short digest of the named fields of a config dataclass (all fields when none): a
    stage's cache key, so that editing a setting re-runs only the stages that depend on it."""
    d = dataclasses.asdict(cfg)
    return digest({k: d[k] for k in (names or d)})[:10]
