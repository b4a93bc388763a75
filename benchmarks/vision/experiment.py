"""The vision experiment as ``subind-bench`` knows it: table1 (paper Tables 1-2, Figures 5 and
11, Appendix C), with its options, checks, run and reports (pipeline:
:mod:`benchmarks.vision.inputs`, :mod:`benchmarks.vision.stages`, :mod:`benchmarks.vision.runs`).
The vision stack (torchvision, the datasets) is imported only when it runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.base import COMMON_OPTIONS, ConfigError, Experiment, Option, Outcome, names
from benchmarks.vision.config import FOLDER_FREE, PRESETS, REAL_DATA_FIELDS, Table1Config
from subind.io import read_jsonl
from subind.runtime import dist_env


def _title(cfg: Table1Config, preset: str | None) -> str:
    where = "synthetic shape/texture world" if cfg.world else "16-class ImageNet"
    return f"Table 1: training strategies on {where}" + (f" (preset {preset})" if preset else "")


@dataclass(frozen=True)
class VisionExperiment(Experiment):
    def resolve(
        self, preset: str | None, overrides: dict[str, Any], sets: tuple[str, ...]
    ) -> Table1Config:
        """As Experiment.resolve; real-data options (ImageNet, pooled builds, stimuli, weights)
        need the paper preset: the synthetic presets would ignore them."""
        given = [k for k in REAL_DATA_FIELDS if overrides.get(k) is not None]
        given += [s.partition("=")[0] for s in sets if s.partition("=")[0] in REAL_DATA_FIELDS]
        flags = ", ".join("--" + k.replace("_", "-") for k in dict.fromkeys(given))
        if given and preset is None:
            raise ConfigError(
                f"{flags} given without --preset: the default preset ({self.default_preset}) "
                "runs on its own synthetic world and would ignore them; pass --preset paper"
            )
        cfg = super().resolve(preset, overrides, sets)
        if given and cfg.world is not None:
            raise ConfigError(
                f"the {preset} preset generates its own synthetic world and would ignore "
                f"{flags}; pass --preset paper for your own data"
            )
        return cfg

    def check(self, cfg: Table1Config) -> None:
        # The pipeline's modules import torchvision: only once a command needs them, so that
        # `subind-bench ls` and the arithmetic experiments start without it (here and below).
        from benchmarks.vision.checks import check_config

        check_config(cfg, dist_env()[1])  # under torchrun: the batch split over its ranks

    def plan(self, cfg: Table1Config, out: Path, preset: str) -> tuple[str, bool]:
        from benchmarks.vision.plan import plan_text

        return plan_text(cfg, out, preset)

    def run(self, cfg: Table1Config, out: Path, preset: str, progress: bool) -> Outcome | None:
        from benchmarks.vision.report import (
            data_note,
            table1_md,
            table2_md,
            table2_rows,
            write_reports,
        )
        from benchmarks.vision.runs import run_table1, run_table1_workers

        if cfg.workers > 1 and dist_env()[1] == 1:  # start the workers; rank 0 reports
            run_table1_workers(cfg, out, preset, progress)
            text = (out / "table1.md").read_text().split("\n## ")[0]
            table2 = (out / "table2.md").read_text() if (out / "table2.md").exists() else ""
            return Outcome(text + "\n" + table2, len(read_jsonl(out / "results.jsonl")))
        records, stages = run_table1(cfg, out, progress, preset)
        if dist_env()[0] != 0:
            return None  # under torchrun, rank 0 writes the reports
        table2 = table2_rows(stages)
        data = data_note(cfg.world)
        write_reports(records, out, _title(cfg, preset), table2, cfg.cue_conflict_scoring, data)
        return Outcome(table1_md(records, _title(cfg, preset), data) + "\n" + table2_md(table2),
                       len(records))  # fmt: skip

    def report(self, out: Path, records: list[dict[str, Any]]) -> str:
        from benchmarks.vision.report import data_note, table1_md, write_reports

        saved = json.loads((out / "config.json").read_text())
        cfg = Table1Config(world=saved["config"].get("world"))
        table2_path = out / "table2.json"
        table2 = json.loads(table2_path.read_text()) if table2_path.exists() else None
        title, data = _title(cfg, saved.get("preset")), data_note(cfg.world)
        write_reports(records, out, title, table2, data=data)
        return table1_md(records, title, data)


# The image inputs of table1, shared with `subind-bench evaluate` (benchmarks/vision/cli.py).
IMAGE_OPTIONS = (
    Option("--imagenet-dir", "imagenet_dir", "ImageNet root (train/<wnid>/, val/<wnid>/ or a "
           "flat val/ with --val-labels); its 16-class validation images are evaluated"),
    Option("--val-labels", "val_labels", "labels of a flat val/ folder (LOC_val_solution.csv "
           "or '<file> <wnid>' lines)"),
    Option("--pooled", "pooled", "a folder of meanpool builds (<pooled>/<subset>/manifest.json) "
           "or hf://datasets/ORG/NAME from the local Hugging Face cache"),
    Option("--cue-conflict-dir", "cue_conflict_dir", "Geirhos et al.'s "
           "style-transfer-preprocessed-512 folder (<shape>/<shape><n>-<texture><m>.png)"),
    Option("--decision-mapping", "decision_mapping", "JSON category -> head indices, for a head "
           "that is not 16-way (default: the packaged ImageNet-1k mapping)"),
)  # fmt: skip

# The evaluation settings of table1, shared with `subind-bench evaluate`.
EVAL_OPTIONS = (
    Option("--eval-set", "eval_set", "which validation images the original and pooled columns "
           "share: paper (the 202 listed WNIDs', accuracy over images; default) or released "
           "(the evaluation list's WNIDs, accuracy averaged over classes)"),
)  # fmt: skip

TABLE1 = VisionExperiment(
    "table1",
    "vision Subtask Induction: paper Tables 1-2, Figures 5 and 11, Appendix C",
    Table1Config,
    PRESETS,
    "mini",
    COMMON_OPTIONS
    + IMAGE_OPTIONS
    + EVAL_OPTIONS
    + (
        Option(
            "--allow-missing/--no-allow-missing",
            "allow_missing",
            "go on without the listed images the ImageNet tree lacks (recorded)",
            None,
        ),
        Option(
            "--weights-resnet18",
            "weights_resnet18",
            "resnet18's weights: a torchvision "
            "state dict, a transformers checkpoint folder or hf://microsoft/resnet-18 (local "
            "cache)",
        ),
        Option(
            "--weights-vit",
            "weights_vit",
            "vit_b_16's weights (e.g. hf://google/vit-base-patch16-224, from the local cache)",
        ),
        Option(
            "--models",
            "models",
            "comma-separated: resnet18, vit_b_16, torchvision:NAME, timm:NAME, hf:ORG/NAME",
            names,
        ),
        Option("--strategies", "strategies", "comma-separated; see `subind-bench ls`", names),
    ),
    "table1.md, table1.csv, table2.md, per_class.md, fig5.png, responses/",
    free_fields=FOLDER_FREE,
)
