import importlib.util
import json
from pathlib import Path

from click.testing import CliRunner

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "meanpool_speed.py"


def _load():
    spec = importlib.util.spec_from_file_location("meanpool_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_times_both_paths_on_the_same_images(tmp_path):
    out = tmp_path / "speed.json"
    args = ["--device", "cpu", "--model-type", "tiny_test", "--random-weights", "--n-images", "2",
            "--size", "64x80", "--json-out", str(out)]  # fmt: skip
    result = CliRunner().invoke(_load().main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["same_masks"] is True and data["speedup_fast_over_reference"] > 0
    for path in ("fast", "reference"):
        s = data[path]
        assert s["images"] == 2 and s["images_per_s"] > 0
        assert s["encoder_ms"] > 0 and s["decoder_ms"] > 0 and s["postprocess_ms"] >= 0
        assert (
            abs(s["encoder_ms"] + s["decoder_ms"] + s["postprocess_ms"] - s["ms_per_image"]) < 1e-6
        )
    assert "fast/reference speed-up" in result.output


def test_benchmark_needs_weights_or_random(tmp_path):
    result = CliRunner().invoke(_load().main, ["--device", "cpu", "--model-type", "tiny_test"])
    assert result.exit_code == 2 and "--random-weights" in result.output


def test_benchmark_reads_a_folder_and_skips_non_images(tmp_path):
    from PIL import Image

    from .conftest import synthetic_image

    for i in range(2):
        Image.fromarray(synthetic_image(48, 64, seed=i)).save(tmp_path / f"{i}.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    images = _load()._images(str(tmp_path), 5, (0, 0), seed=0)
    assert [im.shape for im in images] == [(48, 64, 3), (48, 64, 3)]
