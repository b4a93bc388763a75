import dataclasses
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from meanpool.build import BuildError, build, encode_samples, pool_images, read_images
from meanpool.cli import main
from meanpool.config import BuildConfig, ImageConfig, IndexConfig, PoolConfig, SegmentConfig
from meanpool.imagenet import Item, scan
from meanpool.shards import complete_shards, sha256_file
from subind.io import read_jsonl

from .conftest import FAST_CLI, make_imagenet, make_listed_imagenet, synthetic_image

REPO = Path(__file__).parents[2]
SEG = SegmentConfig(
    points_per_side=8, pred_iou_thresh=0, stability_score_thresh=0, min_mask_region_area=20
)


def read_samples(out: Path) -> dict[str, dict[str, bytes]]:
    """Every sample in the finished shards of ``out``; asserts no key appears twice."""
    samples: dict[str, dict[str, bytes]] = {}
    seen_in: dict[str, str] = {}
    for shard in complete_shards(out):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                assert seen_in.setdefault(key, shard.name) == shard.name, f"{key} in two shards"
                samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return samples


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cfg(root, out, ckpt, **kw) -> BuildConfig:
    kw.setdefault("index", IndexConfig(discovery_per_class=1, evaluation_per_class=1))
    return BuildConfig(
        imagenet_dir=str(root),
        out=str(out),
        model_type="tiny_test",
        checkpoint=str(ckpt),
        segment=SEG,
        **kw,
    )


# ------------------------------------------------------------------ stages fed with plain lists
def test_stages_on_plain_lists(tmp_path, tiny_sam):
    Image.fromarray(synthetic_image(48, 64)).save(tmp_path / "good.JPEG")
    (tmp_path / "bad.JPEG").write_bytes(b"")
    items = [
        Item("good.JPEG", "n02690373", "airplane", 0),
        Item("bad.JPEG", "n02690373", "airplane", 0),
    ]
    read = list(read_images(items, str(tmp_path), ImageConfig()))
    assert read[0]["image"].shape == (48, 64, 3) and read[1]["skip"].startswith("empty file")
    pooled = list(pool_images(read, tiny_sam, SEG, PoolConfig()))
    assert (
        pooled[0]["pooled"].shape == (48, 64, 3)
        and pooled[0]["n_segments"] >= 1
        and "skip" in pooled[1]
    )
    out = list(encode_samples(pooled, 90, "abc"))
    assert set(out[0]) == {"__key__", "jpg", "cls", "json"} and out[0]["__key__"] == "good_JPEG"
    meta = json.loads(out[0]["json"])
    assert meta == {
        "wnid": "n02690373", "category": "airplane", "label": 0, "source": "good.JPEG", "width": 64,
        "height": 48, "n_segments": pooled[0]["n_segments"], "settings_digest": "abc",
    }  # fmt: skip
    assert out[0]["cls"] == b"0" and Image.open(__import__("io").BytesIO(out[0]["jpg"])).size == (
        64,
        48,
    )
    assert out[1] is pooled[1]


def test_each_rank_gets_a_contiguous_slice():
    from meanpool.build import _slice

    items = list(range(10))
    parts = [_slice(items, r, 3) for r in range(3)]
    assert sum(parts, []) == items and [len(p) for p in parts] == [3, 4, 3]


def test_sam_failures_are_skips_until_too_many_in_a_row():
    image = synthetic_image(40, 40)
    ok = [{"item": i, "image": image} for i in range(4)]
    out = list(pool_images(ok, None, SEG, PoolConfig()))  # no model: every call fails
    assert all(s["skip"].startswith("segmentation failed (AttributeError") for s in out)
    with pytest.raises(BuildError, match="5 images in a row"):
        list(pool_images(ok + ok, None, SEG, PoolConfig()))


# ------------------------------------------------------------------ in-process builds
def test_build_writes_shards_and_manifest_and_resumes(tmp_path, tiny_ckpt):
    root = make_imagenet(tmp_path / "in", per_class=3, val_per_class=0)
    out = tmp_path / "out"
    cfg = _cfg(root, out, tiny_ckpt, shard_size=5)
    manifest = build(cfg, progress=False)
    samples = read_samples(out)
    assert manifest["num_samples"] == len(samples) == 16 and manifest["num_failures"] == 0
    assert [s["num_samples"] for s in manifest["shards"]] == [5, 5, 5, 1]
    assert all(sha256_file(out / s["name"]) == s["sha256"] for s in manifest["shards"])
    assert {"provenance", "settings", "settings_digest", "build_config"} <= set(manifest)
    assert manifest["inputs"]["count"] == 16 and len(manifest["inputs"]["paths_sha256"]) == 64
    assert (
        manifest["provenance"]["versions"]["segment-anything"]
        and manifest["build_config"]["segment"]["points_per_side"] == 8
    )
    labels = sorted(int(s["cls"]) for s in samples.values())
    assert labels == list(range(16))  # one discovery image per class
    meta = json.loads(next(iter(samples.values()))["json"])
    assert meta["settings_digest"] == manifest["settings_digest"][:16]
    assert all("." not in k for k in samples)

    again = build(cfg, progress=False)  # nothing left to do: same samples, same shards
    assert again["shards"] == manifest["shards"]
    (out / manifest["shards"][1]["name"]).unlink()  # lose a shard: exactly its images are redone
    build(cfg, progress=False)
    assert read_samples(out).keys() == samples.keys()

    with pytest.raises(BuildError, match="different settings .*segment"):
        build(dataclasses.replace(cfg, segment=SegmentConfig()), progress=False)


def test_odd_inputs_are_converted_or_skipped_and_recorded(tmp_path, tiny_ckpt):
    root = make_imagenet(tmp_path / "in", per_class=1, val_per_class=0)
    d = root / "train" / "n02690373"
    rgb = Image.fromarray(synthetic_image(60, 80, seed=9))
    rgb.convert("CMYK").save(d / "cmyk.JPEG")
    rgb.convert("L").save(d / "grey.JPEG")
    rgb.convert("P").save(d / "palette.png")
    rgb.convert("RGBA").save(d / "alpha.png")
    Image.fromarray(synthetic_image(400, 900, seed=3)).save(d / "large.JPEG")
    (d / "empty.JPEG").write_bytes(b"")
    (d / "text.JPEG").write_text("hello")
    rgb.save(d / "trunc.JPEG")
    (d / "trunc.JPEG").write_bytes((d / "trunc.JPEG").read_bytes()[:200])
    Image.fromarray(synthetic_image(10, 10)).save(d / "tiny.JPEG")
    out = tmp_path / "out"
    manifest = build(
        _cfg(root, out, tiny_ckpt, subset="train", image=ImageConfig(max_side=256)), progress=False
    )
    failures = {Path(r["path"]).name: r["reason"] for r in read_jsonl(out / "failures.jsonl")}
    assert set(failures) == {"empty.JPEG", "text.JPEG", "trunc.JPEG", "tiny.JPEG"}
    assert failures["tiny.JPEG"].startswith("too small") and failures["empty.JPEG"].startswith(
        "empty"
    )
    samples = read_samples(out)
    n_inputs = len(scan(root)["train"])
    assert (
        len(samples) + len(failures)
        == n_inputs
        == manifest["num_samples"] + manifest["num_failures"]
    )
    large = json.loads(samples["train_n02690373_large_JPEG"]["json"])
    assert (large["width"], large["height"]) == (256, 114)


# ------------------------------------------------------------------ processes: SIGKILL, torchrun
def _cli_args(root, out, ckpt, *extra):
    return ["build", "--imagenet-dir", str(root), "--out", str(out), "--sam-checkpoint", str(ckpt),
            *FAST_CLI, "--subset", "train", *extra]  # fmt: skip


def _run_until_killed(args, out, shards_before_kill: int) -> None:
    """Start a build in a subprocess and SIGKILL it once ``out`` holds that many finished shards."""
    proc = subprocess.Popen([sys.executable, "-m", "meanpool", *args], env=_env(), cwd=out.parent)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(complete_shards(out)) >= shards_before_kill:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"


def test_sigkilled_build_resumes_with_every_image_exactly_once(tmp_path, tiny_ckpt):
    root = make_imagenet(tmp_path / "in", per_class=2, val_per_class=0)  # 32 images
    (root / "train" / "n02690373" / "bad.JPEG").write_bytes(b"")  # a skip is not redone either
    out = tmp_path / "out"
    args = _cli_args(root, out, tiny_ckpt, "--shard-size", "2")
    _run_until_killed(args, out, 1)  # killed at some moment after the first shard
    first = len(read_samples(out))
    assert 0 < first < 32 and not (out / "manifest.json").exists()
    _run_until_killed(args, out, len(complete_shards(out)) + 2)  # resumed, and killed again
    assert first < len(read_samples(out)) < 32

    result = CliRunner().invoke(main, args)  # resumed to the end
    assert result.exit_code == 0, result.output
    samples = read_samples(out)  # asserts no key is in two shards
    failures = [r["key"] for r in read_jsonl(out / "failures.jsonl")]
    keys = {it.key for it in scan(root)["train"]}
    assert sorted([*samples, *failures]) == sorted(keys) and failures == [
        "train_n02690373_bad_JPEG"
    ]
    assert not list(out.glob("*.tmp"))
    assert json.loads((out / "manifest.json").read_text())["num_samples"] == 32


def test_two_gloo_ranks_give_the_same_samples_as_one_process(tmp_path, tiny_ckpt):
    root = make_imagenet(tmp_path / "in", per_class=1, val_per_class=0)
    one, two = tmp_path / "one", tmp_path / "two"
    result = CliRunner().invoke(main, _cli_args(root, one, tiny_ckpt, "--shard-size", "3"))
    assert result.exit_code == 0, result.output
    args = _cli_args(root, two, tiny_ckpt, "--shard-size", "3", "--device", "cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "meanpool", *args]  # fmt: skip
    proc = subprocess.run(
        cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_samples(one) == read_samples(two)
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["runtime"]["world_size"] == 2 and manifest["num_samples"] == 16
    assert manifest["runtime"]["device"] == "cpu"
    assert {s["name"].split("-")[1] for s in manifest["shards"]} == {"r000", "r001"}


def test_limit_takes_a_class_mixed_prefix_and_can_grow(tmp_path, tiny_ckpt):
    root = make_imagenet(tmp_path / "in", per_class=2, val_per_class=0)
    out = tmp_path / "out"
    cfg = _cfg(root, out, tiny_ckpt, limit=5)
    assert build(cfg, progress=False)["num_samples"] == 5
    assert len({int(s["cls"]) for s in read_samples(out).values()}) > 1
    assert build(dataclasses.replace(cfg, limit=None), progress=False)["num_samples"] == 16


def test_progress_bar_shows_rate_and_eta(capsys):
    from meanpool.build import _progress

    bar = _progress(10, enabled=True, world=1)
    for _ in range(3):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "img/s" in err and "<" in err  # "elapsed<remaining, N img/s"


def test_a_torn_failure_record_is_ended_and_its_image_redone(tmp_path, tiny_ckpt):
    root = make_imagenet(tmp_path / "in", per_class=1, val_per_class=0)
    (root / "train" / "n02690373" / "bad.JPEG").write_bytes(b"")
    out = tmp_path / "out"
    cfg = _cfg(root, out, tiny_ckpt, subset="train")
    build(cfg, progress=False)
    log = out / "failures.jsonl"
    log.write_bytes(log.read_bytes()[:-10])  # as if killed in the middle of the append
    assert build(cfg, progress=False)["num_failures"] == 1
    assert [r["path"] for r in read_jsonl(log)] == ["train/n02690373/bad.JPEG"]


def test_sam_failures_are_recorded_then_retried_on_resume(tmp_path, tiny_ckpt, monkeypatch):
    import meanpool.segment

    root = make_imagenet(tmp_path / "in", per_class=1, val_per_class=0)  # 16 images, 48 px high
    d = root / "train" / "n02690373"
    (d / "empty.JPEG").write_bytes(b"")  # a read failure: stays skipped
    Image.fromarray(synthetic_image(56, 64, seed=1)).save(d / "x.JPEG")  # the only 56 px image
    out = tmp_path / "out"
    cfg = _cfg(root, out, tiny_ckpt, subset="train")
    real = meanpool.segment.generate_masks

    def flaky(sam, image, seg):
        if image.shape[0] == 56:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(sam, image, seg)

    monkeypatch.setattr(meanpool.segment, "generate_masks", flaky)
    first = build(cfg, progress=False)
    log = {r["path"]: r for r in read_jsonl(out / "failures.jsonl")}
    assert log["train/n02690373/x.JPEG"]["stage"] == "segment"
    assert "out of memory" in log["train/n02690373/x.JPEG"]["reason"]
    assert log["train/n02690373/empty.JPEG"]["stage"] == "read"
    assert (first["num_samples"], first["num_failures"]) == (16, 2)

    monkeypatch.setattr(meanpool.segment, "generate_masks", real)
    second = build(cfg, progress=False)
    assert (second["num_samples"], second["num_failures"]) == (17, 1)
    assert "train_n02690373_x_JPEG" in read_samples(out)


# ------------------------------------------------------------------ the paper's lists
def test_lists_builds_pool_exactly_the_listed_subsets(pooled_folder):
    from meanpool.loader import read_samples as samples_of

    _, pooled, picks = pooled_folder
    for subset in ("discovery", "evaluation", "val"):
        sources = [json.loads(s["json"])["source"] for s in samples_of(pooled / subset)]
        assert sorted(sources) == sorted(picks[subset]), subset
        manifest = json.loads((pooled / subset / "manifest.json").read_text())
        assert manifest["settings"]["index"] == {"selection": "paper"}
        missing = manifest["inputs"].get("missing")
        if subset == "val":  # no list: the validation images of the 202 listed WNIDs
            assert missing is None and len(sources) == 16
        else:
            listed = {"discovery": 13_929, "evaluation": 1_549}[subset]
            assert missing["list"] == f"{subset}.tsv.gz" and missing["listed"] == listed
            assert missing["count"] == len(missing["files"]) == listed - 16


def test_a_random_draw_cannot_resume_a_lists_build(pooled_folder, tmp_path, tiny_ckpt):
    import shutil

    root, pooled, _ = pooled_folder
    out = tmp_path / "evaluation"
    shutil.copytree(pooled / "evaluation", out)
    cfg = BuildConfig(imagenet_dir=str(root), out=str(out), model_type="tiny_test",
                      checkpoint=str(tiny_ckpt), subset="evaluation")  # fmt: skip
    with pytest.raises(
        BuildError, match=r"its index: \{'selection': 'paper'\}; this run's: \{'disc"
    ):
        build(cfg, progress=False)


def test_build_command_with_the_lists(tmp_path, tiny_ckpt):
    make_listed_imagenet(tmp_path / "in")
    args = ["build", "--imagenet-dir", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
            "--sam-checkpoint", str(tiny_ckpt), *FAST_CLI, "--points-per-side", "4",
            "--subset", "evaluation", "--selection", "paper"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "1,533 of the 1,549 images" in result.output
    assert not (tmp_path / "out").exists()  # stopped before anything was written
    result = CliRunner().invoke(main, [*args, "--allow-missing", "--limit", "5"])
    assert result.exit_code == 0, result.output
    assert "5 samples in 1 shards, 0 skipped" in result.output
    assert "1,533 listed images missing" in result.output
