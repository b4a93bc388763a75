"""Every input of a table1 run, resolved once: where the images, pooled builds, stimuli and
weights live (the user's paths, or the synthetic world's), the ImageNet tree indexed once, the
pooled builds read once, and per model one :class:`ModelEntry` (its architecture adapted to its
weights, the recipe family it follows, the pretrained model loaded) that every stage takes.

:class:`Resolver` memoises each input, so that the input checks (:mod:`benchmarks.vision.checks`)
and the run read each weight file and walk the tree once on a rank.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import SINGLE, StageError, Sync, rank0_first
from benchmarks.vision.config import PRETRAIN_KEYS, WEIGHTS_OPTION, Table1Config
from benchmarks.vision.data import ImageSets, PooledImages, image_sets, transfer_transforms
from benchmarks.vision.evaluate import (
    EvalImages,
    ReadyImages,
    eval_images,
    load_decision_mapping,
    stimulus_images,
)
from benchmarks.vision.models import (
    Pretrained,
    VisionArch,
    arch_for,
    load_pretrained,
    recipe_family,
)
from benchmarks.vision.tensors import Augment, ImageTensors, from_files, from_pooled, supports
from benchmarks.vision.timing import timed
from benchmarks.vision.toyworld.pretrain import PretrainConfig, pretrain
from benchmarks.vision.toyworld.world import WorldConfig, make_world
from meanpool.config import IndexConfig
from meanpool.imagenet import Item, build_index

# The pooled builds a run trains and selects on (the "val" build is evaluation's, per model).
POOLED_RUN_SUBSETS = ("discovery", "evaluation")


@dataclass(frozen=True)
class ModelEntry:
    """One model of the run, resolved once. ``arch``: adapted to its weights (their
    preprocessing, LayerNorm eps) with the run's training crop; ``family``: whose recipe it
    follows ("resnet" or "vit"); ``pretrained``: the loaded model (eval mode, CPU), its head size
    and where its weights came from."""

    name: str
    arch: VisionArch
    family: str
    pretrained: Pretrained


@dataclass(frozen=True)
class Sources:
    """Where every input lives: the user's paths (paper preset) or the synthetic world's."""

    imagenet_dir: Path
    pooled: str
    cue_conflict_dir: Path | None
    decision_mapping: str | Path | None  # None: the packaged ImageNet-1k mapping
    # per model: a state dict file, a transformers checkpoint folder, hf://ORG/NAME, or None
    # (a library classifier's default weights from the local cache)
    weights: dict[str, str | None]
    index_config: IndexConfig
    val_labels: str | None = None


@dataclass(frozen=True)
class Inputs:
    """Every input of a run, resolved: the sources, the decision mapping, the tree's index
    ({"train", "discovery", "evaluation", "val"}), the pooled discovery and evaluation builds
    (no transform: each model takes them with its own) and one entry per model."""

    sources: Sources
    mapping: dict[str, list[int]]
    index: dict[str, list[Item]]
    pooled: dict[str, PooledImages]
    models: dict[str, ModelEntry]
    resolver: Resolver
    world_size: int | None = None  # the synthetic world's image size (None: the user's data)

    @property
    def imagenet_dir(self) -> Path:
        return self.sources.imagenet_dir

    def image_sets(self, model: str, cfg: Table1Config) -> ImageSets:
        """``model``'s image sets (its transforms) over the run's index and pooled builds; for
        the synthetic world, decoded once and held as tensors (benchmarks.vision.tensors)."""
        arch = self.models[model].arch
        sets = image_sets(arch, self.imagenet_dir, self.index, self.pooled,
                          self.sources.index_config, cfg.discovery_augment == "train",
                          transfer_transforms(arch, cfg.transfer_transforms))  # fmt: skip
        if not self._tensors(arch, cfg):
            return sets
        return self.resolver.tensor_sets(sets, arch, cfg.discovery_augment == "train")

    def _tensors(self, arch: VisionArch, cfg: Table1Config) -> bool:
        """Whether ``arch``'s images are held as tensors (the synthetic world's fast path)."""
        if self.world_size is None or not cfg.tensor_images:
            return False
        return cfg.transfer_transforms == "source" and supports(arch, self.world_size)

    def ready_images(self, model: str, cfg: Table1Config) -> ReadyImages | None:
        """For the synthetic world: the evaluation images and stimuli decoded once per run and
        held as tensors under ``model``'s normalisation; None where the transforms apply."""
        arch = self.models[model].arch
        if not self._tensors(arch, cfg):
            return None
        return self.resolver.ready_images(arch, self.sources.cue_conflict_dir)

    def eval_images(self) -> EvalImages:
        """What every model is evaluated on (:func:`benchmarks.vision.evaluate.eval_images`):
        the index's validation images and the pooled val build's versions of them (read once,
        on first use: only the ranks that evaluate read it)."""
        return self.resolver.eval_images()


def resolve_archs(cfg: Table1Config) -> dict[str, VisionArch]:
    """The architecture of every model of the run (the pipeline's one call of ``arch_for``);
    ValueError (one line) for an unknown name."""
    return {m: arch_for(m) for m in cfg.models}


def _need(value: str | None, option: str, what: str) -> str:
    if value is None:
        raise StageError(f"{option} is required with this preset ({what}); or use --preset mini")
    return value


def index_config(cfg: Table1Config) -> IndexConfig:
    """meanpool's index settings of the run's image sets."""
    return IndexConfig(cfg.discovery_per_class, cfg.evaluation_per_class, cfg.index_seed,
                       selection=cfg.selection, allow_missing=cfg.allow_missing)  # fmt: skip


def user_sources(cfg: Table1Config, archs: dict[str, VisionArch]) -> Sources:
    """The user's inputs (paper preset); StageError (one line) for a required option not given.
    The weights of the paper's two families come from their options (required when loaded); a
    library classifier's are its default weights from the local cache (None)."""
    weights = {
        m: cfg.weights(a.family) if a.family in WEIGHTS_OPTION else None for m, a in archs.items()
    }
    return Sources(
        imagenet_dir=Path(_need(cfg.imagenet_dir, "--imagenet-dir", "an ImageNet root")),
        pooled=_need(cfg.pooled, "--pooled", "a meanpool output folder or hf:// dataset"),
        cue_conflict_dir=Path(cfg.cue_conflict_dir) if cfg.cue_conflict_dir else None,
        decision_mapping=cfg.decision_mapping,
        weights=weights,
        index_config=index_config(cfg),
        val_labels=cfg.val_labels,
    )


def world_config(cfg: Table1Config) -> WorldConfig:
    """The synthetic world's settings: "mini" (toyworld's defaults, calibrated so that the
    pretrained models are texture-biased yet above chance on pooled images) or "tiny" (a few
    images per class, for tests). With a world, its own subsets replace discovery_per_class /
    evaluation_per_class."""
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


def world_archs(cfg: Table1Config, archs: dict[str, VisionArch]) -> dict[str, VisionArch]:
    """The architectures as the synthetic world runs them: a library classifier takes the
    world's image size with ImageNet's normalisation (the world pretrains its weights, so the
    preprocessing of its library's default weights does not apply). StageError (one line) for a
    classifier that cannot take images of that size (e.g. a ViT made for 224 px)."""
    size = world_config(cfg).image_size
    out = {}
    for model, arch in archs.items():
        if arch.family in WEIGHTS_OPTION:  # the registered architectures are the world's size
            out[model] = arch
            continue
        small = dataclasses.replace(arch, image_size=size, resize_ratio=1.0, preprocessing=None)
        try:
            with torch.device("meta"):
                small.build(16).eval()(torch.zeros(2, 3, size, size))
        except Exception as e:  # shape errors of any library: all mean "not at this size"
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise StageError(
                f"{model} cannot take the synthetic world's {size} px images ({first}); use a "
                "classifier that takes any input size (e.g. a CNN) or --preset paper"
            ) from None
        out[model] = small
    return out


def world_sources(
    cfg: Table1Config, archs: dict[str, VisionArch], out: Path, sync: Sync, progress: bool
) -> Sources:
    """The synthetic world and its pretrained models (``cfg.world``), built by rank 0 and cached
    in ``out`` (the other ranks wait, then find them)."""
    wcfg = world_config(cfg)

    def world(p: bool):
        with timed(out, sync.rank, "world"):
            return make_world(out / "world", wcfg, p)

    w = rank0_first(sync, world, progress, "world")
    pcfg = PretrainConfig(
        epochs=cfg.pretrain_epochs,
        lr=cfg.pretrain_lr,
        batch_size=cfg.pretrain_batch_size,
        seed=cfg.world_seed,
    )
    weights = {
        m: out / "pretrained" / f"{m}-{cfg.digest(*PRETRAIN_KEYS)}.safetensors" for m in archs
    }

    def pretrain_missing(progress: bool) -> None:
        for m, path in weights.items():
            if not path.exists():
                with timed(out, sync.rank, "pretrain", m):
                    pretrain(archs[m], w, pcfg, path, progress=progress)

    rank0_first(sync, pretrain_missing, progress, "pretrained")
    return Sources(
        imagenet_dir=w.imagenet_dir,
        pooled=str(w.pooled_dir),
        cue_conflict_dir=w.cue_conflict_dir,
        decision_mapping=w.decision_mapping,
        weights={m: str(path) for m, path in weights.items()},
        index_config=w.index,
    )


class Resolver:
    """Each input of a run resolved on first use and kept: the tree's index, each model's
    weights (read once), the pooled builds (read once). The input checks and the run share one
    resolver, so rank 0 reads nothing twice."""

    def __init__(
        self,
        cfg: Table1Config,
        archs: dict[str, VisionArch],
        sources: Sources,
        world_size: int | None = None,
    ) -> None:
        self.cfg, self.archs, self.sources, self.world_size = cfg, archs, sources, world_size
        self._index: dict[str, list[Item]] | None = None
        self._pretrained: dict[str, Pretrained] = {}
        self._pooled: dict[str, PooledImages] = {}
        self._eval: EvalImages | None = None
        self._decoded: dict[str, ImageTensors] = {}

    def index(self) -> dict[str, list[Item]]:
        """The image sets of the ImageNet tree ({"train", "discovery", "evaluation", "val"})."""
        if self._index is None:
            s = self.sources
            self._index = build_index(s.imagenet_dir, s.index_config, s.val_labels)
        return self._index

    def pretrained(self, model: str) -> Pretrained:
        """``model``'s pretrained model and its architecture adapted to the weights."""
        if model not in self._pretrained:
            arch, weights = self.archs[model], self.sources.weights[model]
            if weights is None and arch.family in WEIGHTS_OPTION:
                option = WEIGHTS_OPTION[arch.family]
                _need(weights, option, f"{model}'s weights")
            self._pretrained[model] = load_pretrained(arch, weights)
        return self._pretrained[model]

    def pooled(self, subset: str) -> PooledImages:
        """One pooled build (no transform), its images read once."""
        if subset not in self._pooled:
            self._pooled[subset] = PooledImages(self.sources.pooled, subset, None)
        return self._pooled[subset]

    def entry(self, model: str) -> ModelEntry:
        """``model`` resolved: the architecture adapted to its weights with the run's
        training crop (None: the architecture's own), its recipe family, its weights."""
        p = self.pretrained(model)
        arch = p.arch
        if self.cfg.train_crop is not None:
            arch = dataclasses.replace(arch, train_crop=self.cfg.train_crop)
        return ModelEntry(model, arch, recipe_family(arch), p)

    def decoded(self, key: str, dataset: Any) -> ImageTensors:
        """``dataset`` (a FileImages or PooledImages set, named ``key``) decoded once per run
        and shared by every model (each takes it with its own normalisation)."""
        if key not in self._decoded:
            convert = from_pooled if isinstance(dataset, PooledImages) else from_files
            self._decoded[key] = convert(dataset, self.archs[self.cfg.models[0]], False)
        return self._decoded[key]

    def tensor_sets(self, sets: ImageSets, arch: VisionArch, augment_discovery: bool) -> ImageSets:
        """``sets`` with every dataset held as tensors under ``arch``'s normalisation and
        augmentation (the transfer and the source transforms are the same: "source")."""
        p = arch.resolved_preprocessing
        aug = Augment.of(arch)

        def of(key: str, dataset: Any, augment: Augment | None) -> ImageTensors:
            return self.decoded(key, dataset).normalised(p.mean, p.std, augment)

        train = of("train", sets.train, aug)
        evaluation = of("evaluation", sets.evaluation, None)
        pooled_eval = of("pooled-evaluation", sets.pooled_evaluation, None)
        pooled_disc = of("pooled-discovery", sets.pooled_discovery, None)
        val = of("val", sets.val, None)
        by_rel = {rel: (train, i) for i, rel in enumerate(train.sources)}
        by_rel |= {rel: (evaluation, i) for i, rel in enumerate(evaluation.sources)}
        by_rel |= {rel: (val, i) for i, rel in enumerate(val.sources)}

        def originals(items: Any, training: bool) -> ImageTensors:
            parts = [by_rel[it.rel] for it in items]
            images = torch.stack([ds.images[i] for ds, i in parts]) if parts else train.images[:0]
            labels = torch.tensor([it.label for it in items], dtype=torch.long)
            return ImageTensors(images, labels, p.mean, p.std, aug if training else None,
                                [it.rel for it in items])  # fmt: skip

        return dataclasses.replace(
            sets,
            train=train,
            evaluation=evaluation,
            val=val,
            pooled_evaluation=pooled_eval,
            pooled_training=pooled_disc.with_augment(aug),
            source_evaluation=evaluation,
            source_pooled_evaluation=pooled_eval,
            pooled_discovery=pooled_disc.with_augment(aug if augment_discovery else None),
            originals=originals,
        )

    def ready_images(self, arch: VisionArch, cue_conflict_dir: Path | None) -> ReadyImages:
        """:class:`ReadyImages` of ``arch`` (decoded once per run, shared across models)."""
        images = self.eval_images()
        p = arch.resolved_preprocessing

        def of(key: str, dataset: Any) -> ImageTensors:
            return self.decoded(key, dataset).normalised(p.mean, p.std)

        cue = None
        if cue_conflict_dir is not None:
            cue = of("cue-conflict", stimulus_images(cue_conflict_dir, None))
        return ReadyImages(
            original=of("eval-original", images.original(None)) if images.items else None,
            pooled=of("eval-pooled", images.pooled) if images.pooled is not None else None,
            cue_conflict=cue,
        )

    def eval_images(self) -> EvalImages:
        """The evaluation images of ``eval_set`` (original and pooled: the same images)."""
        if self._eval is None:
            index = self.index()
            wnids = {it.wnid for it in index["evaluation"]}
            self._eval = eval_images(self.cfg.eval_set, self.sources.imagenet_dir, index["val"],
                                     self.pooled("val"), wnids)  # fmt: skip
        return self._eval

    def inputs(self) -> Inputs:
        """Every input, resolved (what is resolved already is reused)."""
        return Inputs(
            sources=self.sources,
            mapping=load_decision_mapping(self.sources.decision_mapping),
            index=self.index(),
            pooled={s: self.pooled(s) for s in POOLED_RUN_SUBSETS},
            models={m: self.entry(m) for m in self.cfg.models},
            resolver=self,
            world_size=self.world_size,
        )


def user_resolver(cfg: Table1Config, archs: dict[str, VisionArch]) -> Resolver | None:
    """The resolver of the user's inputs (paper preset); None for a synthetic world (its inputs
    exist once the world is generated) or when a required option is missing."""
    if cfg.world is not None or cfg.imagenet_dir is None or cfg.pooled is None:
        return None
    return Resolver(cfg, archs, user_sources(cfg, archs))


def resolve_inputs(
    cfg: Table1Config,
    out: Path,
    sync: Sync = SINGLE,
    progress: bool = False,
    resolver: Resolver | None = None,
    archs: dict[str, VisionArch] | None = None,
) -> Inputs:
    """Every input: the user's (through ``resolver``, the one the input checks read through on
    rank 0; the other ranks make their own), or the synthetic world's, generated and pretrained
    by rank 0 and cached in ``out``. ``archs``: the models' architectures, when resolved
    already."""
    archs = archs or (resolver.archs if resolver else resolve_archs(cfg))
    if cfg.world is not None:
        archs = world_archs(cfg, archs)
        world = world_sources(cfg, archs, out, sync, progress)
        resolver = Resolver(cfg, archs, world, world_config(cfg).image_size)
    elif resolver is None:
        resolver = user_resolver(cfg, archs)
        if resolver is None:
            raise StageError("--imagenet-dir and --pooled are required with this preset; or use "
                             "--preset mini")  # fmt: skip
    return resolver.inputs()


def describe_pretrained(p: Pretrained) -> str:
    """One line on loaded weights: where from, head size, parameters, preprocessing."""
    params = sum(t.numel() for t in p.model.parameters())
    return (f"{p.source.given or 'library default'}: {p.classes}-class head, {params:,} "
            f"parameters; preprocessing {p.preprocessing.describe()}")  # fmt: skip


def model_record(entry: ModelEntry) -> dict[str, Any]:
    """What a run records of a resolved model."""
    return {
        "arch": entry.arch.name,
        "family": entry.family,
        "weights": entry.pretrained.source.given,
        "preprocessing": entry.arch.resolved_preprocessing.to_dict(),
    }
