import json

import pytest
from click.testing import CliRunner

from meanpool.cli import main

from .conftest import make_imagenet, make_listed_imagenet


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_index_writes_balanced_disjoint_subsets_with_provenance(tmp_path):
    root = make_imagenet(tmp_path / "in", per_class=4, val_per_class=1)
    out = tmp_path / "index.json"
    result = _run("index", "--imagenet-dir", root, "--out", out, "--discovery-per-class", 2,
                  "--evaluation-per-class", 1)  # fmt: skip
    assert result.exit_code == 0, result.output
    idx = json.loads(out.read_text())
    assert idx["counts"] == {"discovery": 32, "evaluation": 16, "train": 64, "val": 16}
    assert idx["config"] == {"discovery_per_class": 2, "evaluation_per_class": 1, "seed": 0,
                             "selection": "random", "allow_missing": False}  # fmt: skip
    assert idx["selection"] == "random" and idx["missing"] == {}
    assert "git_commit" in idx["provenance"]
    disc = {r["path"] for r in idx["subsets"]["discovery"]}
    assert not disc & {r["path"] for r in idx["subsets"]["evaluation"]}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model-type", "vit_h"], "does not fit --model-type vit_h"),
        (["--model-type", "vit_q"], "is not one of vit_h, vit_l, vit_b"),
    ],
)
def test_bad_model_options_are_one_line_errors(tmp_path, tiny_ckpt, extra, message):
    root = make_imagenet(tmp_path / "in", per_class=2, val_per_class=0)
    result = _run("build", "--imagenet-dir", root, "--out", tmp_path / "out", "--sam-checkpoint",
                  tiny_ckpt, *extra)  # fmt: skip
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing written before the model loads


def test_bad_imagenet_dir_and_values(tmp_path, tiny_ckpt):
    base = [
        "build",
        "--out",
        tmp_path / "out",
        "--sam-checkpoint",
        tiny_ckpt,
        "--model-type",
        "tiny_test",
    ]
    result = _run(*base, "--imagenet-dir", tmp_path)
    assert result.exit_code == 1 and "no train/ folder" in result.output
    result = _run(*base, "--imagenet-dir", tmp_path, "--jpeg-quality", 0)
    assert result.exit_code == 2 and "jpeg_quality must be in 1..100" in result.output
    result = _run(*base, "--imagenet-dir", tmp_path, "--points-per-side", 0)
    assert result.exit_code == 2 and "points_per_side must be >= 1" in result.output
    result = _run(*base, "--imagenet-dir", tmp_path, "--min-side", 5000)
    assert result.exit_code == 2 and "min_side <= max_side" in result.output


def test_unset_options_keep_the_config_defaults(tmp_path, tiny_ckpt, monkeypatch):
    seen = {}

    def fake_build(cfg, progress=True):
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr("meanpool.build.build", fake_build)
    result = _run("build", "--imagenet-dir", tmp_path, "--out", tmp_path / "o", "--sam-checkpoint",
                  tiny_ckpt, "--model-type", "vit_b", "--points-per-side", 8)  # fmt: skip
    assert result.exit_code == 0, result.output
    from meanpool.config import ImageConfig, IndexConfig, PoolConfig, SegmentConfig

    cfg = seen["cfg"]
    assert cfg.segment == SegmentConfig(points_per_side=8)
    assert (cfg.pool, cfg.index, cfg.image) == (PoolConfig(), IndexConfig(), ImageConfig())
    assert cfg.shard_size == 1000 and cfg.subset == "discovery"


def test_index_with_the_lists_prints_and_records_counts(tmp_path):
    picks = make_listed_imagenet(tmp_path / "in")
    out = tmp_path / "index.json"
    result = _run("index", "--imagenet-dir", tmp_path / "in", "--out", out, "--selection", "paper",
                  "--allow-missing")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "(paper): discovery 16, evaluation 16, train 46, val 16" in result.output
    assert "missing from the lists: train 213,509, discovery 13,913, evaluation 1,533" in (
        result.output
    )
    idx = json.loads(out.read_text())
    assert idx["counts"] == {k: len(v) for k, v in picks.items()}
    assert idx["config"]["selection"] == "paper" and idx["missing"]["discovery"]["count"] == 13_913
    assert {r["path"] for r in idx["subsets"]["evaluation"]} == set(picks["evaluation"])


def test_missing_listed_files_are_a_one_line_error(tmp_path):
    make_listed_imagenet(tmp_path / "in")
    result = _run("index", "--imagenet-dir", tmp_path / "in", "--out", tmp_path / "i.json",
                  "--selection", "paper")  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and "pass --allow-missing" in result.output
    assert not (tmp_path / "i.json").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--selection", "paper", "--seed", "3"], "--seed set the random draw"),
        (["--selection", "paper", "--discovery-per-class", "2", "--evaluation-per-class", "1"],
         "--discovery-per-class, --evaluation-per-class set the random draw"),
        (["--allow-missing"], "--allow-missing applies to --selection paper only"),
    ],
)  # fmt: skip
def test_index_options_that_do_not_go_together(tmp_path, extra, message):
    result = _run("index", "--imagenet-dir", tmp_path, "--out", tmp_path / "i.json", *extra)
    assert result.exit_code == 2 and message in result.output


def test_build_passes_the_selection_on(tmp_path, tiny_ckpt, monkeypatch):
    seen = {}
    monkeypatch.setattr(
        "meanpool.build.build", lambda cfg, progress=True: seen.update(cfg=cfg) or {}
    )
    result = _run("build", "--imagenet-dir", tmp_path, "--out", tmp_path / "o", "--sam-checkpoint",
                  tiny_ckpt, "--model-type", "vit_b", "--selection", "paper", "--allow-missing",
                  "--subset", "evaluation")  # fmt: skip
    assert result.exit_code == 0, result.output
    from meanpool.config import IndexConfig

    assert seen["cfg"].index == IndexConfig(selection="paper", allow_missing=True)
    assert seen["cfg"].subset == "evaluation"
