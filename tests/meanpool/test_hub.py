import json
import shutil

import pytest
from click.testing import CliRunner

from meanpool import hub
from meanpool.cli import main

from .conftest import POOLED_SUBSETS, FakeApi, fill_hf_cache


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


# ------------------------------------------------------------------ a folder of subset builds
def _folder_of_subsets(pooled_folder, tmp_path):
    _, pooled, picks = pooled_folder
    folder = tmp_path / "ds"
    shutil.copytree(pooled, folder)
    (folder / "notes.txt").write_text("not part of the dataset")
    (folder / "scratch").mkdir()
    (folder / "scratch" / "old.tar").write_bytes(b"not a build")
    return folder, picks


def test_push_a_folder_of_subsets_in_one_commit(pooled_folder, tmp_path):
    folder, _ = _folder_of_subsets(pooled_folder, tmp_path)
    api = FakeApi()
    hub.push(folder, "org/pooled", api=api)
    (_, _, ukw) = api.calls[1]
    expected = ["README.md"]
    for subset in POOLED_SUBSETS:
        manifest = json.loads((folder / subset / "manifest.json").read_text())
        files = ["build.json", "manifest.json", *(s["name"] for s in manifest["shards"])]
        expected += [f"{subset}/{name}" for name in files]
    assert api.uploaded() == sorted(expected)  # the layout kept; nothing else sent
    assert ukw["delete_patterns"] == [f"{s}/*.tar" for s in POOLED_SUBSETS]
    assert ukw["commit_message"] == (
        "meanpool: discovery 16 samples, evaluation 16 samples, val 16 samples"
    )


def test_the_card_describes_each_subset(pooled_folder, tmp_path):
    folder, _ = _folder_of_subsets(pooled_folder, tmp_path)
    hub.push(folder, "org/pooled", api=FakeApi())
    card = (folder / "README.md").read_text()
    for subset in POOLED_SUBSETS:
        manifest = json.loads((folder / subset / "manifest.json").read_text())
        assert f"- config_name: {subset}" in card and f'path: "{subset}/*.tar"' in card
        assert f"| `{subset}/` | {subset} | 16 | 3 | 0 |" in card and "| tiny_test |" in card
        assert manifest["settings_digest"] in card
    assert (
        "the paper's discovery list (13,929 images), 13,913 absent from the ImageNet tree" in card
    )
    assert "the paper's evaluation list (1,549 images), 1,533 absent" in card
    assert "ImageNet validation images of the paper's 202 WNIDs" in card
    assert "CC BY 4.0" in card and "--pooled hf://datasets/org/pooled" in card


def test_a_random_draw_is_described_too(built, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(built, folder / "discovery")
    hub.push(folder, "org/name", api=FakeApi())
    card = (folder / "README.md").read_text()
    assert "random class-balanced draw, 1 per class, seed 0" in card and "CC BY" not in card


def test_pull_a_folder_of_subsets(pooled_folder, tmp_path, offline):
    folder, picks = _folder_of_subsets(pooled_folder, tmp_path)
    api = FakeApi()
    hub.push(folder, "org/pooled", api=api)
    cache = tmp_path / "hf"
    fill_hf_cache(cache, "org/pooled", folder, files=api.uploaded())
    out = tmp_path / "pulled"
    result = CliRunner().invoke(
        main, ["pull", "org/pooled", "--out", str(out), "--cache-dir", str(cache)]
    )
    assert result.exit_code == 0, result.output
    for subset in POOLED_SUBSETS:
        assert f"pulled/{subset}: {subset}, 16 samples in 3 shards, verified" in result.output
    from meanpool import loader

    assert sorted(p.name for p in out.iterdir()) == ["README.md", *POOLED_SUBSETS]
    for subset in POOLED_SUBSETS:
        sources = [s["json"]["source"] for s in loader.dataset(out / subset)]
        assert sorted(sources) == sorted(picks[subset])


def test_pull_of_a_corrupt_subset_fails(pooled_folder, tmp_path, offline):
    folder, _ = _folder_of_subsets(pooled_folder, tmp_path)
    api = FakeApi()
    hub.push(folder, "org/pooled", api=api)
    snap = fill_hf_cache(tmp_path / "hf", "org/pooled", folder, files=api.uploaded())
    next((snap / "evaluation").glob("*.tar")).write_bytes(b"broken")
    with pytest.raises(hub.HubError, match="evaluation/.*does not match its sha256"):
        hub.pull("org/pooled", tmp_path / "pulled", cache_dir=str(tmp_path / "hf"))


def test_folders_that_are_not_one_layout_are_refused(pooled_folder, built, tmp_path):
    _, pooled, _ = pooled_folder
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(hub.HubError, match="no manifest.json and no subset builds"):
        hub.push(empty, "org/x", api=FakeApi())
    both = tmp_path / "both"
    shutil.copytree(built, both)
    shutil.copytree(pooled / "val", both / "val")
    with pytest.raises(hub.HubError, match="at its root and in val/; push one layout"):
        hub.push(both, "org/x", api=FakeApi())
    renamed = tmp_path / "renamed"
    shutil.copytree(pooled / "discovery", renamed / "disc")
    with pytest.raises(hub.HubError, match="holds the 'discovery' subset; rename the folder"):
        hub.push(renamed, "org/x", api=FakeApi())
    unfinished = tmp_path / "unfinished"
    shutil.copytree(pooled, unfinished)
    (unfinished / "val" / "manifest.json").unlink()
    result = CliRunner().invoke(main, ["push", str(unfinished), "--repo-id", "org/x"])
    assert result.exit_code == 1 and "unfinished/val has no manifest.json" in result.output
    assert "Traceback" not in result.output
