"""Atomic file writes (text, JSON, state dicts) and append-only JSON-lines logs.

Every artifact is written to a temporary file in the same directory and renamed into place, so a
reader never sees half a file and a crash never replaces a finished result with a broken one.
Files get the permissions the user's umask gives any new file (a temporary file would otherwise
keep its private 0600 mode after the rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


class NotWritableError(ValueError):
    """A folder outputs cannot be written to (one-line message naming it and the fix)."""


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` as the process's umask leaves it for a new file (e.g. 0o644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def require_writable(folder: str | os.PathLike, fix: str = "use another --out") -> None:
    """Raise NotWritableError unless ``folder`` could be written to: the folder, or the nearest
    folder above it that exists, takes a temporary file (removed at once). Nothing is created,
    so a command that then fails on another input leaves no empty folder behind."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise NotWritableError(f"{folder} cannot be created: {probe} is a file; {fix}")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-test-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise NotWritableError(f"{folder} is not writable ({probe}: {reason}); {fix}") from None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` (with the umask's
    permissions) if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, umask_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_with_atomic(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` only if it returns."""
    with atomic_path(path) as tmp:
        writer(tmp)


def save_state_dict(
    state: torch.nn.Module | dict[str, torch.Tensor],
    path: str | os.PathLike,
    exclude: tuple[str, ...] = (),
) -> None:
    """Write a state dict (or a module's) atomically: safetensors for a ``.safetensors`` path,
    else ``torch.save``. Tensors are detached, moved to the CPU and made contiguous; names in
    ``exclude`` are left out (e.g. a weight tied to another, which safetensors refuses)."""
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    cpu = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in exclude}
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import save_file

        write_with_atomic(path, lambda tmp: save_file(cpu, str(tmp)))
    else:
        write_with_atomic(path, lambda tmp: torch.save(cpu, tmp))


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON object as a line and fsync, so a finished record survives a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON-lines file; a torn last line (from a killed writer) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a record cut short by a crash; the run is simply redone
    return records
