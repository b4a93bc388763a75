"""Everything a table1 run will read, checked before the first training step, and the plan of
the run (``subind-bench run table1 ... --plan``): image counts per split, stages, runs, the
fidelity choices and the projected number of training steps.

The checks run on rank 0 at the start of every run with the user's inputs (paper preset), so a
missing stimulus or a pooled build of other images stops the run in seconds, not after hours of
training; ``--plan`` prints the same checks, all of them, without training.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import StageError
from benchmarks.vision.config import Table1Config
from benchmarks.vision.fidelity import fidelity_rows
from meanpool.imagenet import Item
from subind.provenance import digest

POOLED_SUBSETS = ("discovery", "evaluation", "val")


def image_counts(cfg: Table1Config) -> dict[str, int | None]:
    """Images per set before any tree is read: the paper's lists (training: the 213,555 listed
    minus the 1,549 evaluation images), or the random draw's sizes (its training set depends on
    the tree: None)."""
    from meanpool.imagenet import PAPER_COUNTS

    if cfg.selection == "paper":
        return {"train": PAPER_COUNTS["training"], "discovery": PAPER_COUNTS["discovery"],
                "evaluation": PAPER_COUNTS["evaluation"]}  # fmt: skip
    return {"train": None, "discovery": 16 * cfg.discovery_per_class,
            "evaluation": 16 * cfg.evaluation_per_class}  # fmt: skip


@dataclass(frozen=True)
class Check:
    """One input checked: ``detail`` gives counts when it is fine, the problem and its fix (one
    line) when it is not."""

    what: str
    ok: bool
    detail: str
    record: dict[str, Any] | None = None  # what the run records of it (counts, missing files)


def _index(cfg: Table1Config) -> dict[str, list[Item]]:
    from benchmarks.vision.inputs import index_of

    return index_of(cfg)


def _check_imagenet(cfg: Table1Config) -> tuple[Check, dict[str, list[Item]] | None]:
    from benchmarks.vision.inputs import split_items

    try:
        index = _index(cfg)
        train, evaluation, val = split_items(index)
    except (ValueError, StageError) as e:
        return Check("ImageNet tree", False, str(e)), None
    counts = {"train (minus evaluation)": len(train), "discovery": len(index["discovery"]),
              "evaluation": len(evaluation), "val": len(val)}  # fmt: skip
    text = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    from benchmarks.vision.inputs import index_config
    from meanpool.imagenet import missing_record

    missing_all = missing_record(index, index_config(cfg))
    missing = missing_all.get("train")
    if missing and missing["count"]:
        text += (f"; {missing['count']:,} of the {missing['listed']:,} listed training images "
                 "missing (--allow-missing: recorded)")  # fmt: skip
    record = {"counts": counts, "selection": cfg.selection, "missing": missing_all}
    return Check("ImageNet tree", True, f"{cfg.imagenet_dir}: {text}", record), index


def _manifest(pooled: str, subset: str) -> dict[str, Any]:
    """The manifest of one pooled build (a folder, or hf:// read from the local cache)."""
    if pooled.startswith("hf://"):
        from meanpool.loader import _hf_file

        return json.loads(
            Path(_hf_file(f"{pooled.rstrip('/')}/{subset}/manifest.json")).read_text()
        )
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
            manifest = _manifest(cfg.pooled, subset)
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
    from benchmarks.vision.cue_conflict import scan_cue_conflict

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


def _check_weights(cfg: Table1Config) -> list[Check]:
    from benchmarks.vision.inputs import load_pretrained_weights

    checks = []
    for model in cfg.models:
        try:
            detail = load_pretrained_weights(cfg, model)
            checks.append(Check(f"weights of {model}", True, detail))
        except (ValueError, FileNotFoundError) as e:
            checks.append(Check(f"weights of {model}", False, str(e)))
    return checks


def _check_output(cfg: Table1Config, out: Path) -> list[Check]:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        return [Check("output folder", False, f"{out} is not writable ({e}); use another --out")]
    free = shutil.disk_usage(out).free
    need = disk_needed(cfg)
    ok = free >= need
    detail = f"{free / 2**30:,.1f} GiB free, about {need / 2**30:,.1f} GiB needed"
    if not ok:
        detail += f"; free some space under {out} or use another --out"
    return [Check("output folder", True, f"{out} writable"), Check("free disk", ok, detail)]


def parameters(model: str) -> int:
    """Parameters of architecture ``model`` with a 16-class head."""
    from benchmarks.vision.models import arch_for

    return sum(p.numel() for p in arch_for(model).build(16).parameters())


def disk_needed(cfg: Table1Config) -> int:
    """Bytes the outputs take, roughly: every run's saved model (fp32), one training checkpoint
    at a time (model, optimizer state, best state, transfer's frozen originals: about 5 models),
    the adapted models and the masks (one byte per masked weight per discovery)."""
    from benchmarks.vision.runs import plan_runs

    total = 0
    runs = plan_runs(cfg)
    for model in cfg.models:
        p = parameters(model)
        n_runs = sum(r.model == model for r in runs)
        total += 4 * p * (n_runs + 1 + 5) + p * (len(cfg.penalties) + 1)
    return total


def check_inputs(cfg: Table1Config, out: Path) -> list[Check]:
    """Every input of a run with the user's data (no checks for the synthetic presets, whose
    world the run generates)."""
    checks = _check_output(cfg, out)
    if cfg.world is not None:
        return checks
    required = [("--imagenet-dir", cfg.imagenet_dir, "an ImageNet root"),
                ("--pooled", cfg.pooled, "a folder of meanpool builds or hf://datasets/ORG/NAME")]  # fmt: skip
    missing = [Check("required options", False, f"{opt} is required with this preset ({what}); or use --preset "
                     "mini") for opt, value, what in required if value is None]  # fmt: skip
    if missing:
        return checks + missing
    imagenet, index = _check_imagenet(cfg)
    checks.append(imagenet)
    checks += _check_pooled(cfg, index)
    checks.append(_check_cue_conflict(cfg))
    checks += _check_weights(cfg)
    return checks


def require_inputs(cfg: Table1Config, out: Path) -> list[Check]:
    """Every check (all passed), or StageError with the first failed check's one line."""
    checks = check_inputs(cfg, out)
    for check in checks:
        if not check.ok:
            raise StageError(f"{check.what}: {check.detail}")
    return checks


def projected_steps(cfg: Table1Config, counts: dict[str, int]) -> dict[str, dict[str, int]]:
    """Optimizer steps per stage and architecture, from the image counts of the run
    ({"train", "discovery", "evaluation"}): adaptation, discovery (every lambda and the control),
    transfer (every trained run)."""
    from benchmarks.vision.runs import plan_runs
    from benchmarks.vision.strategies import STRATEGIES

    out: dict[str, dict[str, int]] = {}
    for model in cfg.models:
        adapt_n = counts["discovery"] if cfg.adapt_images == "discovery" else counts["train"]
        batch = cfg.per_family("discovery_batch_size", model)
        per_discovery = cfg.per_family("discovery_epochs", model) * -(-counts["discovery"] // batch)
        trained = [r for r in plan_runs(cfg)
                   if r.model == model and STRATEGIES.get(r.strategy).trains]  # fmt: skip
        out[model] = {
            "adaptation": cfg.adapt_epochs * -(-adapt_n // cfg.adapt_batch_size),
            "discovery": per_discovery * (len(cfg.penalties) + int(cfg.random_init_control)),
            "transfer": cfg.train_steps(model) * len(trained),
            "transfer runs": len(trained),
        }
    return out


def _runs_table(cfg: Table1Config) -> list[str]:
    from benchmarks.vision.runs import plan_runs
    from benchmarks.vision.strategies import STRATEGIES

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
    checks = check_inputs(cfg, out)
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
        lines.append("(the image counts are not known before the world is generated)")
    else:
        lines += ["| model | adaptation | discovery (all lambdas + control) | transfer runs | "
                  "transfer steps |", "|---|---|---|---|---|"]  # fmt: skip
        for model, s in projected_steps(cfg, counts).items():
            lines.append(f"| {model} | {s['adaptation']:,} | {s['discovery']:,} | "
                         f"{s['transfer runs']} | {s['transfer']:,} |")  # fmt: skip
    failed = [c for c in checks if not c.ok]
    lines += [
        "",
        f"{len(failed)} input check(s) failed." if failed else "Every input check passed.",
    ]
    return "\n".join(lines), not failed
