import dataclasses
import hashlib
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.vision.models import ARCHS, VisionArch, ViTSpec, load_weights
from benchmarks.vision.toyworld.pretrain import PretrainConfig, pretrain
from benchmarks.vision.toyworld.world import (
    SHAPES,
    TEXTURES,
    WORLD_FILE,
    ToyWorldError,
    WorldConfig,
    category_shape_texture,
    category_wnids,
    make_world,
    render,
)
from meanpool import loader
from meanpool.imagenet import build_index, scan, sixteen_classes

TINY = WorldConfig(
    pretrain_per_class=3,
    train_per_class=5,
    val_per_class=2,
    discovery_per_class=2,
    evaluation_per_class=1,
    cue_shapes_per_class=1,
    distractors=2,
    shard_size=7,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("tw") / "world", TINY, progress=False)


def _tree_digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix == ".png":
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_classes_and_decision_mapping(world):
    order, wnid_to_cat = sixteen_classes()
    cats = category_wnids()
    assert [wnid_to_cat[cats[c]] for c in order] == order
    assert len(world.pretrain_classes) == 16 + TINY.distractors
    assert world.pretrain_classes == sorted(world.pretrain_classes)
    assert sorted(p.name for p in world.pretrain_dir.iterdir()) == world.pretrain_classes
    distractors = set(world.pretrain_classes) - set(cats.values())
    assert len(distractors) == TINY.distractors and not distractors & set(wnid_to_cat)
    mapping = json.loads(world.decision_mapping.read_text())["categories"]
    assert list(mapping) == order
    for cat, entry in mapping.items():
        (i,) = entry["imagenet_indices"]
        assert world.pretrain_classes[i] == cats[cat] == entry["wnids"][0]
    # every category has a distinct shape and texture; the registries hold the distractors too
    table = category_shape_texture()
    assert len({s for _, s, _ in table}) == len({t for _, _, t in table}) == 16
    assert len(SHAPES.names()) >= 16 + TINY.distractors <= len(TEXTURES.names())


def test_imagenet_layout_scan_and_index(world):
    splits = scan(world.imagenet_dir)
    assert len(splits["train"]) == 16 * TINY.train_per_class
    assert len(splits["val"]) == 16 * TINY.val_per_class
    index = build_index(world.imagenet_dir, world.index)
    assert len(index["discovery"]) == 16 * TINY.discovery_per_class
    assert len(index["evaluation"]) == 16 * TINY.evaluation_per_class
    with Image.open(world.imagenet_dir / splits["train"][0].rel) as img:
        assert img.format == "PNG" and img.size == (32, 32) and img.mode == "RGB"
    n_pre = sum(1 for _ in world.pretrain_dir.rglob("*.png"))
    assert n_pre == TINY.pretrain_per_class * len(world.pretrain_classes)


def test_pooled_shards_read_back_through_meanpool_loader(world):
    index = build_index(world.imagenet_dir, world.index)
    for subset in ("discovery", "evaluation", "val"):
        samples = list(loader.dataset(world.pooled_dir / subset))
        assert len(samples) == len(index[subset])
        manifest = json.loads((world.pooled_dir / subset / "manifest.json").read_text())
        assert manifest["num_samples"] == len(samples) and len(manifest["shards"]) >= 1
        expected = {it.rel: it.label for it in index[subset]}
        got = {s["json"]["source"]: s["cls"] for s in samples}
        assert got == expected
        # the pooled image is the original with every known segment replaced by its mean
        s = samples[0]
        with Image.open(world.imagenet_dir / s["json"]["source"]) as img:
            original = np.asarray(img.convert("RGB")).astype(float)
        pooled = np.asarray(s["image"]).astype(float)
        assert pooled.shape == original.shape
        assert np.abs(pooled.mean((0, 1)) - original.mean((0, 1))).max() < 4  # JPEG, rounding
        assert s["json"]["n_segments"] in (2, 3)


def test_pooled_images_are_constant_per_segment():
    cfg = WorldConfig()
    from meanpool.pool import mean_pool

    for i, (_, shape, texture) in enumerate(category_shape_texture()):
        rng = np.random.default_rng(i)
        image, labels = render(rng, shape, texture, cfg, flat_background=i % 2 == 0)
        assert labels.min() == 0 and set(np.unique(labels)) == set(range(labels.max() + 1))
        pooled = mean_pool(image, labels)
        for k in range(labels.max() + 1):
            seg = pooled[labels == k]
            assert (seg == seg[0]).all()
        # textures and blobs are exactly zero-mean: the object's pooled colour is its base colour,
        # so the texture's own mean colour carries nothing (up to rounding and clipping)
        obj = labels == labels.max()
        assert image[obj].std(0).max() > 5  # the object is textured
        img2, _ = render(np.random.default_rng(i), shape, None, cfg, i % 2 == 0)
        assert np.abs(pooled[obj][0].astype(float) - img2[obj][0]).max() <= 1


def test_cue_conflict_layout_names_and_same_class(world):
    order, _ = sixteen_classes()
    stimuli = sorted(world.cue_conflict_dir.glob("*/*.png"))
    assert len(stimuli) == 16 * TINY.cue_shapes_per_class * 16
    same = 0
    for p in stimuli:
        m = re.fullmatch(r"([a-z]+)(\d+)-([a-z]+)(\d+)\.png", p.name)
        assert m, p.name
        assert m[1] == p.parent.name and m[1] in order and m[3] in order
        same += m[1] == m[3]
    assert same == 16 * TINY.cue_shapes_per_class


def test_reuse_is_idempotent_and_other_settings_are_refused(world, tmp_path):
    record = (world.root / WORLD_FILE).read_text()
    mtime = (world.root / WORLD_FILE).stat().st_mtime_ns
    again = make_world(world.root, TINY, progress=False)
    assert again == world
    assert (world.root / WORLD_FILE).read_text() == record
    assert (world.root / WORLD_FILE).stat().st_mtime_ns == mtime
    with pytest.raises(ToyWorldError, match="seed"):
        make_world(world.root, dataclasses.replace(TINY, seed=1), progress=False)


def test_deterministic_from_seed_and_half_written_world_is_rebuilt(world, tmp_path):
    cfg = dataclasses.replace(TINY, distractors=0, pretrain_per_class=1, cue_shapes_per_class=1)
    a = make_world(tmp_path / "a", cfg, progress=False)
    (a.root / WORLD_FILE).unlink()  # as if killed before the end
    (a.imagenet_dir / "train" / "stray.png").write_bytes(b"half")
    a = make_world(tmp_path / "a", cfg, progress=False)
    assert not (a.imagenet_dir / "train" / "stray.png").exists()
    b = make_world(tmp_path / "b", cfg, progress=False)
    assert _tree_digest(a.root) == _tree_digest(b.root)
    shards = sorted(p.relative_to(a.root) for p in a.pooled_dir.rglob("*.tar"))
    assert shards and all((a.root / s).read_bytes() == (b.root / s).read_bytes() for s in shards)
    c = make_world(tmp_path / "c", dataclasses.replace(cfg, seed=1), progress=False)
    assert _tree_digest(a.root) != _tree_digest(c.root)


def _tiny_vit() -> VisionArch:
    base = ARCHS.get("vit_b_16-mini")
    spec = ViTSpec(patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=16)
    return dataclasses.replace(base, name="vit-tiny", spec=spec)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrain_writes_a_loadable_state_dict(world, tmp_path, suffix):
    arch = _tiny_vit()
    cfg = PretrainConfig(epochs=1, batch_size=16, holdout_per_class=1)
    path = pretrain(arch, world, cfg, tmp_path / f"model{suffix}", progress=False)
    assert path == tmp_path / f"model{suffix}" and path.is_file()
    meta = json.loads((tmp_path / f"model{suffix}.json").read_text())
    assert meta["num_classes"] == len(world.pretrain_classes)
    assert meta["train_images"] == (TINY.pretrain_per_class - 1) * len(world.pretrain_classes)
    model = arch.build(len(world.pretrain_classes))
    load_weights(model, path)
    # deterministic: the same seed gives the same weights
    again = pretrain(arch, world, cfg, tmp_path / f"again{suffix}", progress=False)
    other = arch.build(len(world.pretrain_classes))
    load_weights(other, again)
    for (k, v), w in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_pretrain_refuses_another_image_size(world, tmp_path):
    arch = dataclasses.replace(_tiny_vit(), image_size=64)
    with pytest.raises(ToyWorldError, match="image_size=64"):
        pretrain(arch, world, PretrainConfig(epochs=1), tmp_path / "m.pth", progress=False)


def test_pooled_shards_decode_as_jpeg(world):
    samples = list(loader._samples({"url": u} for u in loader.shard_urls(world.pooled_dir / "val")))
    assert Image.open(io.BytesIO(samples[0]["jpg"])).format == "JPEG"


def test_world_runs_through_the_vision_evaluation(world, tmp_path):
    """The paper preset's readers take the world as they take the real data."""
    from benchmarks.vision.cue_conflict import scan_cue_conflict
    from benchmarks.vision.data import PooledImages
    from benchmarks.vision.evaluate import (
        EvalConfig,
        eval_images,
        evaluate_model,
        load_decision_mapping,
    )

    stimuli = scan_cue_conflict(world.cue_conflict_dir)
    assert sum(s.shape == s.texture for s in stimuli) == 16 * TINY.cue_shapes_per_class
    pooled = PooledImages(world.pooled_dir, "val", None)
    assert sorted(pooled.sources) == sorted(it.rel for it in scan(world.imagenet_dir)["val"])
    arch = _tiny_vit()
    path = pretrain(arch, world, PretrainConfig(epochs=1), tmp_path / "m.pth", progress=False)
    model = arch.build(len(world.pretrain_classes))
    load_weights(model, path)
    val = scan(world.imagenet_dir)["val"]
    images = eval_images("paper", world.imagenet_dir, val, pooled, set())
    res = evaluate_model(
        model.eval(),
        arch,
        images=images,
        cue_conflict_dir=world.cue_conflict_dir,
        mapping=load_decision_mapping(world.decision_mapping),
        out_dir=tmp_path / "eval",
        tag="tiny",
        cfg=EvalConfig(device="cpu"),
    )
    assert res["original_n"] == res["pooled_n"] == 16 * TINY.val_per_class
    assert res["cue_conflict"]["n_excluded_same_class"] == 16 * TINY.cue_shapes_per_class
    assert (tmp_path / "eval" / "responses" / "tiny.csv").is_file()


def test_random_shape_swaps_the_silhouette_of_textured_pretraining_objects_only():
    from benchmarks.vision.toyworld.world import _draw

    cfg = WorldConfig()

    def obj(shape, flat, share):
        _, labels = _draw(cfg, "pretrain", 0, 7, shape, "checker", flat, (share, ["disc"]))
        return labels == labels.max()  # the object's segment

    textured, flat = (0.0, 0.0), (1.0, 0.0)
    assert not np.array_equal(obj("square", textured, 0.0), obj("disc", textured, 0.0))
    # share 1: every textured object takes a silhouette from the pool (here: a disc)
    assert np.array_equal(obj("square", textured, 1.0), obj("disc", textured, 1.0))
    # flat objects keep their class's silhouette: shape is their only cue
    assert not np.array_equal(obj("square", flat, 1.0), obj("disc", flat, 1.0))
    with pytest.raises(AssertionError, match="random_shape must be in"):
        WorldConfig(random_shape=1.5)
