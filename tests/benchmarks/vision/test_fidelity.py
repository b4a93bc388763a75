"""The fidelity list (benchmarks/vision/fidelity.py) as the test matrix of Table 1's settings:
its page (docs/table1-fidelity.md) covers every row, and every setting it names has a probe, a
call into the code that reads the setting, whose answer must change when the setting does (a
setting the code ignored would give the same answer). Then the behaviours behind the settings
that a probe alone would not pin down (head vs whole-model adaptation, the class weights, the
subnetwork transferred, the mixture's start, the frozen ViT norms)."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch import nn

from benchmarks.harness import StageError, write_config
from benchmarks.vision import runs, stages, training
from benchmarks.vision.config import PRESETS, Table1Config
from benchmarks.vision.fidelity import FIDELITY, fidelity_rows
from benchmarks.vision.grid import plan_runs
from benchmarks.vision.inputs import Resolver, index_config, resolve_inputs, user_sources
from benchmarks.vision.models import ARCHS, arch_for, replace_head
from benchmarks.vision.report import saved_scoring
from benchmarks.vision.strategies import STRATEGIES, StrategyInputs
from benchmarks.vision.training import class_weights, recipe, train_config

DOC = Path(__file__).resolve().parents[3] / "docs" / "table1-fidelity.md"
TINY = PRESETS.get("tiny")
MODELS = {"resnet": "resnet18-mini", "vit": "vit_b_16-mini"}


def test_every_choice_is_a_setting_and_the_page_explains_it():
    fields = {f.name for f in dataclasses.fields(Table1Config)}
    text = DOC.read_text()
    for choice in FIDELITY:
        assert choice.setting in fields, choice
        assert f"`{choice.setting}`" in text, f"docs/table1-fidelity.md lacks {choice.setting}"


def test_rows_show_the_runs_values():
    paper = PRESETS.get("paper")
    rows = {r["setting"]: r for r in fidelity_rows(paper)}
    assert rows["adapt_resnet"]["value"] == "full" and rows["adapt_vit"]["value"] == "head"
    assert rows["unmasked"]["value"] == "inherit,reinit"
    assert rows["transfer_penalty"]["value"] == "1e-08"
    text = {r["setting"]: r for r in fidelity_rows(dataclasses.replace(paper, adapt_resnet="head"))}
    assert text["adapt_resnet"]["value"] == "head" == text["adapt_resnet"]["text"]


# ------------------------------------------------------------------------------ the probes
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny world's inputs (both mini models), resolved once."""
    out = tmp_path_factory.mktemp("fidelity")
    inputs = resolve_inputs(TINY, out)
    return SimpleNamespace(out=out, inputs=inputs, archs={m: arch_for(m) for m in TINY.models})


def _adapted(cfg, c, family):
    """(the backbone changed from the pretrained model?, adaptation record)."""
    entry = c.inputs.models[MODELS[family]]
    data = c.inputs.image_sets(entry.name, cfg)
    net, meta = stages.adapted_model(cfg, entry, data, c.out, False)
    pre = entry.pretrained.model.state_dict()
    head = entry.arch.head + "."
    changed = any(not torch.equal(v.cpu(), pre[k]) for k, v in net.state_dict().items()
                  if not k.startswith(head) and v.is_floating_point())  # fmt: skip
    return changed, meta


def _user_weights(cfg, model):
    cfg = dataclasses.replace(cfg, world=None, imagenet_dir="tree", pooled="pooled")
    return user_sources(cfg, {model: arch_for(model)}).weights[model]


def _fake_found():
    def sub(acc, density):
        return SimpleNamespace(meta={"val_accuracy": acc}, density=density)

    return {1e-6: sub(0.9, 0.3), 1e-8: sub(0.5, 0.1)}


def _gate(cfg, c):
    entry = c.inputs.models[MODELS["resnet"]]
    sub = SimpleNamespace(meta={"val_accuracy": 0.1}, density=0.2)
    try:
        stages.require_gain(cfg, entry, 1e-8, sub, 0.5, c.out)
    except StageError:
        return "stopped"
    return "went on"


def _transfer(cfg):
    c = train_config(recipe(cfg, "transfer", "resnet"), 10, None, None)
    return c.optimizer, c.lr, c.momentum, c.weight_decay


def _first_image_shape(cfg, c):
    return tuple(c.inputs.image_sets(MODELS["resnet"], cfg).evaluation[0][0].shape)


def _entry_crop(cfg, c):
    return Resolver(cfg, c.archs, c.inputs.sources).entry(MODELS["resnet"]).arch.train_crop


def _scoring(cfg, c):
    folder = c.out / f"scoring-{cfg.cue_conflict_scoring}"
    write_config(folder, "table1", "tiny", cfg)
    return saved_scoring(folder)


# setting -> (a value other than the tiny preset's, a probe(cfg, context) reading the setting)
PROBES = {
    "selection": ("paper", lambda cfg, c: index_config(cfg).selection),
    "weights_resnet18": ("r.pth", lambda cfg, c: _user_weights(cfg, "resnet18")),
    "weights_vit": ("v.pth", lambda cfg, c: _user_weights(cfg, "vit_b_16")),
    "adapt_resnet": ("head", lambda cfg, c: _adapted(cfg, c, "resnet")[0]),
    "adapt_vit": ("full", lambda cfg, c: _adapted(cfg, c, "vit")[0]),
    "adapt_images_resnet": ("train", lambda cfg, c: _adapted(cfg, c, "resnet")[1]["train_images"]),
    "adapt_images_vit": ("train", lambda cfg, c: _adapted(cfg, c, "vit")[1]["train_images"]),
    "adapt_optimizer": ("sgd", lambda cfg, c: stages.adapt_train_config(cfg, "vit", 9).optimizer),
    "adapt_lr_resnet": (0.05, lambda cfg, c: stages.adapt_train_config(cfg, "resnet", 9).lr),
    "adapt_lr_vit": (0.05, lambda cfg, c: stages.adapt_train_config(cfg, "vit", 9).lr),
    "adapt_lr_schedule": ("constant",
                          lambda cfg, c: stages.adapt_train_config(cfg, "vit", 9).lr_schedule),
    "adapt_epochs_resnet": (3, lambda cfg, c: stages.adapt_train_config(cfg, "resnet", 9).epochs),
    "adapt_epochs_vit": (3, lambda cfg, c: stages.adapt_train_config(cfg, "vit", 9).epochs),
    "adapt_batch_size_resnet": (8, lambda cfg, c: _adapted(cfg, c, "resnet")[1]["steps"]),
    "adapt_batch_size_vit": (8, lambda cfg, c: _adapted(cfg, c, "vit")[1]["steps"]),
    "select_on": ("val", lambda cfg, c: frozenset(
        stages.selection_set(cfg, c.inputs.image_sets(MODELS["resnet"], cfg)).sources)),
    "discovery_optimizer": ("adam",
                            lambda cfg, c: stages.discovery_config(cfg, "vit", 1).optimizer),
    "discovery_epochs_resnet": (3, lambda cfg, c: stages.discovery_config(cfg, "resnet", 1).epochs),
    "discovery_epochs_vit": (3, lambda cfg, c: stages.discovery_config(cfg, "vit", 1).epochs),
    "discovery_batch_size_resnet": (8, lambda cfg, c: len(stages.discovery_loader(
        cfg, "resnet", c.inputs.image_sets(MODELS["resnet"], cfg)))),
    "discovery_batch_size_vit": (8, lambda cfg, c: len(stages.discovery_loader(
        cfg, "vit", c.inputs.image_sets(MODELS["vit"], cfg)))),
    "discovery_augment": ("train", lambda cfg, c: repr(
        c.inputs.image_sets(MODELS["resnet"], cfg).pooled_discovery.augment)),
    "mask_init": (0.5, lambda cfg, c: stages.discovery_config(cfg, "vit", 1).mask_init),
    "beta_schedule": ("reaches-final",
                      lambda cfg, c: stages.discovery_config(cfg, "vit", 1).beta_schedule),
    "mask_classifier": (False, lambda cfg, c: stages.masked_selection(cfg, ARCHS.get(MODELS["vit"]))),
    "transfer_penalty": (1e-8, lambda cfg, c: stages.choose_penalty(cfg, _fake_found())),
    "require_subnetwork_gain": (True, _gate),
    "unmasked": (("inherit",), lambda cfg, c: {r.unmasked for r in plan_runs(cfg)
                                                if r.strategy == "subtask-induction"}),
    "freeze_vit_norms": (True, lambda cfg, c: runs.freezes_norms(cfg, "subtask-induction", "vit")),
    "optimizer": ("adamw", lambda cfg, c: _transfer(cfg)),
    "lr": (0.01, lambda cfg, c: _transfer(cfg)),
    "momentum": (0.5, lambda cfg, c: _transfer(cfg)),
    "weight_decay": (0.0, lambda cfg, c: _transfer(cfg)),
    "batch_size_resnet": (32, lambda cfg, c: recipe(cfg, "transfer", "resnet").batch_size),
    "batch_size_vit": (32, lambda cfg, c: recipe(cfg, "transfer", "vit").batch_size),
    "steps": (6, lambda cfg, c: recipe(cfg, "transfer", "resnet").steps),
    "steps_vit": (7, lambda cfg, c: recipe(cfg, "transfer", "vit").steps),
    "scratch_steps_vit": (9, lambda cfg, c: recipe(cfg, "scratch", "vit").steps),
    "mixture_recipe": ("released", lambda cfg, c: recipe(cfg, "mixture", "resnet")),
    "transfer_transforms": ("released", _first_image_shape),
    "train_crop": ("resize-crop", _entry_crop),
    "class_weighted_loss": (False, lambda cfg, c: training.loss_weights(
        cfg, c.inputs.image_sets(MODELS["resnet"], cfg).train) is None),
    "eval_set": ("released", lambda cfg, c: Resolver(cfg, c.archs, c.inputs.sources).eval_images().averaging),
    "cue_conflict_scoring": ("released", _scoring),
}  # fmt: skip


def test_every_fidelity_setting_has_a_probe():
    assert {c.setting for c in FIDELITY} == set(PROBES)


@pytest.mark.parametrize("setting", sorted(PROBES))
def test_the_code_reads_the_setting(setting, tiny):
    other, probe = PROBES[setting]
    assert getattr(TINY, setting) != other, f"pick another value for {setting}"
    changed = dataclasses.replace(TINY, **{setting: other})
    assert probe(TINY, tiny) != probe(changed, tiny), f"the code ignores {setting}"


# ------------------------------------------------------------------------------ behaviours
@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_head_adaptation_keeps_the_backbone_and_full_trains_it(family, tiny):
    head = dataclasses.replace(TINY, **{f"adapt_{family}": "head"})
    full = dataclasses.replace(TINY, **{f"adapt_{family}": "full"})
    assert _adapted(head, tiny, family)[0] is False
    assert _adapted(full, tiny, family)[0] is True


def test_class_weights_are_n_over_n_c_with_unit_norm():
    w = class_weights([0, 0, 0, 1, 2, 2], num_classes=4)  # N = 6: 6/3, 6/1, 6/2, none
    assert float(w.norm()) == pytest.approx(1.0) and w[3] == 0
    assert w[1] / w[0] == pytest.approx(3.0) and w[2] / w[0] == pytest.approx(1.5)


def test_the_transfer_penalty_is_transferred_even_when_another_is_more_accurate():
    found = _fake_found()  # lambda 1e-6 is the more accurate
    assert stages.choose_penalty(dataclasses.replace(TINY, transfer_penalty=1e-8), found) == 1e-8
    assert stages.choose_penalty(dataclasses.replace(TINY, transfer_penalty=None), found) == 1e-6


def test_mixture_starts_from_the_pretrained_model_with_a_new_head_or_the_adapted_one():
    arch = ARCHS.get("resnet18-mini")
    torch.manual_seed(0)
    pretrained, adapted, fresh = arch.build(10), arch.build(16), arch.build(16)
    start = STRATEGIES.get("data-mixture").start

    def build(recipe_name):
        inputs = StrategyInputs(pretrained, adapted, fresh, None, mixture_recipe=recipe_name,
                                new_head=lambda m: replace_head(m, arch, 16))  # fmt: skip
        return start(inputs)

    released, info = build("released")
    assert info["start"] == "pretrained" and released.fc.out_features == 16
    assert torch.equal(released.conv1.weight, pretrained.conv1.weight)
    assert all(p.requires_grad for p in released.parameters())
    transfer, info = build("transfer")
    assert info["start"] == "adapted" and torch.equal(transfer.fc.weight, adapted.fc.weight)


def test_frozen_vit_norms_and_class_token():
    arch = ARCHS.get("vit_b_16-mini")
    net = arch.build(16)
    n = runs.freeze_norms_and_class_token(net)
    norms = [m for m in net.modules() if isinstance(m, nn.LayerNorm)]
    assert n == 2 * len(norms) + 1 and not net.class_token.requires_grad
    assert all(not p.requires_grad for m in norms for p in m.parameters())
    assert net.encoder.pos_embedding.requires_grad and net.heads.head.weight.requires_grad
    assert not runs.freezes_norms(TINY, "scratch", "vit")  # scratch transfers nothing


def test_released_transforms_are_the_released_codes(tmp_path):
    """ToTensor, then Resize(256) on the tensor (bilinear, no antialiasing), CenterCrop(224),
    ImageNet normalisation: compared with the steps written out by hand."""
    import torchvision.transforms.functional as TF

    from benchmarks.vision.data import released_eval_transform
    from benchmarks.vision.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    img = Image.fromarray((torch.rand(300, 400, 3) * 255).byte().numpy())
    x = TF.to_tensor(img)
    x = TF.resize(x, 256, antialias=False)
    x = TF.center_crop(x, 224)
    x = TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(released_eval_transform()(img), x)
