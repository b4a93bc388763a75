"""`subind-bench evaluate` on models of any family: a torchvision model by name (a state dict,
and its default weights from the torch hub cache), a transformers checkpoint converted into a
registered architecture, and a transformers model run as it is (hf:)."""

import json

import pytest
import torch
import torchvision
from click.testing import CliRunner

from benchmarks.cli import main
from benchmarks.vision.evaluate import eval_images_of_tree, evaluate_model, load_decision_mapping
from benchmarks.vision.models import arch_for
from benchmarks.vision.models.sources import load_pretrained
from tests.meanpool.conftest import make_imagenet

from .helpers import make_cue_conflict, write_pooled_val
from .models.test_sources import RESNET_PRE, VIT_PRE, hf_resnet, hf_vit, save_checkpoint

PAIRS = [("cat", "dog"), ("dog", "cat"), ("knife", "knife"), ("truck", "bird")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval-sources")
    imagenet = make_imagenet(base / "imagenet", per_class=1, val_per_class=1)
    write_pooled_val(imagenet, base / "pooled")
    return imagenet, base / "pooled", make_cue_conflict(base / "cc", PAIRS)


def _evaluate(sources, out, arch, *extra):
    imagenet, pooled, cc = sources
    args = ["evaluate", "--arch", arch, "--cue-conflict-dir", str(cc), "--imagenet-dir",
            str(imagenet), "--pooled", str(pooled), "--out", str(out), "--no-progress",
            "--batch-size", "8", *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


def _direct(sources, tmp_path, model, arch, mapping=None):
    imagenet, pooled, cc = sources
    images = eval_images_of_tree("paper", imagenet, pooled=pooled)
    return evaluate_model(model, arch, images=images, cue_conflict_dir=cc, mapping=mapping,
                          out_dir=tmp_path / "api", tag="t")  # fmt: skip


def _same(record, direct):
    for key in ("original_accuracy", "pooled_accuracy", "cue_conflict"):
        assert record[key] == direct[key], key


def test_evaluate_a_torchvision_model_by_name(sources, tmp_path, monkeypatch):
    name = "torchvision:shufflenet_v2_x0_5"
    arch = arch_for(name)
    torch.manual_seed(0)
    own = arch.build(16).eval()
    torch.save(own.state_dict(), tmp_path / "own.pth")
    res = _evaluate(sources, tmp_path / "out", name, "--weights", str(tmp_path / "own.pth"))
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "out" / "metrics" / "own.json").read_text())
    assert (
        rec["arch"] == name and rec["head_outputs"] == 16 and rec["decision"].startswith("direct")
    )
    assert rec["preprocessing"] == arch.preprocessing.to_dict()
    _same(rec, _direct(sources, tmp_path, own, arch))

    # No --weights: the default weights from the torch hub cache, a 1000-class head, mapped.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    res = _evaluate(sources, tmp_path / "out", name)
    assert res.exit_code == 1 and "not in the torch hub cache" in res.output
    torch.manual_seed(1)
    big = arch.build(1000).eval()
    url = torchvision.models.get_model_weights("shufflenet_v2_x0_5").DEFAULT.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(big.state_dict(), tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1])
    res = _evaluate(sources, tmp_path / "out", name, "--tag", "default")
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "out" / "metrics" / "default.json").read_text())
    assert rec["head_outputs"] == 1000 and rec["decision"] == "decision mapping"
    assert rec["weights"] == "pretrained" and rec["weights_path"].endswith(".pth")
    _same(rec, _direct(sources, tmp_path, big, arch, load_decision_mapping()))


def test_evaluate_a_transformers_checkpoint(sources, tmp_path):
    # A ViT converted into the registered vit_b_16-mini (patch 4, 2 layers, width 64, 32 px).
    vit = hf_vit(hidden_size=64, num_attention_heads=4, intermediate_size=128, patch_size=4,
                 num_labels=16)  # fmt: skip
    folder = save_checkpoint(vit, tmp_path / "tiny-vit", VIT_PRE)
    res = _evaluate(sources, tmp_path / "out", "vit_b_16-mini", "--weights", str(folder))
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "out" / "metrics" / "tiny-vit.json").read_text())
    assert rec["preprocessing"]["resize"] == [32, 32] and rec["preprocessing"]["mean"] == [0.5] * 3
    p = load_pretrained(arch_for("vit_b_16-mini"), folder)
    _same(rec, _direct(sources, tmp_path, p.model, p.arch))

    # A transformers ResNet run as it is, its head answering 16 classes.
    resnet = hf_resnet(num_labels=16)
    folder = save_checkpoint(resnet, tmp_path / "tiny-resnet", RESNET_PRE)
    res = _evaluate(sources, tmp_path / "out", f"hf:{folder}")
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "out" / "metrics" / "tiny-resnet.json").read_text())
    assert rec["head_outputs"] == 16 and rec["preprocessing"]["interpolation"] == "bicubic"
    p = load_pretrained(arch_for(f"hf:{folder}"), None)
    _same(rec, _direct(sources, tmp_path, p.model, p.arch))
    assert "| tiny-resnet |" in res.output


def test_evaluate_source_errors(sources, tmp_path):
    cases = [
        (["resnet18"], 1, "resnet18 needs weights"),
        (["hf:org/absent"], 1, "not in the local Hugging Face cache; if the name is right, fetch "
                               "it first with hf download"),
        (["torchvision:resnet_18"], 1, "Did you mean 'resnet18'"),
        (["vit_b_16-mini", "--weights", "hf://org/absent"], 1, "hf download org/absent"),
        (["resnet-18", "--weights", "x.pth"], 2, "Did you mean"),
    ]  # fmt: skip
    for args, code, message in cases:
        res = _evaluate(sources, tmp_path / "out", *args)
        assert res.exit_code == code and message in res.output, (args, res.output)
        if code == 1:
            assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "metrics").exists()
