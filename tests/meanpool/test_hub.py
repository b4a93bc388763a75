import json
import shutil

import pytest
from click.testing import CliRunner

from meanpool import hub
from meanpool.cli import main

from .conftest import fill_hf_cache


class FakeApi:
    """Records what would be sent to the Hub."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw["repo_id"], kw))
        return "https://huggingface.co/datasets/org/name/commit/123"


def test_push_verifies_writes_a_card_and_uploads(built, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(built, folder)
    api = FakeApi()
    url = hub.push(folder, "org/name", api=api)
    assert url.endswith("/commit/123")
    (create, _, ckw), (upload, repo, ukw) = api.calls
    assert create == "create_repo" and ckw["repo_type"] == "dataset" and ckw["exist_ok"]
    assert upload == "upload_folder" and repo == "org/name" and ukw["repo_type"] == "dataset"
    assert "*.tar" in ukw["allow_patterns"] and "manifest.json" in ukw["allow_patterns"]
    card = (folder / "README.md").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["settings_digest"] in card and manifest["provenance"]["git_commit"] in card
    assert '"points_per_side": 4' in card and "hf://datasets/org/name" in card


def test_corrupt_or_unfinished_folders_are_not_pushed(built, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(built, folder)
    shard = sorted(folder.glob("*.tar"))[0]
    shard.write_bytes(shard.read_bytes()[:-512] + b"\1" * 512)
    with pytest.raises(hub.HubError, match="does not match its sha256"):
        hub.push(folder, "org/name", api=FakeApi())
    (folder / "manifest.json").unlink()
    result = CliRunner().invoke(main, ["push", str(folder), "--repo-id", "org/name"])
    assert (
        result.exit_code != 0
        and "no manifest.json" in result.output
        and "Traceback" not in result.output
    )


def test_pull_from_the_offline_cache_verifies_and_copies(built, tmp_path, offline):
    cache = tmp_path / "hf"
    fill_hf_cache(cache, "org/name", built)
    out = tmp_path / "pulled"
    result = CliRunner().invoke(
        main, ["pull", "org/name", "--out", str(out), "--cache-dir", str(cache)]
    )
    assert result.exit_code == 0, result.output
    assert "16 samples" in result.output and "verified" in result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in built.iterdir() if p.is_file()
    )
    from meanpool import loader

    assert len(list(loader.dataset(out))) == 16  # a pulled snapshot loads like a local build


def test_pull_of_a_corrupt_snapshot_fails(built, tmp_path, offline):
    cache = tmp_path / "hf"
    snap = fill_hf_cache(cache, "org/name", built)
    next(snap.glob("*.tar")).write_bytes(b"broken")
    with pytest.raises(hub.HubError, match="sha256"):
        hub.pull("org/name", tmp_path / "pulled", cache_dir=str(cache))


def test_push_command_uses_huggingface_hub(built, tmp_path, monkeypatch):
    import huggingface_hub

    folder = tmp_path / "ds"
    shutil.copytree(built, folder)
    api = FakeApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    result = CliRunner().invoke(main, ["push", str(folder), "--repo-id", "org/name", "--private"])
    assert result.exit_code == 0, result.output
    assert api.calls[0][2]["private"] is True and "commit/123" in result.output
