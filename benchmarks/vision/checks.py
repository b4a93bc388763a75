"""Everything checked before a table1 run does any work: the config (names, choices, the subnetwork
to transfer) and every input it will read (the output folder, the ImageNet tree, the pooled
builds, the cue-conflict stimuli, the weights).

The input checks run on rank 0 at the start of every run with the user's inputs (paper preset),
so a missing stimulus or a pooled build of other images stops the run in seconds, not after hours
of training; ``--plan`` prints the same checks, all of them, without training. They read through
the run's :class:`~benchmarks.vision.inputs.Resolver`, so what they load the run reuses.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.base import ConfigError, check_names
from benchmarks.harness import StageError, folder_problem
from benchmarks.vision.config import CHOICES, FOLDER_FREE, Table1Config
from benchmarks.vision.cue_conflict import SCORINGS, scan_cue_conflict
from benchmarks.vision.data import RELEASED_SIZE, split_items
from benchmarks.vision.evaluate import averaging_of, eval_items
from benchmarks.vision.grid import plan_runs
from benchmarks.vision.inputs import (
    Resolver,
    describe_pretrained,
    index_config,
    resolve_archs,
    user_resolver,
    world_archs,
)
from benchmarks.vision.models import TRAIN_CROPS, VisionArch, recipe_family
from benchmarks.vision.strategies import STRATEGIES
from benchmarks.vision.training import recipe
from meanpool.imagenet import Item, missing_record
from meanpool.loader import hf_file
from subind.io import NotWritableError, require_writable
from subind.provenance import digest
from subind.train import AMP_MODES
from subind.transfer import UNMASKED_MODES

POOLED_SUBSETS = ("discovery", "evaluation", "val")
# Past this share of a paper list missing (--allow-missing), the run is not the paper's: warned.
MISSING_WARN_SHARE = 0.05


# ------------------------------------------------------------------------------ the config
# Fields that must be >= 1 (counts, sizes, budgets), > 0 (rates, scales), >= 0; None passes.
_AT_LEAST_1 = ("pretrain_epochs", "pretrain_batch_size", "discovery_per_class",
               "evaluation_per_class", "adapt_epochs_resnet", "adapt_epochs_vit",
               "adapt_batch_size_resnet", "adapt_batch_size_vit", "discovery_epochs_resnet",
               "discovery_epochs_vit", "discovery_batch_size_resnet", "discovery_batch_size_vit",
               "batch_size_resnet", "batch_size_vit", "steps", "steps_vit", "scratch_steps_vit",
               "eval_every", "eval_batch_size", "dist_timeout_s", "workers")  # fmt: skip
_POSITIVE = ("pretrain_lr", "adapt_lr_resnet", "adapt_lr_vit", "discovery_lr", "lr")
_NOT_NEGATIVE = ("adapt_weight_decay", "weight_decay", "momentum", "loader_workers",
                 "world_seed", "index_seed")  # fmt: skip


def _ranges(cfg: Table1Config) -> None:
    def bad(name: str, need: str) -> ConfigError:
        value = getattr(cfg, name)
        return ConfigError(f"{name} must be {need}, got {value!r} (--set {name}=...)")

    for name in _AT_LEAST_1:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise bad(name, ">= 1")
    for name in _POSITIVE:
        if getattr(cfg, name) <= 0:
            raise bad(name, "> 0")
    for name in _NOT_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise bad(name, ">= 0")
    if cfg.beta_final < 1:
        raise bad("beta_final", ">= 1")
    if not cfg.penalties or min(cfg.penalties) < 0:
        raise bad("penalties", "one or more lambdas >= 0")
    if not cfg.seeds:
        raise bad("seeds", "one or more seeds")
    if not cfg.models or not cfg.strategies or not cfg.unmasked:
        raise ConfigError("models, strategies and unmasked each need at least one name")
    if cfg.amp not in (None, *AMP_MODES):
        raise bad("amp", f"none or {' or '.join(AMP_MODES)}")
    if cfg.train_crop not in (None, *TRAIN_CROPS):
        raise bad("train_crop", f"none or one of {', '.join(TRAIN_CROPS)}")
    if cfg.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", cfg.device):
        raise bad("device", "auto, cpu, cuda or cuda:N")


def check_world(cfg: Table1Config, families: dict[str, str], world: int) -> None:
    """ConfigError when a DDP run's global batch does not split over ``world`` ranks (each
    recipe's batch: :func:`benchmarks.vision.training.recipe`)."""
    if world <= 1 or cfg.distributed != "ddp":
        return
    for run in plan_runs(cfg):
        strat = STRATEGIES.get(run.strategy)
        if not strat.trains:
            continue
        batch = recipe(cfg, strat.recipe, families[run.model]).batch_size
        if batch % world:
            raise ConfigError(
                f"the {run.strategy} batch {batch} of {run.model} does not split over {world} "
                f"ranks (distributed=ddp); run on a number of ranks that divides it, set "
                f"--set batch_size_resnet/batch_size_vit to a multiple of {world}, or --set "
                "distributed=slice"
            )


def check_config(cfg: Table1Config, world: int = 1) -> dict[str, VisionArch]:
    """ConfigError (one line, naming the setting and the fix) for a config that cannot work:
    an unknown strategy, model, scoring or unmasked mode, a setting outside its choices or
    range, a transfer_penalty that is not among the penalties, released transforms for a model
    that does not take 224 px images, a DDP batch that does not split over ``world`` ranks.
    Returns the models' architectures (``arch_for`` of each)."""
    for mode in cfg.unmasked:
        if mode not in UNMASKED_MODES:
            raise ConfigError(f"--unmasked takes inherit and/or reinit, got {mode!r}")
    check_names(cfg.strategies, STRATEGIES)
    check_names((cfg.cue_conflict_scoring,), SCORINGS)
    for name, choices in CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ConfigError(f"{name} takes {' or '.join(choices)}, got "
                              f"{getattr(cfg, name)!r} (--set {name}=...)")  # fmt: skip
    _ranges(cfg)
    if cfg.transfer_penalty is not None and cfg.transfer_penalty not in cfg.penalties:
        raise ConfigError(
            f"transfer_penalty {cfg.transfer_penalty:g} is not one of the penalties "
            f"({', '.join(f'{p:g}' for p in cfg.penalties)}); add it, or set "
            "transfer_penalty=none to transfer the most accurate subnetwork"
        )
    try:
        archs = resolve_archs(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.transfer_transforms == "released" and cfg.world is None:
        for model, arch in archs.items():
            if arch.family == "vit" and arch.image_size != RELEASED_SIZE:
                raise ConfigError(
                    f"transfer_transforms=released gives {RELEASED_SIZE} px images but {model} "
                    f"takes {arch.image_size} px; use --set transfer_transforms=source"
                )
    if cfg.transfer_transforms == "released" and cfg.world is not None:
        raise ConfigError(
            f"transfer_transforms=released is the released code's {RELEASED_SIZE} px ImageNet "
            f"recipe; the {cfg.world} world's images are small: use --set "
            "transfer_transforms=source"
        )
    check_world(cfg, {m: recipe_family(a) for m, a in archs.items()}, world)
    if cfg.image_decoding == "device" and cfg.transfer_transforms != "released":
        raise ConfigError("image_decoding=device applies the released transforms on the device: "
                          "it needs --set transfer_transforms=released")  # fmt: skip
    if cfg.workers > 1 and cfg.distributed != "slice":
        raise ConfigError("workers > 1 deals whole runs to local processes: it needs --set "
                          "distributed=slice (or run under torchrun for DDP)")  # fmt: skip
    if cfg.stack != "none" and world > 1 and cfg.distributed != "slice":
        raise ConfigError(f"stack={cfg.stack} trains several runs in one process, DDP one run "
                          "over every rank: use --set distributed=slice with it")  # fmt: skip
    return archs


# ------------------------------------------------------------------------------ the inputs
@dataclass(frozen=True)
class Check:
    """One input checked: ``detail`` gives counts when it is fine, the problem and its fix (one
    line) when it is not."""

    what: str
    ok: bool
    detail: str
    record: dict[str, Any] | None = None  # what the run records of it (counts, missing files)
    warning: str | None = None  # fine to go on, but the numbers may mean little: said loudly

    @property
    def status(self) -> str:
        return "FAIL" if not self.ok else "WARN" if self.warning else "ok"

    def line(self) -> str:
        """One line for the plan and the run's log."""
        return f"{self.what}: {self.detail}" + (f" WARNING: {self.warning}" if self.warning else "")


def _check_imagenet(cfg: Table1Config, resolver: Resolver) -> tuple[Check, dict | None]:
    try:
        index = resolver.index()
        train, evaluation, val = split_items(index)
    except (ValueError, StageError) as e:
        return Check("ImageNet tree", False, str(e)), None
    counts = {"train (minus evaluation)": len(train), "discovery": len(index["discovery"]),
              "evaluation": len(evaluation), "val": len(val)}  # fmt: skip
    text = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    missing_all = missing_record(index, index_config(cfg))
    lacking = {name: m for name, m in missing_all.items() if m["count"]}
    if lacking:
        text += "; missing (--allow-missing: recorded): " + ", ".join(
            f"{m['count']:,} of the {m['listed']:,} listed {name} images"
            for name, m in lacking.items()
        )
    shares = {name: m["count"] / m["listed"] for name, m in lacking.items() if m["listed"]}
    worst = max(shares, key=shares.get, default=None)
    warning = None
    if worst is not None and shares[worst] > MISSING_WARN_SHARE:
        warning = (f"{shares[worst]:.2%} of the {worst} list is missing: the run would not be "
                   "the paper's experiment, and its numbers would say little about it")  # fmt: skip
    wnids = {it.wnid for it in index["evaluation"]}
    evaluated = len(eval_items(cfg.eval_set, val, wnids))
    text += (f"; Table 1's original and pooled columns: the same {evaluated:,} validation images "
             f"(eval_set {cfg.eval_set}, accuracy averaged over {averaging_of(cfg.eval_set)})")  # fmt: skip
    counts["evaluated"] = evaluated
    record = {"counts": counts, "selection": cfg.selection, "missing": missing_all}
    return Check("ImageNet tree", True, f"{cfg.imagenet_dir}: {text}", record, warning), index


def _manifest(pooled: str, subset: str) -> dict[str, Any]:
    """The manifest of one pooled build (a folder, or hf:// read from the local cache)."""
    if pooled.startswith("hf://"):
        url = f"{pooled.rstrip('/')}/{subset}/manifest.json"
        return json.loads(Path(hf_file(url, local_only=True)).read_text())
    path = Path(pooled) / subset / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: build it with `meanpool build --subset {subset} --out "
            f"{Path(pooled) / subset} ...` (docs/reproduce-table1.md)"
        )
    return json.loads(path.read_text())


def _check_pooled(cfg: Table1Config, index: dict[str, list[Item]] | None) -> list[Check]:
    """Every pooled build the run reads holds exactly this run's images of its subset."""
    checks = []
    for subset in POOLED_SUBSETS:
        what = f"pooled {subset}"
        try:
            manifest = _manifest(str(cfg.pooled), subset)
        except Exception as e:  # a missing file, a cache miss, unreadable JSON: all one line
            checks.append(Check(what, False, str(e).splitlines()[0]))
            continue
        n, failed = manifest.get("num_samples", 0), manifest.get("num_failures", 0)
        detail = f"{n:,} images" + (f", {failed} failed to pool" if failed else "")
        if index is not None:
            rels = sorted(it.rel for it in index[subset])
            made_from = manifest.get("inputs", {})
            if made_from.get("paths_sha256") != digest(rels):
                checks.append(Check(what, False, (
                    f"the pooled {subset} build in {cfg.pooled} was made from "
                    f"{made_from.get('count', '?')} images that are not this run's {len(rels):,} "
                    f"{subset} images; rebuild it with the same selection "
                    f"(--set selection={cfg.selection})")))  # fmt: skip
                continue
        checks.append(Check(what, True, detail))
    return checks


def _check_cue_conflict(cfg: Table1Config) -> Check:
    if cfg.cue_conflict_dir is None:
        return Check("cue-conflict stimuli", True, "none given: no cue-conflict metrics")
    try:
        stimuli = scan_cue_conflict(cfg.cue_conflict_dir)
    except ValueError as e:
        return Check("cue-conflict stimuli", False, str(e))
    same = sum(s.shape == s.texture for s in stimuli)
    note = "" if len(stimuli) == 1280 else " (Geirhos et al.'s set has 1,280)"
    return Check("cue-conflict stimuli", True,
                 f"{len(stimuli):,} stimuli{note}, {same} same-class")  # fmt: skip


def _check_weights(cfg: Table1Config, resolver: Resolver) -> list[Check]:
    checks = []
    for model in cfg.models:
        try:
            detail = describe_pretrained(resolver.pretrained(model))
            checks.append(Check(f"weights of {model}", True, detail))
        except (ValueError, FileNotFoundError, StageError) as e:
            checks.append(Check(f"weights of {model}", False, str(e)))
    return checks


def parameters(arch: VisionArch) -> int:
    """Parameters of ``arch`` with a 16-class head (built on the meta device: no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in arch.build(16).parameters())


def disk_needed(cfg: Table1Config, archs: dict[str, VisionArch]) -> int:
    """Bytes the outputs take, roughly: every run's saved model (fp32), one training checkpoint
    at a time (model, optimizer state, best state, transfer's frozen originals: about 5 models),
    the adapted models and the masks (one byte per masked weight per discovery)."""
    total = 0
    runs = plan_runs(cfg)
    for model, arch in archs.items():
        p = parameters(arch)
        n_runs = sum(r.model == model for r in runs)
        total += 4 * p * (n_runs + 1 + 5) + p * (len(cfg.penalties) + 1)
    return total


def _check_output(cfg: Table1Config, archs: dict[str, VisionArch], out: Path) -> list[Check]:
    try:
        require_writable(out)
    except NotWritableError as e:
        return [Check("output folder", False, str(e))]
    taken = folder_problem(out, "table1", cfg, FOLDER_FREE)
    if taken:
        return [Check("output folder", False, taken)]
    existing = next(p for p in (out, *out.parents) if p.exists())  # --plan creates nothing
    free = shutil.disk_usage(existing).free
    need = disk_needed(cfg, archs)
    ok = free >= need
    detail = f"{free / 2**30:,.1f} GiB free, about {need / 2**30:,.1f} GiB needed"
    if not ok:
        detail += f"; free some space under {out} or use another --out"
    return [Check("output folder", True, f"{out} writable"), Check("free disk", ok, detail)]


def required_options(cfg: Table1Config) -> list[Check]:
    """A failed check for each option the paper preset needs and was not given."""
    required = [("--imagenet-dir", cfg.imagenet_dir, "an ImageNet root"),
                ("--pooled", cfg.pooled, "a folder of meanpool builds or hf://datasets/ORG/NAME")]  # fmt: skip
    return [Check("required options", False, f"{opt} is required with this preset ({what}); "
                  "or use --preset mini") for opt, value, what in required if value is None]  # fmt: skip


def check_inputs(
    cfg: Table1Config,
    out: Path,
    archs: dict[str, VisionArch] | None = None,
    resolver: Resolver | None = None,
) -> list[Check]:
    """Every input of a run with the user's data, read through ``resolver`` (default: a new
    :func:`~benchmarks.vision.inputs.user_resolver`; pass the run's, so that what the checks
    load the run reuses); the synthetic presets, whose world the run generates, check the
    output folder only. ``archs``: the models' architectures (default: resolved here)."""
    archs = archs or (resolver.archs if resolver else resolve_archs(cfg))
    resolver = resolver or user_resolver(cfg, archs)
    checks = _check_output(cfg, archs, out)
    if cfg.world is not None:
        try:
            world_archs(cfg, archs)
        except StageError as e:
            checks.append(Check("models on the synthetic world", False, str(e)))
        return checks
    if resolver is None:
        return checks + required_options(cfg)
    imagenet, index = _check_imagenet(cfg, resolver)
    checks.append(imagenet)
    checks += _check_pooled(cfg, index)
    checks.append(_check_cue_conflict(cfg))
    checks += _check_weights(cfg, resolver)
    return checks


def require_inputs(
    cfg: Table1Config,
    out: Path,
    archs: dict[str, VisionArch] | None = None,
    resolver: Resolver | None = None,
) -> list[Check]:
    """Every check of :func:`check_inputs` (all passed), or StageError with the first failed
    check's one line."""
    checks = check_inputs(cfg, out, archs, resolver)
    for check in checks:
        if not check.ok:
            raise StageError(f"{check.what}: {check.detail}")
    return checks
