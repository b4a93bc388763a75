"""The inputs of the vision experiments and the image sets built from them: the user's ImageNet,
pooled builds, cue-conflict folder and weights (paper preset), or the synthetic world and its
pretrained models (mini and tiny presets), and per architecture the training, evaluation and
pooled datasets (evaluation images never in the training set).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from benchmarks.harness import StageError, Sync, rank0_first
from benchmarks.vision.config import PRETRAIN_KEYS, WEIGHTS_OPTION, Table1Config
from benchmarks.vision.data import FileImages, PooledImages, eval_transform, train_transform
from benchmarks.vision.evaluate import load_decision_mapping
from benchmarks.vision.models import VisionArch, arch_for
from benchmarks.vision.sources import Pretrained, load_pretrained
from meanpool.config import IndexConfig
from meanpool.imagenet import Item, build_index


@dataclass(frozen=True)
class Inputs:
    """Where every input lives once resolved (the user's paths, or the synthetic world's)."""

    imagenet_dir: Path
    pooled: str
    cue_conflict_dir: Path | None
    mapping: dict[str, list[int]]
    # per model: a state dict file, a transformers checkpoint folder, hf://ORG/NAME, or None
    # (a library classifier's default weights from the local cache)
    weights: dict[str, str | None]
    index: IndexConfig
    val_labels: str | None = None


def _need(value: str | None, option: str, what: str) -> str:
    if value is None:
        raise StageError(f"{option} is required with this preset ({what}); or use --preset mini")
    return value


def world_config(cfg: Table1Config) -> Any:
    """The synthetic world's settings: "mini" (toyworld's defaults, calibrated so that the
    pretrained models are texture-biased yet above chance on pooled images) or "tiny" (a few
    images per class, for tests). With a world, its own subsets replace discovery_per_class /
    evaluation_per_class."""
    from benchmarks.vision.toyworld.world import WorldConfig

    worlds = {
        # 900 images per class, 48 + 16 of them the discovery and evaluation images: the pooled
        # ones are 6.8% of data mixture's training stream (1,024 of 15,168), as the paper's
        # 15.4k of 228k (6.7%)
        # 600 pretraining images per class (not 1,000) keep the run within 25 minutes
        "mini": WorldConfig(seed=cfg.world_seed, pretrain_per_class=600, train_per_class=900),
        "tiny": WorldConfig(
            seed=cfg.world_seed,
            distractors=2,
            pretrain_per_class=6,
            train_per_class=8,
            val_per_class=2,
            discovery_per_class=3,
            evaluation_per_class=2,
            cue_shapes_per_class=1,
        ),
    }
    if cfg.world not in worlds:
        raise StageError(f"unknown world {cfg.world!r}; built-in worlds: {', '.join(worlds)}")
    return worlds[cfg.world]


def index_config(cfg: Table1Config) -> IndexConfig:
    """meanpool's index settings of the run's image sets."""
    return IndexConfig(cfg.discovery_per_class, cfg.evaluation_per_class, cfg.index_seed,
                       selection=cfg.selection, allow_missing=cfg.allow_missing)  # fmt: skip


def index_of(cfg: Table1Config) -> dict[str, list[Item]]:
    """The image sets of the user's ImageNet tree ({"train", "discovery", "evaluation", "val"})."""
    return build_index(Path(cfg.imagenet_dir), index_config(cfg), cfg.val_labels)


def _weights(cfg: Table1Config, model: str) -> str | None:
    """The weights given for ``model``; required for the paper's two families."""
    family = arch_for(model).family
    if family not in WEIGHTS_OPTION:
        return cfg.weights(model)
    return _need(cfg.weights(model), WEIGHTS_OPTION[family], f"{model}'s weights")


def load_source(inputs: Inputs, model: str) -> Pretrained:
    """The pretrained model ``model`` and the architecture adapted to its weights (their
    preprocessing, applied wherever the model sees images)."""
    return load_pretrained(arch_for(model), inputs.weights[model])


def load_pretrained_weights(cfg: Table1Config, model: str) -> str:
    """Read the weights given for ``model`` and load them into the architecture (strictly);
    return a one-line description. Raises a ValueError (one line) when they do not fit."""
    p = load_pretrained(arch_for(model), _weights(cfg, model))
    params = sum(t.numel() for t in p.model.parameters())
    return (f"{p.source.given or 'library default'}: {p.classes}-class head, {params:,} "
            f"parameters; preprocessing {p.preprocessing.describe()}")  # fmt: skip


def _user_inputs(cfg: Table1Config) -> Inputs:
    imagenet = Path(_need(cfg.imagenet_dir, "--imagenet-dir", "an ImageNet root"))
    pooled = _need(cfg.pooled, "--pooled", "a meanpool output folder or hf:// dataset")
    weights = {m: _weights(cfg, m) for m in cfg.models}
    cue = Path(cfg.cue_conflict_dir) if cfg.cue_conflict_dir else None
    return Inputs(
        imagenet_dir=imagenet,
        pooled=pooled,
        cue_conflict_dir=cue,
        mapping=load_decision_mapping(cfg.decision_mapping),
        weights=weights,
        index=index_config(cfg),
        val_labels=cfg.val_labels,
    )


def _world_inputs(cfg: Table1Config, out: Path, sync: Sync, progress: bool) -> Inputs:
    from benchmarks.vision.toyworld.pretrain import PretrainConfig, pretrain
    from benchmarks.vision.toyworld.world import make_world

    wcfg = world_config(cfg)
    w = rank0_first(sync, lambda p: make_world(out / "world", wcfg, p), progress, "world")
    pcfg = PretrainConfig(
        epochs=cfg.pretrain_epochs,
        lr=cfg.pretrain_lr,
        batch_size=cfg.pretrain_batch_size,
        seed=cfg.world_seed,
    )
    weights = {
        m: out / "pretrained" / f"{m}-{cfg.digest(*PRETRAIN_KEYS)}.safetensors" for m in cfg.models
    }

    def pretrain_missing(progress: bool) -> None:
        for m, path in weights.items():
            if not path.exists():
                pretrain(arch_for(m), w, pcfg, path, progress=progress)

    rank0_first(sync, pretrain_missing, progress, "pretrained")
    return Inputs(
        imagenet_dir=w.imagenet_dir,
        pooled=str(w.pooled_dir),
        cue_conflict_dir=w.cue_conflict_dir,
        mapping=load_decision_mapping(w.decision_mapping),
        weights={m: str(path) for m, path in weights.items()},
        index=w.index,
    )


def resolve_inputs(cfg: Table1Config, out: Path, sync: Sync, progress: bool) -> Inputs:
    """The user's inputs (paper preset), or the synthetic world and its pretrained models
    (``world="mini"``), built by rank 0 and cached in ``out``."""
    if cfg.world is None:
        return _user_inputs(cfg)
    return _world_inputs(cfg, out, sync, progress)


def pipeline_arch(cfg: Table1Config, pretrained: Pretrained) -> VisionArch:
    """The architecture as the pipeline uses it: adapted to its weights (their preprocessing),
    with the configured training crop (None: the architecture's own)."""
    arch = pretrained.arch
    if cfg.train_crop is not None:
        arch = dataclasses.replace(arch, train_crop=cfg.train_crop)
    return arch


@dataclass
class Data:
    """The image sets of one architecture (its transforms): training items exclude the
    evaluation subset; validation items are ImageNet's val split."""

    train: Dataset  # original 16-class train images minus the evaluation subset
    evaluation: Dataset  # the evaluation subset, original images (model selection, Figure 5)
    pooled_discovery: Dataset  # augmented or not, as discovery_augment says
    pooled_evaluation: Dataset
    root: Path
    train_items: list[Item]
    discovery_items: list[Item]  # the discovery subset, original images (adaptation)
    evaluation_items: list[Item]
    val_items: list[Item]


def split_items(index: dict[str, list[Item]]) -> tuple[list[Item], list[Item], list[Item]]:
    """(train, evaluation, val) items: every 16-class train image except the evaluation subset,
    de-duplicated by path; raises StageError if any evaluation or val image would be trained on."""
    held_out = {it.rel for it in index["evaluation"]}
    seen: set[str] = set()
    train = []
    for it in index["train"]:
        if it.rel not in held_out and it.rel not in seen:
            seen.add(it.rel)
            train.append(it)
    val_rels = {it.rel for it in index["val"]}
    leaked = (seen & held_out) | (seen & val_rels)
    if leaked:
        raise StageError(f"{len(leaked)} evaluation/val images are in the training set, e.g. "
                         f"{sorted(leaked)[0]}; check the ImageNet layout")  # fmt: skip
    return train, list(index["evaluation"]), list(index["val"])


def load_data(cfg: Table1Config, inputs: Inputs, arch: VisionArch) -> Data:
    """The image sets of ``arch`` (its transforms), checked: the pooled evaluation build holds
    exactly the index's evaluation images, none of which is trained on."""
    index = build_index(inputs.imagenet_dir, inputs.index, inputs.val_labels)
    train, evaluation, val = split_items(index)
    pooled_eval = PooledImages(inputs.pooled, "evaluation", eval_transform(arch))
    want = {it.rel for it in evaluation}
    if set(pooled_eval.sources) != want:
        raise StageError(
            f"the pooled evaluation subset in {inputs.pooled} holds {len(pooled_eval.sources)} "
            f"images, not the {len(want)} of this index (selection {inputs.index.selection}"
            + (
                ""
                if inputs.index.selection == "paper"
                else f", discovery/evaluation per class {inputs.index.discovery_per_class}/"
                f"{inputs.index.evaluation_per_class}, seed {inputs.index.seed}"
            )
            + "); build it with the same `meanpool index` settings"
        )
    leaked = {it.rel for it in train} & set(pooled_eval.sources)
    assert not leaked, f"evaluation images in the training set: {sorted(leaked)[:3]}"
    root = inputs.imagenet_dir
    augment = cfg.discovery_augment == "train"
    discovery_transform = train_transform(arch) if augment else eval_transform(arch)
    return Data(
        train=FileImages(root, [(it.rel, it.label) for it in train], train_transform(arch)),
        evaluation=FileImages(
            root, [(it.rel, it.label) for it in evaluation], eval_transform(arch)
        ),
        pooled_discovery=PooledImages(inputs.pooled, "discovery", discovery_transform),
        pooled_evaluation=pooled_eval,
        root=root,
        train_items=train,
        discovery_items=list(index["discovery"]),
        evaluation_items=evaluation,
        val_items=val,
    )


def training_set(data: Data, pooled_in_training: bool) -> Dataset:
    """The original training images, plus (data mixture) the pooled discovery and evaluation
    images, really added to the stream."""
    if not pooled_in_training:
        return data.train
    return ConcatDataset([data.train, data.pooled_discovery, data.pooled_evaluation])
