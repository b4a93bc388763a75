import io
import json

import numpy as np
import pytest
from PIL import Image

from meanpool import loader

from .conftest import fill_hf_cache


def _keys(ds):
    return [s["__key__"] for s in ds]


def test_local_folder_gives_decoded_samples(built):
    samples = list(loader.dataset(built))
    assert len(samples) == 16 and len(set(_keys(samples))) == 16
    s = samples[0]
    assert s["image"].mode == "RGB" and isinstance(s["cls"], int) and s["json"]["label"] == s["cls"]
    pairs = list(loader.dataset(built, pairs=True, transform=lambda im: np.asarray(im).shape))
    assert sorted(c for _, c in pairs) == list(range(16)) and len(pairs[0][0]) == 3


def test_shuffle_is_seeded(built):
    a = _keys(loader.dataset(built, shuffle=8, seed=1))
    assert sorted(a) == sorted(_keys(loader.dataset(built)))
    assert a == _keys(loader.dataset(built, shuffle=8, seed=1))


@pytest.mark.parametrize("var, n", [("RANK", "WORLD_SIZE"), ("WORKER", "NUM_WORKERS")])
def test_split_by_node_and_worker_covers_everything_once(built, monkeypatch, var, n):
    parts = []
    for i in range(2):
        monkeypatch.setenv(var, str(i))
        monkeypatch.setenv(n, "2")
        parts.append(set(_keys(loader.dataset(built))))
    assert not parts[0] & parts[1] and len(parts[0] | parts[1]) == 16 and parts[0] and parts[1]


def test_stages_on_plain_lists():
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 20, 30)).save(buf, format="JPEG")
    raw = [{"__key__": "k", "jpg": buf.getvalue(), "cls": b"5", "json": b'{"wnid": "n1"}'}]
    (dec,) = loader.decode(raw)
    assert dec["image"].size == (4, 3) and dec["cls"] == 5 and dec["json"] == {"wnid": "n1"}
    assert list(loader.to_pair([dec], transform=lambda im: im.size)) == [((4, 3), 5)]
    assert list(loader.open_shards([])) == []


def test_hf_urls_read_through_the_offline_cache(built, tmp_path, offline):
    cache = tmp_path / "hf"
    fill_hf_cache(cache, "org/meanpool-test", built)
    urls = loader.shard_urls("hf://datasets/org/meanpool-test", cache_dir=str(cache))
    manifest = json.loads((built / "manifest.json").read_text())
    assert urls == [f"hf://datasets/org/meanpool-test/{s['name']}" for s in manifest["shards"]]
    hub = _keys(loader.dataset("hf://datasets/org/meanpool-test", cache_dir=str(cache)))
    assert hub == _keys(loader.dataset(built))


def test_folder_without_manifest_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        loader.shard_urls(tmp_path)


def test_dataloader_workers_each_read_their_own_shards(built):
    import pickle

    import torch

    ds = loader.dataset(built, pairs=True, transform=np.asarray)
    pickle.dumps(ds)  # stages must pickle for spawn-started workers
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    labels = sorted(int(c) for _, c in dl)
    assert labels == list(range(16))


def test_hf_subfolder_holds_its_own_build(built, tmp_path, offline):
    # A repo with one build per subset: hf://datasets/ORG/NAME/<subset> reads that subfolder.
    import shutil

    cache = tmp_path / "hf"
    snap = fill_hf_cache(cache, "org/subsets", built)
    shutil.copytree(built, snap / "discovery")
    urls = loader.shard_urls("hf://datasets/org/subsets/discovery", cache_dir=str(cache))
    manifest = json.loads((built / "manifest.json").read_text())
    assert urls == [f"hf://datasets/org/subsets/discovery/{s['name']}" for s in manifest["shards"]]
    hub = _keys(loader.dataset("hf://datasets/org/subsets/discovery", cache_dir=str(cache)))
    assert hub == _keys(loader.dataset(built))


def test_read_samples_gives_every_raw_sample_in_manifest_order(built):
    raw = list(loader.read_samples(built))
    samples = list(loader.dataset(built))
    assert len(raw) == 16 and [r["__key__"] for r in raw] == [s["__key__"] for s in samples]
    assert [int(r["cls"]) for r in raw] == [s["cls"] for s in samples]
    sources = [json.loads(r["json"])["source"] for r in raw]
    assert sources == [s["json"]["source"] for s in samples]
    assert all(src.startswith("train/") for src in sources)
