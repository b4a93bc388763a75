import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from meanpool.cli import main
from meanpool.preview import preview_panel

from .conftest import synthetic_image


def test_panel_is_original_boundaries_pooled():
    image = synthetic_image(10, 12)
    pooled = np.full_like(image, 7)
    labels = np.zeros((10, 12), np.int32)
    labels[:, 6:] = 1
    panel = preview_panel(image, pooled, labels)
    assert panel.shape == (10, 3 * 12 + 2 * 4, 3)
    np.testing.assert_array_equal(panel[:, :12], image)
    middle = panel[:, 16:28]
    assert np.all(middle[:, 5] == [255, 0, 0]) and np.array_equal(middle[:, 0], image[:, 0])
    np.testing.assert_array_equal(panel[:, 32:], pooled)


def test_preview_command_writes_a_png(tmp_path, tiny_ckpt):
    src = tmp_path / "in.jpg"
    Image.fromarray(synthetic_image(48, 64)).save(src)
    out = tmp_path / "preview.png"
    args = ["preview", str(src), "--sam-checkpoint", str(tiny_ckpt), "--model-type", "tiny_test",
            "--out", str(out), "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
            "--points-per-side", "4"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    png = Image.open(out)
    assert png.size == (3 * 64 + 8, 48) and "segments" in result.output
    record = json.loads(png.text["meanpool"])
    assert record["segment"]["points_per_side"] == 4 and "git_commit" in record["provenance"]
