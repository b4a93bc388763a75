import json

import pytest
from click.testing import CliRunner

from meanpool.cli import main

from .conftest import make_imagenet


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
    assert idx["config"] == {"discovery_per_class": 2, "evaluation_per_class": 1, "seed": 0}
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
