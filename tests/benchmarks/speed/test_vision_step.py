import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from benchmarks.speed.result import read_result
from benchmarks.speed.vision_step import (
    ProjectionAssumptions,
    discovery_steps_per_epoch,
    main,
    project_table1,
    projection_batches,
    projection_text,
    step_times,
)
from benchmarks.vision.config import PRESETS
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[3]
PAPER = PRESETS.get("paper")


def test_step_times_times_every_step_after_the_warmup():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 16))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model[1].weight.detach().clone()
    times = step_times(model, opt, image_size=4, batch=2, bf16=False, steps=3, warmup=1)
    assert len(times) == 3 and all(t > 0 for t in times)
    assert not torch.equal(before, model[1].weight)  # the step trains


def test_the_paper_presets_workload_and_the_batches_it_needs():
    # Trained runs per model: subtask induction and random subnetwork in both unmasked modes,
    # scratch, data mixture, unmasked-only. ResNet: 6 x 33,160 steps at batch 128, and data
    # mixture's released recipe, 5 epochs of the 212,006 + 13,929 pooled images at batch 128
    # (1,766 steps an epoch). ViT: 5 x 33,160 at 512, scratch 16,600 at 512, data mixture 1
    # epoch at 128. Discovery: 3 lambdas + the random-init control on the 13,929 listed
    # discovery images, 100 epochs at batch 32 (435 full batches) for both.
    assert discovery_steps_per_epoch(13_929, 32) == 435 and discovery_steps_per_epoch(10, 32) == 1
    need = projection_batches(PAPER, 8)
    assert need == {
        "resnet18": {128: "train", 16: "DDP share (/8)", 32: "discovery"},
        "vit_b_16": {512: "train", 64: "DDP share (/8)", 128: "train", 16: "DDP share (/8)",
                     32: "discovery"},
    }  # fmt: skip
    step_s = {(m, b): 1.0 for m, bs in need.items() for b in bs}
    p = project_table1(PAPER, step_s)
    mixture = -(-(212_006 + 13_929) // 128)  # 1,766
    trained = {"resnet18": 6 * 33_160 + 5 * mixture, "vit_b_16": 5 * 33_160 + 16_600 + mixture}
    for m in ("resnet18", "vit_b_16"):
        w = p["models"][m]
        assert (w["trained_runs"], w["train_steps"]) == (7, trained[m])
        assert (w["discovery_runs"], w["discovery_steps"]) == (4, 4 * 100 * 435)
        assert w["discovery_hours"] == pytest.approx(4 * 100 * 435 * 1.3 / 3600)
    assert p["left_out"].startswith("data loading, evaluation")


def test_projection_by_hand():
    # steps 100 x 7 trained runs = 700 steps per model; discovery: 10 x 16 = 160 images at
    # batch 32 = 5 steps per epoch x 2 epochs x (2 lambdas + control) = 30 steps per model.
    cfg = dataclasses.replace(
        PAPER, steps=100, selection="random", discovery_per_class=10, penalties=(1e-6, 1e-7),
        transfer_penalty=1e-7, discovery_epochs_resnet=2, discovery_epochs_vit=2,
        discovery_batch_size_vit=32, mixture_recipe="transfer", scratch_steps_vit=None,
    )  # fmt: skip
    step_s = {("resnet18", 128): 0.36, ("resnet18", 32): 0.1, ("resnet18", 16): 0.09,
              ("vit_b_16", 512): 1.8, ("vit_b_16", 32): 0.2, ("vit_b_16", 64): 0.3}  # fmt: skip
    p = project_table1(cfg, step_s)
    r, v = p["models"]["resnet18"], p["models"]["vit_b_16"]
    assert r["train_hours"] * 3600 == pytest.approx(700 * 0.36)  # 252 s
    assert r["discovery_hours"] * 3600 == pytest.approx(30 * 0.1 * 1.3)  # 3.9 s
    assert v["train_hours"] * 3600 == pytest.approx(700 * 1.8)  # 1260 s
    assert v["discovery_hours"] * 3600 == pytest.approx(30 * 0.2 * 1.3)  # 7.8 s
    assert p["hours_1gpu"] * 3600 == pytest.approx(252 + 3.9 + 1260 + 7.8)
    # The 6 discoveries (10 steps each: ResNet 1.3 s, ViT 2.6 s) are dealt to 8 GPUs, one
    # each: 2.6 s; then DDP: every run on 8 GPUs at batch 16 / 64.
    assert p["hours_ddp"] * 3600 == pytest.approx(2.6 + 700 * 0.09 + 700 * 0.3)
    # Runs dealt: plan order is 9 ResNet runs (index 4 linear-ft and 8 pretrained untrained,
    # the others 36 s) then 9 ViT runs (13 and 17 untrained, the others 180 s); rank k gets
    # k, k+8, k+16: rank 0 = 36 + 0 + 180 = 216 s, the most any rank gets.
    assert p["hours_runs_dealt"] * 3600 == pytest.approx(2.6 + 216)
    slower = project_table1(cfg, step_s, ProjectionAssumptions(mask_step_factor=2.0, gpus=4))
    assert slower["models"]["resnet18"]["discovery_hours"] * 3600 == pytest.approx(6.0)
    assert slower["hours_ddp"] is None  # batch 128 / 4 = 32 is timed, 512 / 4 = 128 is not
    assert slower["models"]["resnet18"]["ddp_train_hours"] * 3600 == pytest.approx(700 * 0.1)
    text = projection_text({"variant": "x", "dtype": "bf16", **p})
    assert text.startswith("Table 1 projection (x, bf16): 1 GPU 0.42 h (resnet18 0.07 h")
    assert text.endswith("8 GPUs: DDP 0.08 h, runs dealt 0.06 h")
    with pytest.raises(ValueError, match="no step time for vit_b_16 at batch 32"):
        project_table1(cfg, {k: s for k, s in step_s.items() if k != ("vit_b_16", 32)})


def test_module_runs_the_mini_architectures_on_cpu(tmp_path):
    path = tmp_path / "v.json"
    args = ["--device", "cpu", "--archs", "resnet18-mini,vit_b_16-mini", "--batch", "4",
            "--steps", "1", "--warmup", "1", "--json", str(path)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "benchmarks.speed.vision_step", *args],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "| resnet18-mini | 4 | fp32 | cpu | requested |" in res.stdout
    result = read_result(path, "vision_step")  # the one shape: every number with its unit
    settings = result.rows_of("setting")
    assert [(r.value("arch"), r.value("batch"), r.value("dtype")) for r in settings] == [
        ("resnet18-mini", 4, "fp32"), ("vit_b_16-mini", 4, "fp32")
    ]  # fmt: skip
    r = settings[0]
    assert r.name == "resnet18-mini batch 4 fp32" and r.value("roles") == "requested"
    s = r.value("s_per_step")
    assert s > 0 and r.value("images_per_s") == pytest.approx(4 / s)
    assert r.fields["s_per_step"].unit == "s/step" and r.fields["images_per_s"].unit == "images/s"
    assert len(r.value("s_per_step_all")) == 1
    assert result.rows_of("projection") == [] and result.provenance["versions"]["torch"]


def test_cli_projects_a_preset_from_the_batches_it_times(tmp_path):
    path = tmp_path / "v.json"
    args = ["--archs", "resnet18-mini,vit_b_16-mini", "--preset", "tiny", "--project",
            "--project-set", "batch_size_vit=8", "--gpus", "2", "--dtypes", "fp32,bf16",
            "--steps", "1", "--warmup", "0", "--json", str(path)]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    result = read_result(path, "vision_step")
    timed = {(r.value("arch"), r.value("batch")) for r in result.rows_of("setting")}
    # tiny: batch 16 (per GPU: 8) for both, discovery batch 16; the variant: ViT at 8 (4)
    assert timed == {("resnet18-mini", 16), ("resnet18-mini", 8),
                     ("vit_b_16-mini", 16), ("vit_b_16-mini", 8), ("vit_b_16-mini", 4)}  # fmt: skip
    projections = result.rows_of("projection")
    assert [(p.value("variant"), p.value("dtype")) for p in projections] == [
        ("tiny", "fp32"), ("tiny", "bf16"), ("batch_size_vit=8", "fp32"),
        ("batch_size_vit=8", "bf16")
    ]  # fmt: skip
    assert all(p.value("hours_ddp") > 0 and p.value("gpus") == 2 for p in projections)
    assert projections[0].fields["hours_1gpu"].unit == "h"
    assert projections[0].value("mask_step_factor") == 1.3
    # a row per model and projection, its hours summing to the projection's 1-GPU hours
    models = [m for m in result.rows_of("projection_model") if m.value("variant") == "tiny"]
    assert [(m.value("model"), m.value("dtype")) for m in models] == [
        ("resnet18-mini", "fp32"), ("vit_b_16-mini", "fp32"),
        ("resnet18-mini", "bf16"), ("vit_b_16-mini", "bf16")
    ]  # fmt: skip
    one_gpu = sum(m.value("hours") for m in models[:2])
    assert one_gpu == pytest.approx(projections[0].value("hours_1gpu"))
    assert "Table 1 projection (batch_size_vit=8, bf16): 1 GPU" in res.output
    assert "mask step = 1.3x a plain step, assumed; left out: data loading" in res.output
    assert result.summary[-1] in res.output and result.summary[0].startswith("Table 1 projection")
    rows = load_script("tools/gpu_check_table.py").vision_step_rows(result)  # the GPU check's
    assert len(rows) == 5 + 4 + 1 and "?" not in str(rows)  # settings, projections, assumptions
    assert rows[5].startswith("Table 1 projected (tiny, fp32): 1 GPU ")
    assert rows[-1].startswith("mask step = 1.30x a plain step (assumed); left out: data")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dtypes", "fp16"], "--dtypes takes fp32 and/or bf16"),
        (["--archs", "resnet19"], "unknown vision architecture 'resnet19'"),
        (["--batch", "zero"], "--batch takes 'preset' or a positive integer"),
        (["--preset", "papr"], "Did you mean 'paper'?"),
        (["--project"], "--project needs every model of the preset (resnet18, vit_b_16)"),
        (["--archs", "resnet18,vit_b_16", "--project", "--project-set", "lr=1"],
         "--project-set takes FIELD=N for an integer field"),
    ],
)  # fmt: skip
def test_bad_input_is_a_usage_error_naming_the_fix(args, message):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and message in res.output, res.output


def test_the_projection_takes_the_slower_of_the_model_step_and_the_loader():
    from benchmarks.speed.vision_step import ProjectionAssumptions, _projections

    cfg = dataclasses.replace(PAPER, models=("resnet18",), steps=100, selection="random",
                              discovery_per_class=10, mixture_recipe="transfer")  # fmt: skip
    results = [{"arch": "resnet18", "batch": b, "dtype": "fp32", "s_per_step": 0.1}
               for b in (128, 16, 32)]  # fmt: skip
    fast = _projections(results, [("paper", cfg)], ["fp32"], ProjectionAssumptions())[0]
    # a loader of 640 images/s: a 128-image batch takes 0.2 s, a 32-image one 0.05 s
    slow = _projections(results, [("paper", cfg)], ["fp32"],
                        ProjectionAssumptions(images_per_s=640.0))[0]  # fmt: skip
    train_fast, train_slow = (p["models"]["resnet18"]["train_hours"] for p in (fast, slow))
    assert train_slow == pytest.approx(2 * train_fast)  # the loader sets the pace
    disc_fast, disc_slow = (p["models"]["resnet18"]["discovery_hours"] for p in (fast, slow))
    assert disc_slow == pytest.approx(disc_fast)  # 0.1 s > 32 / 640: the model step does
    assert slow["loader_images_per_s"] == 640.0 and fast["loader_images_per_s"] is None
