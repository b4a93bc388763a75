"""`subind-bench run table1 --preset paper ... --plan` and the input checks every run makes
before training, on a fake ImageNet tree holding a few of the paper's listed files, pooled builds
of its lists (tiny SAM), a cue-conflict folder and a resnet18-mini state dict."""

import pytest
import torch
from click.testing import CliRunner

from benchmarks.cli import main
from benchmarks.vision.models import ARCHS
from tests.benchmarks.vision.helpers import make_cue_conflict
from tests.meanpool.conftest import build_pooled_folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_ckpt):
    base = tmp_path_factory.mktemp("plan")
    root, pooled, picks = build_pooled_folder(base, tiny_ckpt)
    cue = make_cue_conflict(base / "cue", [("cat", "dog"), ("dog", "cat"), ("car", "car")])
    torch.manual_seed(0)
    weights = base / "rn.pth"
    torch.save(ARCHS.get("resnet18-mini").build(1000).state_dict(), weights)
    args = ["run", "table1", "--preset", "paper", "--imagenet-dir", str(root), "--pooled",
            str(pooled), "--cue-conflict-dir", str(cue), "--weights-resnet18", str(weights),
            "--models", "resnet18-mini"]  # fmt: skip
    return args, picks


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from meanpool.model import build_tiny_sam

    path = tmp_path_factory.mktemp("sam") / "tiny_test.pth"
    torch.save(build_tiny_sam(seed=0).state_dict(), path)
    return path


def test_plan_checks_every_input_and_trains_nothing(inputs, tmp_path):
    args, picks = inputs
    out = tmp_path / "run"
    res = CliRunner().invoke(main, [*args, "--set", "allow_missing=true", "--out", str(out),
                                    "--plan"])  # fmt: skip
    assert res.exit_code == 0, res.output
    text = res.output
    # counts per split: the tree's listed training images minus the evaluation ones, one
    # discovery, evaluation and validation image per category
    train = len(picks["train"]) - len(picks["evaluation"])
    # nearly every listed training image is missing: allowed, and said loudly
    assert "[WARN] ImageNet tree" in text
    assert f"train (minus evaluation) {train}, discovery 16, evaluation 16, val 16" in text
    missing = 213_555 - len(picks["train"])
    assert f"{missing:,} of the 213,555 listed train images" in text
    assert "13,913 of the 13,929 listed discovery images" in text
    assert "WARNING: 99.98% of the train list is missing" in text
    assert "the same 16 validation images (eval_set paper" in text
    for subset in ("discovery", "evaluation", "val"):
        assert f"[ok] pooled {subset}: 16 images" in text
    assert (
        "[ok] cue-conflict stimuli: 3 stimuli (Geirhos et al.'s set has 1,280), 1 same-class"
        in text
    )
    assert "[ok] weights of resnet18-mini" in text and "1000-class head" in text
    assert "| ResNet18 adaptation | adapt_resnet | full | head | full |" in text
    # adaptation 5 epochs x 1 batch; discovery 100 epochs x 1 batch x (3 lambdas + control);
    # 6 trained runs x 33,160 steps, and data mixture's released recipe: 5 epochs x 1 batch
    # (the 30 training images + the 16 pooled discovery images, batch 128)
    assert "| resnet18-mini | 5 | 400 | 7 | 198,965 |" in text
    assert "Every input check passed." in text
    assert not (out / "results.jsonl").exists() and not list(out.glob("resnet18-mini/*"))


def test_a_missing_input_is_one_line_before_any_training(inputs, tmp_path):
    args, _ = inputs
    out = tmp_path / "run"
    plan = CliRunner().invoke(main, [*args, "--out", str(out), "--plan"])
    assert plan.exit_code == 1 and "[FAIL] ImageNet tree:" in plan.output
    assert "input check(s) failed" in plan.output
    res = CliRunner().invoke(main, [*args, "--out", str(out), "--no-progress"])
    assert res.exit_code == 1
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: ImageNet tree:") and "--allow-missing" in line
    assert not list(out.glob("resnet18-mini/*"))  # nothing trained
    flag = CliRunner().invoke(main, [*args, "--allow-missing", "--out", str(out), "--plan"])
    assert flag.exit_code == 0 and "Every input check passed." in flag.output, flag.output
    other = CliRunner().invoke(main, [*args, "--allow-missing", "--out", str(out),
                                      "--set", "selection=random", "--set",
                                      "discovery_per_class=1", "--set",
                                      "evaluation_per_class=1", "--plan"])  # fmt: skip
    assert other.exit_code == 1 and "[FAIL] pooled evaluation" in other.output
    assert "rebuild it" in other.output


def test_real_data_options_need_the_paper_preset(tmp_path):
    res = CliRunner().invoke(main, ["run", "table1", "--imagenet-dir", str(tmp_path)])
    assert res.exit_code == 2 and "--imagenet-dir given without --preset" in res.output
    assert "pass --preset paper" in res.output
    res = CliRunner().invoke(main, ["run", "table1", "--preset", "mini", "--set",
                                    f"pooled={tmp_path}"])  # fmt: skip
    assert res.exit_code == 2 and "mini preset generates its own synthetic world" in res.output
    res = CliRunner().invoke(main, ["run", "table1", "--preset", "mini", "--allow-missing"])
    assert res.exit_code == 2 and "would ignore --allow-missing" in res.output
    res = CliRunner().invoke(main, ["run", "fig3", "--plan"])
    assert res.exit_code == 1 and "--plan is not available for fig3" in res.output


def test_a_run_records_the_counts_and_what_was_missing(inputs, tmp_path):
    from benchmarks.experiments import EXPERIMENTS
    from benchmarks.vision.checks import require_inputs

    args, picks = inputs
    given = dict(zip(args[4::2], args[5::2], strict=True))  # --option value pairs after --preset
    cfg = EXPERIMENTS.get("table1").resolve(
        "paper",
        {"imagenet_dir": given["--imagenet-dir"], "pooled": given["--pooled"],
         "cue_conflict_dir": given["--cue-conflict-dir"],
         "weights_resnet18": given["--weights-resnet18"], "models": ("resnet18-mini",)},
        ("allow_missing=true",),
    )  # fmt: skip
    checks = {c.what: c for c in require_inputs(cfg, tmp_path)}
    record = checks["ImageNet tree"].record
    assert record["counts"]["discovery"] == 16 and record["selection"] == "paper"
    assert record["missing"]["train"]["count"] == 213_555 - len(picks["train"])
    assert len(record["missing"]["evaluation"]["files"]) == 1_549 - 16


def test_plan_of_a_library_classifier_has_its_row_and_one_line_checks(inputs, tmp_path):
    """`--models torchvision:resnet50` on the paper preset: its recipe (ResNet's) in the plan;
    its default weights are not in this machine's torch hub cache: one failed line, no
    traceback."""
    args, _ = inputs
    given = [a for a in args if a not in ("--models", "resnet18-mini")]
    res = CliRunner().invoke(main, [*given, "--models", "torchvision:resnet50",
                                    "--allow-missing", "--out", str(tmp_path), "--plan"])  # fmt: skip
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "| torchvision:resnet50 | subtask-induction | inherit | 0 | yes |" in res.output
    # ResNet's recipe: 5 adaptation epochs, 100 discovery epochs x (3 lambdas + control)
    assert "| torchvision:resnet50 | 5 | 400 | 7 | 198,965 |" in res.output
    weights = next(line for line in res.output.splitlines() if "weights of torchvision" in line)
    if weights.startswith("- [FAIL]"):  # not cached here: one line saying how to fetch them
        assert res.exit_code == 1 and "torch hub cache" in weights
    else:
        assert res.exit_code == 0


def test_a_run_reads_each_weight_file_once_and_indexes_the_tree_once(inputs, tmp_path, monkeypatch):
    """The input checks and the run share one resolver: the weight file is read once and the
    ImageNet tree walked once, through every stage and evaluation."""
    from benchmarks.experiments import EXPERIMENTS
    from benchmarks.vision import inputs as inputs_module
    from benchmarks.vision.models import sources
    from benchmarks.vision.runs import run_table1

    args, _ = inputs
    given = dict(zip(args[4::2], args[5::2], strict=True))
    cfg = EXPERIMENTS.get("table1").resolve(
        "paper",
        {"imagenet_dir": given["--imagenet-dir"], "pooled": given["--pooled"],
         "cue_conflict_dir": given["--cue-conflict-dir"],
         "weights_resnet18": given["--weights-resnet18"], "models": ("resnet18-mini",),
         "strategies": ("scratch", "linear-ft")},
        ("allow_missing=true", "adapt_epochs_resnet=1", "discovery_epochs_resnet=1",
         "penalties=1e-8", "random_init_control=false", "steps=2", "eval_every=2",
         "batch_size_resnet=8", "eval_batch_size=16", "loader_workers=0", "device=cpu",
         "transfer_transforms=source"),
    )  # fmt: skip
    reads, walks = [], []
    real_read, real_index = sources.read_weights, inputs_module.build_index
    monkeypatch.setattr(sources, "read_weights", lambda p: reads.append(p) or real_read(p))
    monkeypatch.setattr(inputs_module, "build_index",
                        lambda *a, **k: walks.append(a) or real_index(*a, **k))  # fmt: skip
    # every other way to list the tree counts as a walk too
    import meanpool.imagenet
    from benchmarks.vision import evaluate

    for module, name in [(meanpool.imagenet, "scan"), (meanpool.imagenet, "select"),
                         (evaluate, "select")]:  # fmt: skip
        real = getattr(module, name)
        monkeypatch.setattr(module, name,
                            lambda *a, real=real, **k: walks.append(a) or real(*a, **k))  # fmt: skip
    records, _ = run_table1(cfg, tmp_path / "run", progress=False)
    assert len(records) == 2 and all(r["original_accuracy"] is not None for r in records)
    assert [str(p) for p in reads] == [given["--weights-resnet18"]]
    assert len(walks) == 1
