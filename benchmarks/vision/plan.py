"""The plan of a table1 run (``subind-bench run table1 ... --plan``): the input checks
(:mod:`benchmarks.vision.checks`), the runs, the fidelity choices and the projected number of
optimizer steps per stage."""

from __future__ import annotations

from pathlib import Path

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
    lines += [f"- [{'ok' if c.ok else 'FAIL'}] {c.what}: {c.detail}" for c in checks]
    counts = None
    if cfg.world is None:
        # the counts the ImageNet check found (indexing the tree again would walk it twice)
        tree = next((c for c in checks if c.what == "ImageNet tree" and c.ok), None)
        if tree is not None and tree.record is not None:
            found = tree.record["counts"]
            counts = {"train": found["train (minus evaluation)"],
                      "discovery": found["discovery"], "evaluation": found["evaluation"]}  # fmt: skip
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
    failed = [c for c in checks if not c.ok]
    lines += [
        "",
        f"{len(failed)} input check(s) failed." if failed else "Every input check passed.",
    ]
    return "\n".join(lines), not failed
