"""Atomic writes: files take the permissions the umask gives new files, and a folder is checked
for writing before any work, without creating it."""

import os
import stat

import pytest
import torch

from subind.io import (
    NotWritableError,
    append_jsonl,
    require_writable,
    save_state_dict,
    write_json_atomic,
    write_text_atomic,
)


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    os.umask(old)
    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    write_text_atomic(tmp_path / "a.md", "x")
    write_json_atomic(tmp_path / "b.json", {"a": 1})
    save_state_dict({"w": torch.zeros(2)}, tmp_path / "c.safetensors")
    append_jsonl(tmp_path / "d.jsonl", {"a": 1})
    for name in ("a.md", "b.json", "c.safetensors", "d.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left


def test_require_writable_creates_nothing_and_names_the_problem(tmp_path):
    require_writable(tmp_path / "new" / "deeper")  # a folder that could be made: fine
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotWritableError, match="cannot be created: .*file is a file; use another"):
        require_writable(tmp_path / "file" / "out")
