"""WebDataset shards written atomically, found again on resume, and listed in a manifest.

A shard is written as ``<name>.tar.tmp`` and renamed to ``<name>.tar`` only when complete and
fsynced, so any ``.tar`` in the output directory is whole; ``.tmp`` files are leftovers of a
killed build and are deleted (and their images redone) when the build resumes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from pathlib import Path
from typing import Any

_SHARD_RE = re.compile(r"^(?P<subset>[a-z]+)-r(?P<rank>\d{3})-(?P<num>\d{6})\.tar$")
TMP_SUFFIX = ".tmp"


def shard_name(subset: str, rank: int, num: int) -> str:
    """``<subset>-r<rank:03d>-<num:06d>.tar``: ranks never write the same name."""
    return f"{subset}-r{rank:03d}-{num:06d}.tar"


def complete_shards(out: str | Path) -> list[Path]:
    """All finished shards in ``out``, sorted by name."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if _SHARD_RE.match(p.name))


def next_shard_number(out: str | Path, subset: str, rank: int) -> int:
    nums = [
        int(m["num"])
        for p in complete_shards(out)
        if (m := _SHARD_RE.match(p.name)) and m["subset"] == subset and int(m["rank"]) == rank
    ]
    return max(nums, default=-1) + 1


def remove_partial(out: str | Path) -> list[Path]:
    """Delete shards a killed build left half-written; returns what was removed."""
    out = Path(out)
    removed = [p for p in out.glob(f"*.tar{TMP_SUFFIX}")] if out.is_dir() else []
    for p in removed:
        p.unlink()
    return removed


def shard_keys(path: str | Path) -> list[str]:
    """Sample keys in a shard, in order (member names up to the first dot)."""
    keys: list[str] = []
    with tarfile.open(path) as tar:
        for name in tar.getnames():
            key = name.split(".", 1)[0]
            if not keys or keys[-1] != key:
                keys.append(key)
    return keys


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    """Writes samples ({"__key__": str, ext: bytes, ...}) into shards of ``shard_size`` samples.

    ``close()`` finishes the last, possibly short, shard. Only finished shards get their final
    name; a crash leaves at most one ``.tar.tmp`` per writer.
    """

    def __init__(self, out: str | Path, subset: str, rank: int, shard_size: int) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.subset, self.rank, self.shard_size = subset, rank, shard_size
        self.num = next_shard_number(self.out, subset, rank)
        self.written: list[Path] = []
        self._tar = self._file = None
        self._count = 0

    def write(self, sample: dict[str, Any]) -> None:
        assert "." not in sample["__key__"], (
            f"sample keys must not contain dots: {sample['__key__']!r}"
        )
        import webdataset as wds

        if self._tar is None:
            self._file = open(self._tmp_path(), "wb")  # noqa: SIM115 (closed in _finish)
            # Fixed mtime: equal samples give byte-identical shards.
            self._tar = wds.TarWriter(self._file, mtime=0.0)
        self._tar.write(sample)
        self._count += 1
        if self._count == self.shard_size:
            self._finish()

    def close(self) -> None:
        if self._tar is not None:
            self._finish()

    def _tmp_path(self) -> Path:
        return self.out / (shard_name(self.subset, self.rank, self.num) + TMP_SUFFIX)

    def _finish(self) -> None:
        self._tar.tarstream.close()  # writes the tar end blocks; the file stays ours to sync
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self.out / shard_name(self.subset, self.rank, self.num)
        os.replace(self._tmp_path(), final)
        _fsync_dir(self.out)
        self.written.append(final)
        self._tar = self._file = None
        self._count = 0
        self.num += 1
