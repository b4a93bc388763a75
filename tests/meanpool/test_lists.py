"""The paper's image lists: the packaged data, the "paper" selection, missing files, and the
identity of builds made before the selection existed."""

from collections import Counter
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import pytest

from meanpool.build import build_identity
from meanpool.config import BuildConfig, IndexConfig
from meanpool.imagenet import (
    PAPER_COUNTS,
    PAPER_LISTS,
    MissingImagesError,
    build_index,
    index_record,
    missing_files,
    paper_items,
    paper_list_counts,
    paper_wnids,
    scan,
    select,
    sixteen_classes,
)
from subind.provenance import digest

from .conftest import make_listed_imagenet, wnids_by_category

REPO = Path(__file__).parents[2]
PAPER = IndexConfig(selection="paper")
PAPER_ALLOW = IndexConfig(selection="paper", allow_missing=True)


# ------------------------------------------------------------------ the packaged lists
def test_packaged_lists_have_the_documented_counts():
    assert paper_list_counts() == PAPER_COUNTS
    assert PAPER_COUNTS == {"train": 213_555, "discovery": 13_929, "evaluation": 1_549,
                            "training": 212_006}  # fmt: skip
    train, disc, ev = ({it.rel for it in paper_items(n)} for n in PAPER_LISTS)
    assert len(train) == 213_555 and len(disc) == 13_929 and len(ev) == 1_549  # no duplicates
    assert disc <= train and ev <= train and not disc & ev
    per_class = Counter(it.category for it in paper_items("discovery"))
    assert per_class["knife"] == 527 and per_class["oven"] == 802
    assert {n for c, n in per_class.items() if c not in ("knife", "oven")} == {900}
    assert len(paper_wnids()) == 202 and len(per_class) == 16


def test_every_category_and_wnid_agrees_with_wnids_json():
    categories = wnids_by_category()
    order, wnid_to_cat = sixteen_classes()
    for name in PAPER_LISTS:
        for it in paper_items(name):
            assert it.wnid in categories[it.category], it
            assert wnid_to_cat[it.wnid] == it.category and order[it.label] == it.category
            assert it.rel == f"train/{it.wnid}/{it.rel.rsplit('/', 1)[1]}"
            assert it.rel.rsplit("/", 1)[1].startswith(it.wnid + "_")
    assert set(paper_wnids()) <= set(wnid_to_cat)


def test_lists_and_attribution_are_package_data():
    data = resources.files("meanpool").joinpath("data/image-lists")
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    names = sorted(p.name for p in data.iterdir())
    assert names == ["ATTRIBUTION.txt", "discovery.tsv.gz", "evaluation.tsv.gz", "train.tsv.gz"]
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["meanpool"]
    for name in names:  # an installed package carries every file
        assert any(fnmatch(f"data/image-lists/{name}", p) for p in patterns), name
    note = data.joinpath("ATTRIBUTION.txt").read_text()
    assert "CC BY 4.0" in note and "Geirhos" in note and "downsampled_1000" in note


def test_subset_order_is_fixed_and_class_mixed():
    disc = paper_items("discovery")
    assert disc == paper_items("discovery") and len({it.label for it in disc[:16]}) > 4
    train = paper_items("train")
    assert [it.rel for it in train] == sorted(it.rel for it in train)


# ------------------------------------------------------------------ the paper selection
def test_paper_index_takes_the_listed_files_of_a_tree(tmp_path):
    picks = make_listed_imagenet(tmp_path / "in", train_only=2, discovery=2, evaluation=1)
    idx = build_index(tmp_path / "in", PAPER_ALLOW)
    assert list(idx) == ["discovery", "evaluation", "train", "val"]
    for name in ("discovery", "evaluation", "train", "val"):
        assert sorted(it.rel for it in idx[name]) == sorted(picks[name]), name
    # knife and oven use their whole training list for discovery + evaluation
    assert {k: len(v) for k, v in idx.items()} == {
        "discovery": 32, "evaluation": 16, "train": 76, "val": 16,
    }  # fmt: skip
    order = sixteen_classes()[0]
    assert all(order[it.label] == it.category for items in idx.values() for it in items)
    disc, ev = ({it.rel for it in idx[n]} for n in ("discovery", "evaluation"))
    training = {it.rel for it in idx["train"]} - ev  # table1's training set
    assert not disc & ev and not training & ev and len(training) == 76 - 16
    assert not any("unlisted" in it.rel for it in idx["train"])  # a file no list names
    assert len(scan(tmp_path / "in")["val"]) == 17  # the random draw keeps every 16-class WNID


def test_what_was_missing_is_recorded(tmp_path):
    picks = make_listed_imagenet(tmp_path / "in")
    idx = build_index(tmp_path / "in", PAPER_ALLOW)
    record = index_record(idx, PAPER_ALLOW, tmp_path / "in")
    assert record["selection"] == "paper" and record["config"]["allow_missing"] is True
    for name in PAPER_LISTS:
        missing = record["missing"][name]
        assert missing["listed"] == PAPER_COUNTS[name]
        assert missing["count"] == PAPER_COUNTS[name] - len(picks[name]) == len(missing["files"])
        assert not set(missing["files"]) & set(picks[name])
    assert (
        missing_files("evaluation", idx["evaluation"]) == record["missing"]["evaluation"]["files"]
    )
    random = IndexConfig(discovery_per_class=1, evaluation_per_class=1)
    assert index_record(build_index(tmp_path / "in", random), random, tmp_path)["missing"] == {}


def test_missing_files_stop_with_one_line(tmp_path):
    make_listed_imagenet(tmp_path / "in")
    with pytest.raises(MissingImagesError) as info:
        build_index(tmp_path / "in", PAPER)
    message = str(info.value)
    assert "\n" not in message and message.startswith("213,509 of the 213,555 images")
    assert "paper's train list" in message and "--allow-missing" in message
    assert "check the ImageNet tree" in message and "e.g. train/n0" in message


def test_a_subset_needs_only_its_own_list(tmp_path):
    # Empty files stand in for images: the check lists folders, it opens nothing.
    for it in paper_items("evaluation"):
        (tmp_path / it.rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / it.rel).touch()
    ev = select(tmp_path, "evaluation", PAPER)
    assert len(ev) == 1_549 and [it.rel for it in ev] == [
        it.rel for it in paper_items("evaluation")
    ]
    with pytest.raises(MissingImagesError, match="212,006 of the 213,555"):
        select(tmp_path, "train", PAPER)
    with pytest.raises(MissingImagesError, match="of the 13,929 images of the paper's discovery"):
        select(tmp_path, "discovery", PAPER)
    assert len(select(tmp_path, "train", PAPER_ALLOW)) == 1_549


def test_checking_the_lists_lists_folders_instead_of_stating_files(tmp_path, monkeypatch):
    import os

    make_listed_imagenet(tmp_path / "in")
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **kw: calls.append(a) or real_stat(*a, **kw))
    assert len(select(tmp_path / "in", "train", PAPER_ALLOW)) == 46
    assert len(calls) < 10  # 213,555 listed files, 202 folders: one listing each


def test_a_tree_without_train_is_still_named(tmp_path):
    from meanpool.imagenet import ImageNetError

    with pytest.raises(ImageNetError, match="no train/ folder"):
        build_index(tmp_path, PAPER_ALLOW)


# ------------------------------------------------------------------ build identity
def _cfg(**index) -> BuildConfig:
    return BuildConfig(imagenet_dir="a", out="b", model_type="vit_h", checkpoint="c",
                       subset="evaluation", index=IndexConfig(**index))  # fmt: skip


def test_random_draw_builds_keep_their_identity():
    # Digests of build_identity(cfg, "0" * 64) computed with the code before `selection` existed.
    before = {
        "9afb6c8430001f549e4545dfac3697bddbc0f97cbcfe7e3d13abc3b30588ff16": dict(
            discovery_per_class=5, evaluation_per_class=2, seed=3
        ),
        "9f0795b75c6abec68ce001ca9867e3076b3f1de253215590899e1b7651a0cae7": {},
    }
    for old_digest, index in before.items():
        cfg = _cfg(**index)
        if not index:  # the second one was made with BuildConfig's defaults
            cfg = BuildConfig(imagenet_dir="a", out="b", model_type="vit_h", checkpoint="c")
        identity = build_identity(cfg, "0" * 64)
        assert digest(identity) == old_digest
        assert set(identity["index"]) == {"discovery_per_class", "evaluation_per_class", "seed"}


def test_the_lists_have_their_own_identity():
    paper = build_identity(_cfg(selection="paper"), "0" * 64)
    assert paper["index"] == {"selection": "paper"}
    assert digest(paper) != digest(build_identity(_cfg(), "0" * 64))
    # allow_missing changes no image (what was missing goes to the manifest); nor do the
    # draw's settings, which the lists do not use
    same = build_identity(_cfg(selection="paper", allow_missing=True, seed=4), "0" * 64)
    assert same == paper


def test_bad_selection_is_refused():
    with pytest.raises(AssertionError, match="selection must be one of"):
        IndexConfig(selection="exact")
