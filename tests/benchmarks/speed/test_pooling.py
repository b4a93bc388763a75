import numpy as np
from click.testing import CliRunner

from benchmarks.speed import pooling
from benchmarks.speed.result import read_result
from tests.scripts import load_script


def _load():
    return pooling


def test_benchmark_times_both_paths_on_the_same_images(tmp_path):
    out = tmp_path / "speed.json"
    args = ["--device", "cpu", "--model-type", "tiny_test", "--random-weights", "--n-images", "2",
            "--size", "64x80", "--json-out", str(out)]  # fmt: skip
    result = CliRunner().invoke(_load().main, args)
    assert result.exit_code == 0, result.output
    res = read_result(out, "pooling")  # the one shape: every number with its unit
    both = res.row("fast vs reference")
    assert both.value("same_masks") is True and both.value("speedup") > 0
    assert both.fields["speedup"].unit == "x"
    assert (
        res.config["load"] == "random" and res.config["settings"]["fast"]["pred_iou_thresh"] == 0.0
    )
    for path in ("fast", "reference"):
        s = res.row(path)
        assert s.kind == "path" and s.fields["ms_per_image"].unit == "ms/image"
        assert s.value("images") == 2 and s.value("timed_runs") == 2 and s.value("images_per_s") > 0
        assert s.value("min_ms") <= s.value("ms_per_image") <= s.value("max_ms")
        assert s.value("encoder_ms") > 0 and s.value("decoder_ms") > 0
    images = res.rows_of("image")
    assert [(r.value("path"), r.value("image")) for r in images] == [
        ("fast", 0), ("fast", 1), ("reference", 0), ("reference", 1)
    ]  # fmt: skip
    for r in images:
        split = r.value("encoder_ms") + r.value("decoder_ms") + r.value("postprocess_ms")
        assert r.value("encoder_ms") > 0 and r.value("postprocess_ms") >= 0
        assert abs(split - r.value("total_ms")) < 1e-6
    assert "fast/reference speed-up" in result.output and "same masks: True" in result.output
    assert res.summary[-1] in result.output and res.summary[-1].startswith("fast/reference")
    # the GPU check's table finds every figure it shows
    (row,) = load_script("tools/gpu_check_table.py").meanpool_rows(res)
    assert row.startswith("fast ") and "?" not in row and "same partitions: True" in row


def test_realistic_load_keeps_the_paper_thresholds_and_many_masks(tmp_path):
    out = tmp_path / "speed.json"
    args = ["--device", "cpu", "--model-type", "tiny_test", "--random-weights", "--load",
            "realistic", "--n-images", "1", "--warmup", "2", "--repeats", "2", "--dtype",
            "bfloat16", "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(_load().main, args)  # times the 3rd image (seed 2), 41 masks
    assert result.exit_code == 0, result.output
    res = read_result(out, "pooling")
    settings = res.config["settings"]
    assert settings["reference"]["pred_iou_thresh"] == 0.88
    assert settings["fast"]["encoder_dtype"] == "bfloat16"
    # bfloat16 changes SAM's numbers but not the stand-in's masks, which come from the pixels.
    fast = res.row("fast")
    assert res.row("fast vs reference").value("same_masks") is True
    assert fast.value("masks_per_image") >= 10 and fast.value("timed_runs") == 2
    assert res.config["batches"]["fast"] == {"encoder": 1, "decoder": 64}
    assert res.row("stage masks").value("mean") == 1536
    assert res.row("stage clean_up").value("mean") == fast.value("masks_per_image")
    assert res.row("stage clean_up").fields["mean"].unit == "masks/image"
    assert res.row("fast image 0 repeat 1").value("after_masks") == 1536
    assert fast.value("encoder_floor_ratio") > 1
    assert "masks per image (fast path, mean): prompts 512.0" in result.output


def test_paths_alternate_and_warmup_is_not_timed():
    bench = _load()
    calls = []

    def fake(sam, image, cfg, device, counts):
        calls.append((int(image[0, 0, 0]), cfg))
        return {"total_ms": 1.0, "encoder_ms": 0.5, "decoder_ms": 0.25, "postprocess_ms": 0.25}, []

    images = [np.full((2, 2, 3), i, np.uint8) for i in range(3)]
    bench._time_one = fake
    records, _ = bench.compare(
        None, images[1:], {"fast": "F", "reference": "R"}, None, images[:1], 2
    )
    assert calls[:2] == [(0, "F"), (0, "R")]  # the warm-up image, untimed
    timed = calls[2:]
    assert timed == [(1, "F"), (1, "R"), (2, "R"), (2, "F"), (1, "F"), (1, "R"), (2, "R"), (2, "F")]
    assert [r["image"] for r in records["fast"]] == [0, 1, 0, 1]


def test_backend_option_times_one_path(tmp_path):
    args = ["--device", "cpu", "--model-type", "tiny_test", "--random-weights", "--n-images", "1",
            "--size", "64x64", "--backend", "reference"]  # fmt: skip
    args += ["--json", str(tmp_path / "one.json")]
    result = CliRunner().invoke(_load().main, args)
    assert result.exit_code == 0, result.output
    assert "reference" in result.output and "speed-up" not in result.output
    res = read_result(tmp_path / "one.json", "pooling")
    assert [r.name for r in res.rows_of("path")] == ["reference"]
    assert res.rows_of("comparison") == res.rows_of("stage") == []


def test_benchmark_needs_weights_or_random(tmp_path):
    result = CliRunner().invoke(_load().main, ["--device", "cpu", "--model-type", "tiny_test"])
    assert result.exit_code == 2 and "--random-weights" in result.output


def test_benchmark_reads_a_folder_and_skips_non_images(tmp_path):
    from PIL import Image

    from tests.meanpool.conftest import synthetic_image

    for i in range(2):
        Image.fromarray(synthetic_image(48, 64, seed=i)).save(tmp_path / f"{i}.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    images = _load()._images(str(tmp_path), 5, (0, 0), seed=0)
    assert [im.shape for im in images] == [(48, 64, 3), (48, 64, 3)]


def test_module_timer_counts_nested_modules_once():
    import time

    import torch

    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.02)
            return x

    inner = Slow()
    outer = torch.nn.Sequential(inner, Slow())
    timer = _load()._ModuleTimer({"outer": outer, "inner": inner}, torch.device("cpu"))
    outer(torch.zeros(1))  # inner runs inside outer: its 20 ms are outer's
    inner(torch.zeros(1))  # alone: its own
    timer.remove()
    assert set(timer.totals) == {"outer", "inner"}
    assert timer.totals["outer"] >= 0.04 and 0.02 <= timer.totals["inner"] < 0.04
    before = timer.totals["outer"]
    outer(torch.zeros(1))
    assert timer.totals["outer"] == before  # removed hooks time nothing more
