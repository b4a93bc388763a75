"""The Hub round trip of a folder of subset builds, as the vision experiment reads it:
``meanpool push`` of ``<pooled>/{discovery,evaluation,val}`` -> ``--pooled hf://datasets/ORG/NAME``
(offline, from a Hugging Face cache filled with exactly what was uploaded), and ``meanpool pull``
-> a folder that ``--pooled`` reads."""

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from benchmarks.vision.data import PooledImages
from meanpool import hub
from meanpool.cli import main
from meanpool.model import build_tiny_sam
from tests.meanpool.conftest import POOLED_SUBSETS, FakeApi, build_pooled_folder, fill_hf_cache

REPO_ID = "org/meanpooled"


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """(pooled folder, {subset: source paths}, HF cache holding what the push uploaded)."""
    base = tmp_path_factory.mktemp("pooled-hub")
    torch.save(build_tiny_sam(seed=0).state_dict(), base / "tiny_test.pth")
    _, pooled, picks = build_pooled_folder(base, base / "tiny_test.pth")
    api = FakeApi()
    hub.push(pooled, REPO_ID, api=api)
    cache = base / "hf"
    fill_hf_cache(cache, REPO_ID, pooled, files=api.uploaded())
    return pooled, picks, cache


@pytest.fixture
def offline(monkeypatch):
    """Hub offline mode, and any socket connection fails (as tests/meanpool's fixture)."""
    import socket

    import huggingface_hub.constants

    def refuse(*args, **kw):
        raise OSError("network access in a test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _check(images: PooledImages, local: PooledImages, sources: list[str]) -> None:
    assert sorted(images.sources) == sorted(sources)
    assert images.sources == local.sources and images.labels == local.labels
    first = images[0][0]
    assert first.mode == "RGB" and first.tobytes() == local[0][0].tobytes()


@pytest.mark.parametrize("subset", POOLED_SUBSETS)
def test_pooled_hf_url_reads_what_push_wrote(pushed, offline, subset):
    pooled, picks, cache = pushed
    url = f"hf://datasets/{REPO_ID}"
    images = PooledImages(url, subset, transform=None, cache_dir=str(cache))
    _check(images, PooledImages(pooled, subset, transform=None), picks[subset])


def test_pulled_folder_is_what_pooled_reads(pushed, offline, tmp_path):
    pooled, picks, cache = pushed
    out = tmp_path / "pulled"
    result = CliRunner().invoke(
        main, ["pull", REPO_ID, "--out", str(out), "--cache-dir", str(cache)]
    )
    assert result.exit_code == 0, result.output
    for subset in POOLED_SUBSETS:
        images = PooledImages(out, subset, transform=None)
        _check(images, PooledImages(pooled, subset, transform=None), picks[subset])
    assert (Path(out) / "README.md").is_file()


def test_an_uncached_hf_dataset_fails_in_seconds_without_the_network(tmp_path, monkeypatch):
    """No offline flag set: the reader must not try the network at all (any connection would
    fail loudly here), and say in one line how to get the dataset."""
    import socket
    import time

    def refuse(*args, **kw):
        raise AssertionError("the pooled reader tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as e:
        PooledImages("hf://datasets/org/not-cached", "val", None, cache_dir=str(tmp_path / "hf"))
    assert time.monotonic() - start < 5
    message = str(e.value)
    assert "\n" not in message and "not in the local Hugging Face cache" in message
    assert "meanpool pull org/not-cached --out DIR" in message
