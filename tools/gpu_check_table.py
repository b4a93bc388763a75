"""The one table of tools/gpu_check.sh, from what its steps wrote into OUTDIR.

    python tools/gpu_check_table.py OUTDIR    # prints the table, writes OUTDIR/table.md

Each step STEP leaves OUTDIR/STEP.log and OUTDIR/STEP.rc (exit status) and its output: the
speed benchmarks OUTDIR/STEP.json (their --json, in the one shape of
benchmarks/speed/result.py: rows of named fields, each number with its unit, read here by row
kind and field name), the end-to-end runs a folder OUTDIR/STEP/ whose results.jsonl is checked
here (every record has its metrics, every number is finite, as many records as the run
reported). A step that failed or timed out gets a row "failed: <reason>" (timed out, exit
status and the log's last line, unreadable output or output of the wrong shape, NaN or missing
metrics), followed by whatever it did write, and the other steps are still reported. Standard
library only (benchmarks/speed/result.py is too, at import): the table comes out even when
torch does not import.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

_ROOT = str(Path(__file__).resolve().parents[1])  # the repository, for benchmarks.speed.result
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
from benchmarks.speed.result import Result, Row, parse_result  # noqa: E402

# (step, title): the steps of gpu_check.sh, in the order of the table.
STEPS = (
    ("meanpool_float32", "meanpool vit_h fp32, realistic load: fast vs reference"),
    ("meanpool_bfloat16", "meanpool vit_h bf16, realistic load: fast vs reference"),
    ("sweep", "fig3 transfer runs: batched vs one at a time"),
    ("mask_step", "discovery mask step vs plain step (target <= 1.3x)"),
    ("loader", "Table 1's training transform on ImageNet-sized JPEGs (images/s)"),
    ("vision_step", "vision training step (s/step, images/s); Table 1 projected"),
    ("stacked_step", "Table 1's runs trained stacked vs one at a time (mini models)"),
    ("table1_tiny", "subind-bench run table1 --preset tiny, cuda, amp bf16"),
    ("fig3_tiny", "subind-bench run fig3 --preset tiny, cuda, batched trainer"),
)
# The benchmark (the "benchmark" of its result) each speed step runs.
BENCHMARKS = {
    "meanpool_float32": "pooling",
    "meanpool_bfloat16": "pooling",
    "sweep": "sweep",
    "mask_step": "mask_step",
    "loader": "loader",
    "vision_step": "vision_step",
    "stacked_step": "stacked_step",
}


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b.0.c': value} for every scalar in nested dicts and lists (a run's records)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out |= _flat(v, f"{prefix}{i}.")
        return out
    return {prefix[:-1]: obj}


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(row: Row | None, key: str, fmt: str = ".2f") -> str:
    """Field ``key`` of ``row`` with its unit ("500 ms/image", "10.00x"), strings and booleans
    as they are; "?" when the row or the field is missing or null."""
    f = None if row is None else row.fields.get(key)
    if f is None or f.value is None or isinstance(f.value, list):
        return "?"
    if not _is_num(f.value):
        return str(f.value)
    return f"{f.value:{fmt}}{'' if f.unit == 'x' else ' '}{f.unit}"


def _last_line(out: Path, step: str) -> str:
    log_path = out / f"{step}.log"
    lines = log_path.read_text(errors="replace").strip().splitlines() if log_path.exists() else []
    return lines[-1].strip()[:160] if lines else "no output"


def _exit_failure(out: Path, step: str) -> str | None:
    """Why ``step`` failed by its exit status (timeout, exit N and the log's last line); None
    when it exited 0 or left no exit status."""
    rc_path = out / f"{step}.rc"
    rc = rc_path.read_text().strip() if rc_path.exists() else "0"
    if rc == "0":
        return None
    if rc in ("124", "137"):
        return f"failed: timed out (exit {rc}); last line: {_last_line(out, step)}"
    return f"failed: exit {rc}: {_last_line(out, step)}"


def _no_output(out: Path, step: str, what: str) -> str:
    """The row of a step that left neither a failing exit status nor its output."""
    if not (out / f"{step}.rc").exists():
        return "failed: not run"
    return f"failed: exit 0 but no {what} written; last line: {_last_line(out, step)}"


def meanpool_rows(res: Result) -> list[str]:
    """One row: both paths' ms per image, the speed-up, same partitions, the fast path's
    encoder time and masks per image ("?" for what a one-path run did not measure)."""
    fast, ref = res.row("fast"), res.row("reference")
    both = res.row("fast vs reference")
    parts = [
        f"fast {_show(fast, 'ms_per_image', '.0f')}",
        f"reference {_show(ref, 'ms_per_image', '.0f')}",
        f"speed-up {_show(both, 'speedup')}",
        f"same partitions: {_show(both, 'same_masks')}",
    ]
    if fast is not None:
        parts.append(f"fast encoder {_show(fast, 'encoder_ms', '.0f')}")
        parts.append(_show(fast, "masks_per_image", ".1f"))
    return ["; ".join(parts)]


def sweep_rows(res: Result) -> list[str]:
    """The paper grid's projection (when both depths were measured), then a row per depth."""
    rows = [
        f"paper grid, batched, projected: {_show(p, 'hours')} on this GPU"
        for p in res.rows_of("projection")
    ]
    rows += [
        f"{r.name}: batched {_show(r, 'batched_runs_per_hour', '.0f')}; one at a time "
        f"{_show(r, 'single_runs_per_hour', '.0f')}; ratio {_show(r, 'speedup', '.1f')}"
        for r in res.rows_of("depth")
    ]
    return rows or ["no depth measured"]


def mask_step_rows(res: Result) -> list[str]:
    """A row per depth: plain and mask step times, their ratio, the uncached ratio."""
    rows = [
        f"{r.name}: plain {_show(r, 'plain_ms')}; mask {_show(r, 'mask_ms')}; ratio "
        f"{_show(r, 'ratio')} (uncached {_show(r, 'naive_ratio')})"
        for r in res.rows_of("depth")
    ]
    return rows or ["no depth measured"]


def _setting(r: Row) -> str:
    """'bf16 0.0246 s/step, 5200 images/s' for one measured setting (or its error)."""
    if r.value("error") is not None:
        return f"{_show(r, 'dtype')} {_show(r, 'error')}"
    return f"{_show(r, 'dtype')} {_show(r, 's_per_step', '.4f')}, {_show(r, 'images_per_s', '.0f')}"


def _projection_row(p: Row, models: list[Row]) -> str:
    head = f"Table 1 projected ({_show(p, 'variant')}, {_show(p, 'dtype')})"
    if p.value("error") is not None:
        return f"{head}: not projected: {_show(p, 'error')}"
    per_model = ", ".join(f"{_show(m, 'model')} {_show(m, 'hours')}" for m in models)
    return (
        f"{head}: 1 GPU {_show(p, 'hours_1gpu')} ({per_model}; discovery "
        f"{_show(p, 'discovery_hours')} of it); {_show(p, 'gpus', 'd')}: DDP "
        f"{_show(p, 'hours_ddp')}, runs dealt {_show(p, 'hours_runs_dealt')}"
    )


def _projection(row: Row) -> tuple[Any, Any]:
    """(variant, dtype): which projection a "projection" or "projection_model" row is of."""
    return row.value("variant"), row.value("dtype")


def vision_step_rows(res: Result) -> list[str]:
    """A row per (arch, batch) with every dtype's time, a row per projection, the assumptions."""
    by_setting: dict[tuple[Any, Any], list[Row]] = {}
    for r in res.rows_of("setting"):
        by_setting.setdefault((r.value("arch"), r.value("batch")), []).append(r)
    rows = [
        f"{arch} batch {batch} ({_show(rs[0], 'roles')}): " + "; ".join(_setting(r) for r in rs)
        for (arch, batch), rs in by_setting.items()
    ]
    models = res.rows_of("projection_model")
    projections = res.rows_of("projection")
    for p in projections:
        rows.append(_projection_row(p, [m for m in models if _projection(m) == _projection(p)]))
    projected = [p for p in projections if p.value("error") is None]
    if projected:
        rows.append(
            f"mask step = {_show(projected[0], 'mask_step_factor')} a plain step (assumed); "
            f"left out: {_show(projected[0], 'left_out')}"
        )
    return rows or ["nothing measured"]


def loader_rows(res: Result) -> list[str]:
    """A row per path (images/s, per core), then the per-GPU rate the projection uses."""
    rows = [f"{r.name}: {_show(r, 'images_per_s')} on {_show(r, 'cores')}; "
            f"{_show(r, 'images_per_s_per_core')} per core" for r in res.rows_of("path")]  # fmt: skip
    p = res.row("projection")
    if p is not None:
        rows.append(f"one GPU's loader ({_show(p, 'cores_per_gpu')}, PIL): "
                    f"{_show(p, 'images_per_s_per_gpu')}")  # fmt: skip
    return rows or ["nothing measured"]


def stacked_step_rows(res: Result) -> list[str]:
    """A row per (arch, runs): one step of all runs one at a time and stacked, the ratio."""
    rows = [f"{_show(r, 'arch')}, {_show(r, 'runs', 'd')} at batch {_show(r, 'batch', 'd')}: one "
            f"at a time {_show(r, 'single_ms', '.1f')}, stacked {_show(r, 'stacked_ms', '.1f')}; "
            f"ratio {_show(r, 'ratio')}; weights differ by {_show(r, 'max_weight_diff', '.1e')}"
            for r in res.rows_of("setting")]  # fmt: skip
    return rows or ["nothing measured"]


PARSERS = {
    "meanpool_float32": meanpool_rows,
    "meanpool_bfloat16": meanpool_rows,
    "sweep": sweep_rows,
    "mask_step": mask_step_rows,
    "loader": loader_rows,
    "vision_step": vision_step_rows,
    "stacked_step": stacked_step_rows,
}


class RunCheck(NamedTuple):
    """What every record of an end-to-end run must hold (a NamedTuple, not a dataclass: the
    tests load this script without registering it in sys.modules)."""

    required: tuple[str, ...]  # flattened keys that must be present and not null
    optional: tuple[str, ...] = ()  # may be null (defined as such), finite when present
    expect: tuple[tuple[str, Any], ...] = ()  # (key, value) every record must have


RUN_CHECKS = {
    # shape_bias is None by definition when a model made no shape or texture decision.
    "table1_tiny": RunCheck(
        (
            "original_accuracy",
            "pooled_accuracy",
            "cue_conflict.accuracy",
            "cue_conflict.robustness",
        ),
        optional=("cue_conflict.shape_bias",),
    ),
    "fig3_tiny": RunCheck(("val_accuracy", "test_accuracy"), expect=(("trainer", "batched"),)),
}
_RUNS_LINE = re.compile(r"^(\d+) runs; wall time (\d+) s")


def _records(path: Path) -> list[dict[str, Any]]:
    """The records of a results.jsonl (NaN / Infinity parse as floats); ValueError naming the
    line that is not a JSON object."""
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise ValueError(f"line {i}: {e}") from None
            if not isinstance(rec, dict):
                raise ValueError(f"line {i}: not a JSON object")
            records.append(rec)
    return records


def record_problems(rec: dict[str, Any], check: RunCheck) -> list[str]:
    """What is wrong with one record: missing / null required metrics, non-finite numbers
    anywhere (curves, per-class figures included), unexpected values."""
    flat = _flat({k: v for k, v in rec.items() if k != "provenance"})
    problems = [f"{k} missing" for k in check.required if flat.get(k) is None]
    problems += [
        f"{k}={v}" for k, v in flat.items() if isinstance(v, float) and not math.isfinite(v)
    ]
    problems += [
        f"{k}={flat.get(k)!r}, expected {v!r}" for k, v in check.expect if flat.get(k) != v
    ]
    return problems


def _reported_runs(out: Path, step: str) -> tuple[int | None, int | None]:
    """(runs, wall seconds) from the run's last summary line in its log, or Nones."""
    log_path = out / f"{step}.log"
    found = (None, None)
    if log_path.exists():
        for line in log_path.read_text(errors="replace").splitlines():
            m = _RUNS_LINE.match(line.strip())
            if m:
                found = (int(m.group(1)), int(m.group(2)))
    return found


def _range(records: list[dict[str, Any]], key: str) -> str:
    values = [v for r in records if _is_num(v := _flat(r).get(key))]
    return f"{key} {min(values):.3f}-{max(values):.3f}" if values else f"{key} -"


def _run_failures(
    records: list[dict[str, Any]], reported: int | None, bad: list[tuple[str, list[str]]]
) -> list[str]:
    """The "failed: ..." rows of a run's records: none, fewer or more than the run reported,
    records with NaN or missing metrics (the first three shown)."""
    rows = []
    if not records:
        rows.append("failed: results.jsonl has no records")
    if reported is not None and reported != len(records):
        rows.append(
            f"failed: results.jsonl has {len(records)} records, the run reported {reported}"
        )
    if bad:
        shown = "; ".join(f"{key}: {', '.join(p[:3])}" for key, p in bad[:3])
        rows.append(
            f"failed: {len(bad)} of {len(records)} records have NaN or missing metrics: {shown}"
        )
    return rows


def run_rows(out: Path, step: str) -> list[str]:
    """The rows of an end-to-end run step from OUTDIR/STEP/results.jsonl (and config.json):
    a "failed: ..." row per problem, then the record count with the run's settings and the
    metrics' ranges. FileNotFoundError when there is no results.jsonl."""
    check = RUN_CHECKS[step]
    records = _records(out / step / "results.jsonl")
    reported, wall = _reported_runs(out, step)
    bad = [(r.get("key", f"record {i}"), p) for i, r in enumerate(records, 1)
           if (p := record_problems(r, check))]  # fmt: skip
    summary = f"{len(records)} records"
    summary += f" (the run reported {reported})" if reported is not None else ""
    summary += "" if bad else ", every metric present and finite"
    summary += "".join(f"; {k} {v}" for k, v in _run_config(out / step / "config.json").items())
    summary += f"; wall time {wall} s" if wall is not None else ""
    for key in check.optional:
        undefined = sum(_flat(r).get(key) is None for r in records)
        summary += f"; {key} undefined in {undefined}" if undefined else ""
    ranges = "; ".join(_range(records, k) for k in check.required + check.optional)
    return _run_failures(records, reported, bad) + [summary, ranges]


def _run_config(path: Path) -> dict[str, Any]:
    """The settings worth a glance from a run's config.json (device, amp, batch_runs)."""
    try:
        cfg = json.loads(path.read_text()).get("config", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: cfg[k] for k in ("device", "amp", "batch_runs") if k in cfg}


def _output_name(step: str) -> str:
    return f"{step}/results.jsonl" if step in RUN_CHECKS else f"{step}.json"


def step_rows(out: Path, step: str) -> list[str]:
    """The rows of one step: its failure first (if any), then whatever it wrote."""
    failure = _exit_failure(out, step)
    try:
        if step in RUN_CHECKS:
            rows = run_rows(out, step)
        else:
            data = json.loads((out / f"{step}.json").read_text())
            rows = PARSERS[step](parse_result(data, BENCHMARKS[step]))
    except FileNotFoundError:
        return [failure or _no_output(out, step, _output_name(step))]
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as e:
        rows = [f"failed: unreadable {_output_name(step)}: {type(e).__name__}: {e}"]
    return ([failure] if failure else []) + rows


def table(out: Path) -> str:
    """The markdown table for OUTDIR: environment lines, then a row per step (or result)."""
    lines = ["# GPU check", ""]
    env_path = out / "env.json"
    try:
        env = json.loads(env_path.read_text())
        lines.append(
            f"GPU: {env.get('gpu')}; torch {env.get('torch')}; CUDA {env.get('cuda')}; "
            f"git {env.get('git_commit')}"
        )
    except (OSError, ValueError) as e:
        lines.append(f"environment: failed: {type(e).__name__}: {e}")
    lines += ["", "| step | result |", "|---|---|"]
    for step, title in STEPS:
        for i, text in enumerate(step_rows(out, step)):
            lines.append(f"| {title if i == 0 else ''} | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python tools/gpu_check_table.py OUTDIR (a folder gpu_check.sh wrote)")
        return 2
    out = Path(argv[0])
    text = table(out)
    tmp = out / "table.md.tmp"
    tmp.write_text(text)
    tmp.replace(out / "table.md")  # atomic: a reader never sees half a table
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
