"""16-way decisions and the evaluation of one model on original 16-class ImageNet validation
images, their mean-pooled versions and the cue-conflict stimuli (paper Section 5, Table 1, C.3)."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Subset
from tqdm.auto import tqdm

from benchmarks.vision.cue_conflict import (
    SCORINGS,
    Row,
    per_class_metrics,
    scan_cue_conflict,
    write_responses_csv,
)
from benchmarks.vision.data import FileImages, PooledImages, eval_transform, in_order
from benchmarks.vision.models import VisionArch, num_outputs
from meanpool.config import IndexConfig
from meanpool.imagenet import Item, paper_items, select, sixteen_classes
from subind.io import write_text_atomic
from subind.runtime import resolve_device


def load_decision_mapping(path: str | Path | None = None) -> dict[str, list[int]]:
    """{category: head indices} from a JSON file: either the format of the packaged
    ``imagenet1k_decision_mapping.json`` ({"categories": {cat: {"imagenet_indices": [...]}}}) or
    a plain {cat: [indices]}. None: the packaged 1000-class ImageNet mapping (Geirhos et al.)."""
    if path is None:
        text = resources.files("benchmarks.vision").joinpath(
            "data/imagenet1k_decision_mapping.json"
        )
        data = json.loads(text.read_text())
    else:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read the decision mapping {path}: {e}") from None
    cats = data.get("categories", data) if isinstance(data, dict) else None
    try:
        return {
            c: [int(i) for i in (v["imagenet_indices"] if isinstance(v, dict) else v)]
            for c, v in cats.items()
        }
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ValueError(
            f"{path} is not a decision mapping; expected {{category: [indices]}} or "
            f'{{"categories": {{category: {{"imagenet_indices": [...]}}}}}}'
        ) from None


def check_mapping(
    mapping: dict[str, list[int]], categories: Sequence[str], num_classes: int
) -> None:
    """Raise ValueError (one line) unless every category has indices inside a
    ``num_classes``-way head."""
    for c in categories:
        idx = mapping.get(c)
        if not idx:
            raise ValueError(f"the decision mapping has no indices for category {c!r}")
        if max(idx) >= num_classes or min(idx) < 0:
            raise ValueError(
                f"the decision mapping sends {c!r} to class {max(idx)}, but the head has "
                f"{num_classes} outputs; pass the --decision-mapping that fits this head"
            )


def decide(
    logits: torch.Tensor, categories: Sequence[str], mapping: dict[str, list[int]] | None
) -> torch.Tensor:
    """Logits (B, C) -> (B,) int64 indices into ``categories`` (the 16-class label order).

    ``mapping`` None: the head's C = len(categories) outputs are the categories (argmax).
    Otherwise each category scores the mean softmax probability over its head indices, and the
    decision is the argmax over categories (ties: the first category).
    """
    if mapping is None:
        assert logits.shape[1] == len(categories), (
            f"a {logits.shape[1]}-way head needs a decision mapping to answer in "
            f"{len(categories)} categories"
        )
        return logits.argmax(1)
    check_mapping(mapping, categories, logits.shape[1])
    probs = logits.float().softmax(1)
    scores = torch.stack([probs[:, mapping[c]].mean(1) for c in categories], 1)
    return scores.argmax(1)


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 128
    workers: int = 0
    device: str = "auto"  # "auto": cuda if available, else cpu


@torch.no_grad()
def accuracy(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    device: torch.device,
    batch_size: int,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
) -> float:
    """Top-1 accuracy of a 16-class model on ``dataset`` (items (image tensor, label)); the
    model is evaluated in eval mode and left in the mode it was in. With ``world`` > 1 (DDP
    training: every rank holds the same model), rank r evaluates items r, r + world, ... and the
    counts are summed over the ranks (``torch.distributed.all_reduce``), so each rank evaluates
    its share and every rank gets the whole set's accuracy."""
    was_training = model.training
    model.eval()
    if world > 1:
        dataset = Subset(dataset, range(rank, len(dataset), world))
    counts = torch.zeros(2, dtype=torch.long)  # correct, total
    for x, y in in_order(dataset, batch_size, workers):
        pred = model(x.to(device)).argmax(1).cpu()
        counts += torch.tensor([int((pred == y).sum()), len(y)])
    if world > 1:
        counts = counts.to(device)
        dist.all_reduce(counts)
        counts = counts.cpu()
    model.train(was_training)
    return int(counts[0]) / max(int(counts[1]), 1)


@torch.inference_mode()
def predict(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    categories: Sequence[str],
    mapping: dict[str, list[int]] | None,
    cfg: EvalConfig,
    desc: str = "eval",
    progress: bool = False,
) -> tuple[list[int], list[int]]:
    """(decisions, labels) over ``dataset`` (items (image tensor, label)), in dataset order; the
    model is put in eval mode on ``cfg.device``."""
    device = resolve_device(cfg.device)
    model.eval().to(device)
    preds: list[int] = []
    labels: list[int] = []
    batches = in_order(dataset, cfg.batch_size, cfg.workers)
    for x, y in tqdm(batches, desc=desc, disable=not progress, leave=False):
        logits = model(x.to(device, non_blocking=True))
        preds += decide(logits, categories, mapping).tolist()
        labels += [int(v) for v in y]
    return preds, labels


def _accuracy_by_class(
    preds: Sequence[int], labels: Sequence[int], categories: Sequence[str]
) -> tuple[float, dict[str, dict[str, Any]]]:
    per: dict[str, dict[str, Any]] = {}
    for i, c in enumerate(categories):
        hits = [p == y for p, y in zip(preds, labels, strict=True) if y == i]
        per[c] = {"n": len(hits), "accuracy": sum(hits) / len(hits) if hits else None}
    return sum(p == y for p, y in zip(preds, labels, strict=True)) / len(labels), per


def _per_class_csv(per_class: dict[str, dict[str, Any]]) -> str:
    cols = sorted({k for row in per_class.values() for k in row})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class", *cols])
    for c, row in per_class.items():
        w.writerow([c, *("" if row.get(k) is None else row[k] for k in cols)])
    return buf.getvalue()


def stimulus_images(cue_conflict_dir: str | Path, transform: Any) -> FileImages:
    """The stimuli of ``cue_conflict_dir`` in scan order, labelled by shape class."""
    categories = sixteen_classes()[0]
    root = Path(cue_conflict_dir)
    items = [(str(s.path.relative_to(root)), categories.index(s.shape))
             for s in scan_cue_conflict(root)]  # fmt: skip
    return FileImages(root, items, transform)


@dataclass(frozen=True)
class ReadyImages:
    """Evaluation datasets made once for a run (e.g. decoded into tensors), in the order of
    ``EvalImages`` and of the stimuli's scan: they replace the per-call transforms."""

    original: torch.utils.data.Dataset | None
    pooled: torch.utils.data.Dataset | None
    cue_conflict: torch.utils.data.Dataset | None


def _cue_conflict(
    model: nn.Module,
    cue_conflict_dir: str | Path,
    dataset: torch.utils.data.Dataset,
    mapping: dict[str, list[int]] | None,
    cfg: EvalConfig,
    tag: str,
    progress: bool,
) -> tuple[list[Any], list[str]]:
    """(stimuli, the model's response to each: a category name)."""
    categories = sixteen_classes()[0]
    stimuli = scan_cue_conflict(cue_conflict_dir)
    preds, _ = predict(model, dataset, categories, mapping, cfg, f"{tag} cue-conflict", progress)
    return stimuli, [categories[p] for p in preds]


def _score_cue_conflict(
    rows: Sequence[Row], per_class: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """{scoring key: metrics} of (shape, texture, response) rows under every scoring; adds the
    standard per-class metrics (by shape class) to ``per_class``."""
    for c, m in per_class_metrics(rows).items():
        per_class[c].update({"cue_conflict_n": m["n"], "cue_conflict_accuracy": m["accuracy"],
                             "cue_conflict_robustness": m["robustness"],
                             "cue_conflict_shape_bias": m["shape_bias"]})  # fmt: skip
    return {SCORINGS.get(name).key: SCORINGS.get(name).metrics(rows) for name in SCORINGS}


# ------------------------------------------------------------------------------ evaluation images
# "paper": the validation images of the run's index (the paper's 202 listed WNIDs: the pooled val
# build's images), accuracy over images; "released": the validation images of the WNIDs that
# occur in the evaluation list (151 in the paper's), accuracy averaged over the 16 classes, as
# the released evaluation (pooled_imnet_eval.py) computed it.
EVAL_SETS = ("paper", "released")


@dataclass(frozen=True)
class EvalImages:
    """What a model is evaluated on: the original validation images ``items`` (under ``root``)
    and, when a pooled build is given, their mean-pooled versions: the same images, in the same
    order. ``averaging``: "images" (accuracy over every image) or "classes" (the mean of the
    per-class accuracies of the classes that have images)."""

    eval_set: str
    root: Path | None
    items: tuple[Item, ...]
    pooled: PooledImages | None
    averaging: str

    def original(self, transform: Any) -> FileImages:
        return FileImages(self.root or ".", [(it.rel, it.label) for it in self.items], transform)

    def describe(self) -> str:
        """One line: which images, how many, how accuracy is averaged."""
        what = {"paper": "the index's validation images (the paper's: its 202 listed WNIDs)",
                "released": "the validation images of the evaluation list's WNIDs"}[self.eval_set]  # fmt: skip
        pooled = " and their pooled versions" if self.pooled is not None else ""
        return (f"{what}{pooled}: {len(self.items) or len(self.pooled or ()):,} images, "
                f"accuracy averaged over {self.averaging}")  # fmt: skip


def eval_items(eval_set: str, val: list[Item], evaluation_wnids: set[str]) -> tuple[Item, ...]:
    """The validation items ``eval_set`` evaluates: all of ``val`` ("paper"), or those of the
    WNIDs in ``evaluation_wnids`` ("released")."""
    if eval_set not in EVAL_SETS:
        raise ValueError(f"unknown eval_set {eval_set!r}; use {' or '.join(EVAL_SETS)}")
    if eval_set == "released":
        return tuple(it for it in val if it.wnid in evaluation_wnids)
    return tuple(val)


def averaging_of(eval_set: str) -> str:
    """How ``eval_set`` averages accuracy: over "images" or over "classes"."""
    return "classes" if eval_set == "released" else "images"


def eval_images(
    eval_set: str,
    root: Path | None,
    val: list[Item] | None,
    pooled: PooledImages | None,
    evaluation_wnids: set[str],
) -> EvalImages:
    """The evaluation images of ``eval_set`` from the run's validation items ``val`` (None: no
    originals, the pooled build alone) and the pooled "val" build (None: originals alone).
    ValueError (one line) when the pooled build lacks some of the originals: both columns are
    measured on the same images."""
    averaging = averaging_of(eval_set)
    if val is None:  # pooled images alone: their sources name their WNIDs
        if pooled is not None and eval_set == "released":
            rels = [r for r in pooled.sources if Path(r).parent.name in evaluation_wnids]
            pooled = pooled.subset(rels)
        return EvalImages(eval_set, None, (), pooled, averaging)
    items = eval_items(eval_set, val, evaluation_wnids)
    if not items:
        raise ValueError(
            f"no validation images to evaluate on under {root} (eval_set {eval_set}); check "
            "val/ (val/<wnid>/* or a flat val/ with --val-labels)"
        )
    if pooled is not None:
        have = set(pooled.sources)
        lacking = [it.rel for it in items if it.rel not in have]
        if lacking:
            raise ValueError(
                f"the pooled val build in {pooled.source} lacks {len(lacking):,} of the "
                f"{len(items):,} validation images evaluated (e.g. {lacking[0]}); build it from "
                "the same images (`meanpool index --selection paper`, then `meanpool build "
                "--subset val`), so that original and pooled accuracy are measured on the same "
                "images"
            )
        pooled = pooled.subset([it.rel for it in items])
    return EvalImages(eval_set, root, items, pooled, averaging)


def eval_images_of_tree(
    eval_set: str,
    imagenet_dir: str | Path | None,
    val_labels: str | Path | None = None,
    pooled: str | Path | None = None,
) -> EvalImages:
    """:func:`eval_images` of an ImageNet tree as the paper selects it (the validation images of
    its 202 listed WNIDs; "released": of the WNIDs of its evaluation list) and a pooled build
    (a folder of builds, or hf://, whose "val" build is read)."""
    val = None
    if imagenet_dir is not None:
        val = select(imagenet_dir, "val", IndexConfig(selection="paper"), val_labels)
    pooled_val = PooledImages(pooled, "val", None) if pooled is not None else None
    wnids = {it.wnid for it in paper_items("evaluation")}
    root = None if imagenet_dir is None else Path(imagenet_dir)
    return eval_images(eval_set, root, val, pooled_val, wnids)


def evaluate_model(
    model: nn.Module,
    arch: VisionArch,
    *,
    images: EvalImages | None = None,
    cue_conflict_dir: str | Path | None = None,
    mapping: dict[str, list[int]] | None = None,
    out_dir: Path,
    tag: str,
    cfg: EvalConfig | None = None,
    transform: Any = None,
    cue_transform: Any = None,
    ready: ReadyImages | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` in 16 classes (directly, or through ``mapping`` for another head).

    Sources (each optional): ``images``, the original validation images and their pooled
    versions (the same images: :func:`eval_images`), and the stimuli of ``cue_conflict_dir``.
    ``transform`` / ``cue_transform``: PIL image -> input tensor for the validation images and
    for the stimuli (default: ``eval_transform(arch)`` for both); ``ready``: datasets made once
    that replace them (:class:`ReadyImages`). Returns
    {"original_accuracy", "original_n", "pooled_accuracy", "pooled_n", "eval_set", "averaging",
    "cue_conflict": cue_conflict_metrics (the standard scoring), "cue_conflict_released":
    released_metrics (the paper's released code's scoring; one key per scoring of ``SCORINGS``,
    its ``key``), "per_class": {class: {"original_accuracy", "pooled_accuracy",
    "cue_conflict_accuracy", "cue_conflict_robustness", "cue_conflict_shape_bias" (standard
    scoring), ... "_n"}}} (None for a source not given). Writes ``<out_dir>/per_class/<tag>.csv``
    and, with cue-conflict stimuli, ``<out_dir>/responses/<tag>.csv`` (model-vs-human format,
    subj = tag), atomically.
    """
    cfg = cfg or EvalConfig()
    categories = sixteen_classes()[0]
    heads = num_outputs(model, arch)
    if mapping is None and heads != len(categories):
        raise ValueError(
            f"the model's head has {heads} outputs, not {len(categories)}; pass a decision "
            f"mapping (e.g. load_decision_mapping()) to answer in the 16 categories"
        )
    if mapping is not None:
        check_mapping(mapping, categories, heads)
    transform = transform or eval_transform(arch)
    result: dict[str, Any] = {"original_accuracy": None, "original_n": None,
                              "pooled_accuracy": None, "pooled_n": None,
                              "eval_set": None if images is None else images.eval_set,
                              "averaging": None if images is None else images.averaging}  # fmt: skip
    result.update({SCORINGS.get(name).key: None for name in SCORINGS})
    per_class: dict[str, dict[str, Any]] = {c: {} for c in categories}

    def run(name: str, dataset, averaging: str) -> None:
        preds, labels = predict(model, dataset, categories, mapping, cfg, f"{tag} {name}", progress)
        acc, per = _accuracy_by_class(preds, labels, categories)
        if averaging == "classes":
            acc = statistics.fmean(r["accuracy"] for r in per.values() if r["n"])
        result[f"{name}_accuracy"], result[f"{name}_n"] = acc, len(labels)
        for c, row in per.items():
            per_class[c].update({f"{name}_n": row["n"], f"{name}_accuracy": row["accuracy"]})

    if images is not None and images.items:
        original = ready.original if ready else images.original(transform)
        run("original", original, images.averaging)
    if images is not None and images.pooled is not None:
        pooled = ready.pooled if ready else images.pooled.with_transform(transform)
        run("pooled", pooled, images.averaging)
    if cue_conflict_dir is not None:
        stims = ready.cue_conflict if ready and ready.cue_conflict is not None else (
            stimulus_images(cue_conflict_dir, cue_transform or transform)
        )  # fmt: skip
        stimuli, responses = _cue_conflict(
            model, cue_conflict_dir, stims, mapping, cfg, tag, progress
        )
        rows = [(s.shape, s.texture, r) for s, r in zip(stimuli, responses, strict=True)]
        result.update(_score_cue_conflict(rows, per_class))
        write_responses_csv(Path(out_dir) / "responses" / f"{tag}.csv", stimuli, responses, tag)
    result["per_class"] = per_class
    write_text_atomic(Path(out_dir) / "per_class" / f"{tag}.csv", _per_class_csv(per_class))
    return result
