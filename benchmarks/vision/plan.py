"""The plan of a table1 run (``subind-bench run table1 ... --plan``): the input checks
(:mod:`benchmarks.vision.checks`), the runs, the fidelity choices and the projected number of
optimizer steps per stage."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.vision.checks import check_inputs
from benchmarks.vision.config import Table1Config
from benchmarks.vision.fidelity import fidelity_rows
from benchmarks.vision.grid import plan_runs
from benchmarks.vision.inputs import resolve_archs
from benchmarks.vision.models import VisionArch, recipe_family
from benchmarks.vision.strategies import STRATEGIES
from benchmarks.vision.training import recipe
from meanpool.imagenet import PAPER_COUNTS


def image_counts(cfg: Table1Config) -> dict[str, int | None]:
    """Images per set before any tree is read: the paper's lists (training: the 213,555 listed
    minus the 1,549 evaluation images), or the random draw's sizes (its training set depends on
    the tree: None)."""
    if cfg.selection == "paper":
        return {"train": PAPER_COUNTS["training"], "discovery": PAPER_COUNTS["discovery"],
                "evaluation": PAPER_COUNTS["evaluation"]}  # fmt: skip
    return {"train": None, "discovery": 16 * cfg.discovery_per_class,
            "evaluation": 16 * cfg.evaluation_per_class}  # fmt: skip


def run_steps(cfg: Table1Config, strategy: str, family: str, counts: dict[str, int]) -> int:
    """Optimizer steps of one trained run of ``strategy``: its recipe's step budget, or its
    epochs over the training images (data mixture: plus the pooled discovery images)."""
    strat = STRATEGIES.get(strategy)
    r = recipe(cfg, strat.recipe, family)
    if r.steps is not None:
        return r.steps
    images = counts["train"] + (counts["discovery"] if strat.pooled_in_training else 0)
    return r.epochs * -(-images // r.batch_size)


def projected_steps(
    cfg: Table1Config, counts: dict[str, int], families: dict[str, str]
) -> dict[str, dict[str, int]]:
    """Optimizer steps per stage and model, from the image counts of the run ({"train",
    "discovery", "evaluation"}) and each model's recipe family: adaptation, discovery (every
    lambda and the control), transfer (every trained run, by its recipe)."""
    out: dict[str, dict[str, int]] = {}
    for model in cfg.models:
        family = families[model]
        which = cfg.per_family("adapt_images", family)
        adapt_n = counts["discovery"] if which == "discovery" else counts["train"]
        adapt_batch = cfg.per_family("adapt_batch_size", family)
        batch = cfg.per_family("discovery_batch_size", family)
        per_discovery = cfg.per_family("discovery_epochs", family) * -(
            -counts["discovery"] // batch
        )
        trained = [r for r in plan_runs(cfg)
                   if r.model == model and STRATEGIES.get(r.strategy).trains]  # fmt: skip
        out[model] = {
            "adaptation": cfg.per_family("adapt_epochs", family) * -(-adapt_n // adapt_batch),
            "discovery": per_discovery * (len(cfg.penalties) + int(cfg.random_init_control)),
            "transfer": sum(run_steps(cfg, r.strategy, family, counts) for r in trained),
            "transfer runs": len(trained),
        }
    return out


# The guide's assumptions (docs/reproduce-table1.md), not measurements: bf16 at ~35% of an
# H100/H200's dense peak, and JPEG decoding + augmentation at ~4,000 images/s per GPU (about 16
# CPU cores); a stage takes the longer of the two. A discovery step costs ~1.3 plain steps.
ASSUMED_FLOPS_PER_S = 280e12
ASSUMED_IMAGES_PER_S = 4_000
MASK_STEP_FACTOR = 1.3
CUE_CONFLICT_STIMULI = 1_280


def forward_flops(arch: VisionArch) -> float:
    """FLOPs of one image's forward pass (``torch.utils.flop_counter``: a multiply-add counts 2),
    counted on the meta device (no memory, no arithmetic)."""
    with torch.device("meta"):
        model = arch.build(16)
        x = torch.zeros(1, 3, arch.image_size, arch.image_size)
        with FlopCounterMode(display=False) as counter:
            model(x)
    return float(counter.get_total_flops())


def projected_hours(
    cfg: Table1Config, counts: dict[str, int], archs: dict[str, VisionArch]
) -> dict[str, dict[str, float]]:
    """GPU-hours per stage and model on one GPU under the guide's assumptions: each stage's
    images (a training image costs 3 forward passes, a discovery one 1.3 x that), at the slower
    of ``ASSUMED_IMAGES_PER_S`` and ``ASSUMED_FLOPS_PER_S``."""
    out: dict[str, dict[str, float]] = {}
    families = {m: recipe_family(a) for m, a in archs.items()}
    steps = projected_steps(cfg, counts, families)
    for model, arch in archs.items():
        family, fwd = families[model], forward_flops(arch)

        def hours(images: float, flops_per_image: float) -> float:
            return max(images / ASSUMED_IMAGES_PER_S,
                       images * flops_per_image / ASSUMED_FLOPS_PER_S) / 3600  # fmt: skip

        s = steps[model]
        batch = cfg.per_family("adapt_batch_size", family)
        disc_batch = cfg.per_family("discovery_batch_size", family)
        trained = [r for r in plan_runs(cfg)
                   if r.model == model and STRATEGIES.get(r.strategy).trains]  # fmt: skip
        transfer_images = sum(run_steps(cfg, r.strategy, family, counts)
                              * recipe(cfg, STRATEGIES.get(r.strategy).recipe, family).batch_size
                              for r in trained)  # fmt: skip
        runs = [r for r in plan_runs(cfg) if r.model == model]
        curve_images = sum(2 * counts["evaluation"] * (run_steps(cfg, r.strategy, family, counts)
                                                       // max(cfg.eval_every, 1))
                           for r in trained)  # fmt: skip
        eval_images = len(runs) * (2 * counts.get("evaluated", 0) + CUE_CONFLICT_STIMULI)
        out[model] = {
            "adaptation": hours(s["adaptation"] * batch, 3 * fwd),
            "discovery": hours(s["discovery"] * disc_batch, 3 * MASK_STEP_FACTOR * fwd),
            "transfer": hours(transfer_images, 3 * fwd),
            "evaluation": hours(curve_images + eval_images, fwd),
        }
    return out


def _runs_table(cfg: Table1Config) -> list[str]:
    lines = ["| model | strategy | unmasked | seeds | trains |", "|---|---|---|---|---|"]
    groups: dict[tuple[str, str, str], list[int]] = {}
    for r in plan_runs(cfg):
        groups.setdefault((r.model, r.strategy, r.unmasked), []).append(r.seed)
    for (model, strategy, unmasked), seeds in groups.items():
        trains = "yes" if STRATEGIES.get(strategy).trains else "no (evaluated as it is)"
        lines.append(f"| {model} | {strategy} | {unmasked} | "
                     f"{','.join(map(str, seeds))} | {trains} |")  # fmt: skip
    return lines


def plan_text(cfg: Table1Config, out: Path, preset: str) -> tuple[str, bool]:
    """The checks, the image counts, the runs, the fidelity choices and the projected steps."""
    archs: dict[str, VisionArch] = resolve_archs(cfg)
    checks = check_inputs(cfg, out, archs)
    lines = [f"# Plan: table1, preset {preset}, outputs in {out}/", "", "## Inputs", ""]
    lines += [f"- [{c.status}] {c.line()}" for c in checks]
    counts = None
    if cfg.world is None:
        # the counts the ImageNet check found (indexing the tree again would walk it twice)
        tree = next((c for c in checks if c.what == "ImageNet tree" and c.ok), None)
        if tree is not None and tree.record is not None:
            found = tree.record["counts"]
            counts = {"train": found["train (minus evaluation)"],
                      "discovery": found["discovery"], "evaluation": found["evaluation"],
                      "evaluated": found.get("evaluated", found["val"])}  # fmt: skip
    else:
        lines.append(f"- the synthetic world {cfg.world!r} is generated under {out}/world")
    lines += ["", "## Runs", ""] + _runs_table(cfg)
    lines += ["", "## Fidelity choices (docs/table1-fidelity.md)", "",
              "| item | setting | this run | paper text | released code |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['item']} | {r['setting']} | {r['value']} | {r['text']} | {r['released']} |"
              for r in fidelity_rows(cfg)]  # fmt: skip
    lines += ["", "## Projected optimizer steps", ""]
    if counts is None:
        why = ("the world is generated by the run" if cfg.world is not None
               else "the ImageNet tree check failed")  # fmt: skip
        lines.append(f"(not known before the image counts are: {why})")
    else:
        lines += ["| model | adaptation | discovery (all lambdas + control) | transfer runs | "
                  "transfer steps |", "|---|---|---|---|---|"]  # fmt: skip
        families = {m: recipe_family(a) for m, a in archs.items()}
        for model, s in projected_steps(cfg, counts, families).items():
            lines.append(f"| {model} | {s['adaptation']:,} | {s['discovery']:,} | "
                         f"{s['transfer runs']} | {s['transfer']:,} |")  # fmt: skip
        lines += ["", "## Projected GPU-hours (the guide's assumptions, not a measurement)", "",
                  f"One GPU at the slower of {ASSUMED_IMAGES_PER_S:,} images/s and "
                  f"{ASSUMED_FLOPS_PER_S / 1e12:.0f} TFLOP/s (docs/reproduce-table1.md; "
                  "`tools/gpu_check.sh` measures a GPU's). With N GPUs the discoveries are "
                  "dealt and each run's batch is split: about the total / N when data "
                  "loading keeps up.", "",
                  "| model | adaptation | discovery | transfer | evaluation | total |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        total = 0.0
        for model, h in projected_hours(cfg, counts, archs).items():
            total += sum(h.values())
            lines.append(f"| {model} | " + " | ".join(f"{v:,.2f} h" for v in h.values())
                         + f" | {sum(h.values()):,.2f} h |")  # fmt: skip
        lines.append(f"| all models | | | | | {total:,.2f} h |")
    failed = [c for c in checks if not c.ok]
    lines += [
        "",
        f"{len(failed)} input check(s) failed." if failed else "Every input check passed.",
    ]
    return "\n".join(lines), not failed
