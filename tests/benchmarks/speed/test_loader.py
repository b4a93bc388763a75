from click.testing import CliRunner

from benchmarks.speed import loader
from benchmarks.speed.result import read_result


def test_the_loader_benchmark_runs_on_cpu_and_writes_the_one_shape(tmp_path):
    out = tmp_path / "loader.json"
    res = CliRunner().invoke(loader.main, ["--images", "4", "--passes", "1", "--workers", "0",
                                           "--batch", "2", "--json", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    result = read_result(out, "loader")
    paths = {r.name: r for r in result.rows_of("path")}
    assert set(paths) == {"pil", "loader-0", "device-cpu"}
    assert all(r.value("images_per_s") > 0 for r in paths.values())
    per_gpu = result.row("projection").value("images_per_s_per_gpu")
    assert per_gpu == paths["pil"].value("images_per_s") * 16
    assert "images/s per core" in res.output and result.config["jpeg_kb"] > 20
