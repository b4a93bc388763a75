"""The one table of tools/gpu_check.sh, from what its steps wrote into OUTDIR.

    python tools/gpu_check_table.py OUTDIR    # prints the table, writes OUTDIR/table.md

Each step STEP leaves OUTDIR/STEP.log and OUTDIR/STEP.rc (exit status) and its output: the
benchmarks OUTDIR/STEP.json (their --json), the end-to-end runs a folder OUTDIR/STEP/ whose
results.jsonl is checked here (every record has its metrics, every number is finite, as many
records as the run reported). A step that failed or timed out gets a row "failed: <reason>"
(timed out, exit status and the log's last line, unreadable output, NaN or missing metrics),
followed by whatever it did write, and the other steps are still reported. The older
benchmarks were written independently, so their fields are looked up by name fragments (e.g. a
number whose key contains "speedup") rather than by fixed paths; a JSON file with none of the
expected fields is shown as its numeric fields. Standard library only: the table comes out
even when torch does not import.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

# (step, title): the steps of gpu_check.sh, in the order of the table.
STEPS = (
    ("meanpool_float32", "meanpool vit_h fp32, realistic load: fast vs reference"),
    ("meanpool_bfloat16", "meanpool vit_h bf16, realistic load: fast vs reference"),
    ("sweep", "fig3 transfer runs: batched vs one at a time"),
    ("mask_step", "discovery mask step vs plain step (target <= 1.3x)"),
    ("vision_step", "vision training step (s/step, images/s); Table 1 projected"),
    ("table1_tiny", "subind-bench run table1 --preset tiny, cuda, amp bf16"),
    ("fig3_tiny", "subind-bench run fig3 --preset tiny, cuda, batched trainer"),
)


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b.0.c': value} for every scalar in nested dicts and lists."""
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


def _find(flat: dict[str, Any], *needles: str, exclude: tuple[str, ...] = ()) -> Any:
    """The first value whose lower-cased key contains every needle and no excluded word."""
    for key, value in flat.items():
        k = key.lower()
        if all(n in k for n in needles) and not any(x in k for x in exclude):
            return value
    return None


def _num(value: Any, fmt: str = ".2f", unit: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    return f"{value:{fmt}}{unit}"


def _numeric(flat: dict[str, Any], limit: int = 8) -> str:
    items = [
        f"{k}={v:.3g}"
        for k, v in flat.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and "provenance" not in k
    ]
    return "unrecognised fields: " + (", ".join(items[:limit]) or "none")


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


def meanpool_rows(data: dict[str, Any]) -> list[str]:
    flat = _flat({k: v for k, v in data.items() if k != "provenance"})
    parts_ms = ("encoder", "decoder", "postprocess", "prompt", "all")
    fast = _find(flat, "fast", "ms_per_image") or _find(flat, "fast", "ms", exclude=parts_ms)
    ref = _find(flat, "reference", "ms_per_image") or _find(
        flat, "reference", "ms", exclude=parts_ms
    )
    speedup = _find(flat, "speedup") or _find(flat, "speed_up")
    if speedup is None and isinstance(fast, int | float) and isinstance(ref, int | float) and fast:
        speedup = ref / fast
    same = _find(flat, "same")
    enc = _find(flat, "fast", "encoder")
    masks = _find(flat, "fast", "masks_per_image")
    if fast is None and ref is None and speedup is None:
        return [_numeric(flat)]
    parts = [
        f"fast {_num(fast, '.0f', ' ms/img')}",
        f"reference {_num(ref, '.0f', ' ms/img')}",
        f"speed-up {_num(speedup, '.2f', 'x')}",
        f"same partitions: {same if same is not None else '?'}",
    ]
    if enc is not None:
        parts.append(f"fast encoder {_num(enc, '.0f', ' ms/img')}")
    if masks is not None:
        parts.append(f"masks/img {_num(masks, '.1f')}")
    return ["; ".join(parts)]


def _per_layer(data: Any) -> list[dict[str, Any]]:
    """The per-depth entries: a list of dicts with 'layers', wherever it sits."""
    dicts = isinstance(data, list) and data and all(isinstance(x, dict) for x in data)
    if dicts and any("layers" in x for x in data):
        return data
    if isinstance(data, dict):
        for v in data.values():
            found = _per_layer(v)
            if found:
                return found
    return []


def sweep_rows(data: dict[str, Any]) -> list[str]:
    rows = []
    top = _flat({k: v for k, v in data.items() if not isinstance(v, list | dict)})
    hours = _find(top, "grid", "hour")
    if isinstance(hours, int | float):
        rows.append(f"paper grid, batched, projected: {hours:.2f} h on this GPU")
    for entry in _per_layer(data) or [data]:
        flat = _flat({k: v for k, v in entry.items() if k != "provenance"})
        batched = _find(flat, "batched", "per_h") or _find(flat, "batched", "runs_per")
        single = None
        for word in ("one", "single", "serial", "sequential", "unbatched"):
            single = single or _find(flat, word, "per_h") or _find(flat, word, "runs_per")
        ratio = _find(flat, "ratio") or _find(flat, "speedup") or _find(flat, "speed_up")
        if ratio is None and isinstance(batched, int | float) and isinstance(single, int | float):
            ratio = batched / single if single else None
        layers = entry.get("layers", "?") if isinstance(entry, dict) else "?"
        if batched is None and single is None and ratio is None:
            rows.append(f"L{layers}: {_numeric(flat)}")
            continue
        rows.append(
            f"L{layers}: batched {_num(batched, '.0f', ' runs/h')}; one at a time "
            f"{_num(single, '.0f', ' runs/h')}; ratio {_num(ratio, '.1f', 'x')}"
        )
    return rows


def mask_step_rows(data: dict[str, Any]) -> list[str]:
    rows = []
    for r in _per_layer(data):
        rows.append(
            f"L{r.get('layers', '?')}: plain {_num(r.get('plain_ms'), '.2f', ' ms')}; mask "
            f"{_num(r.get('mask_ms'), '.2f', ' ms')}; ratio {_num(r.get('ratio'), '.2f', 'x')} "
            f"(uncached {_num(r.get('naive_ratio'), '.2f', 'x')})"
        )
    return rows or [_numeric(_flat(data))]


def _ms(r: dict[str, Any]) -> str:
    """'bf16 24.6 ms/step, 5200 img/s' for one measured setting (or its error)."""
    if "error" in r:
        return f"{r.get('dtype', '?')} {r['error']}"
    s = r.get("s_per_step")
    ms = _num(1000 * s if _is_num(s) else None, ".1f", " ms/step")
    return f"{r.get('dtype', '?')} {ms}, {_num(r.get('images_per_s'), '.0f', ' img/s')}"


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _projection_row(p: dict[str, Any]) -> str:
    head = f"Table 1 projected ({p.get('variant', '?')}, {p.get('dtype', '?')})"
    if "error" in p:
        return f"{head}: not projected: {p['error']}"
    models = p.get("models") or {}
    per_model = ", ".join(
        f"{m} {_num(w.get('train_hours', 0) + w.get('discovery_hours', 0), '.2f', ' h')}"
        for m, w in models.items()
    )
    discovery = sum(w.get("discovery_hours", 0) for w in models.values())
    return (
        f"{head}: 1 GPU {_num(p.get('hours_1gpu'), '.2f', ' h')} ({per_model}; discovery "
        f"{_num(discovery, '.2f', ' h')} of it); {p.get('gpus', '?')} GPUs: DDP "
        f"{_num(p.get('hours_ddp'), '.2f', ' h')}, runs dealt "
        f"{_num(p.get('hours_runs_dealt'), '.2f', ' h')}"
    )


def vision_step_rows(data: dict[str, Any]) -> list[str]:
    """A row per (arch, batch) with every dtype's time, a row per projection, the assumptions."""
    by_setting: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in data.get("results", []):
        by_setting.setdefault((r["arch"], r["batch"]), []).append(r)
    rows = [
        f"{arch} batch {batch} ({', '.join(rs[0].get('roles', []))}): "
        + "; ".join(_ms(r) for r in rs)
        for (arch, batch), rs in by_setting.items()
    ]
    rows += [_projection_row(p) for p in data.get("projections", [])]
    if data.get("projections"):
        assumed = " (assumed)" if data.get("mask_step_factor_assumed") else ""
        rows.append(
            f"mask step = {_num(data.get('mask_step_factor'), '.2f', 'x')} a plain step{assumed}; "
            f"left out: {data.get('left_out', '?')}"
        )
    return rows or [_numeric(_flat(data))]


PARSERS = {
    "meanpool_float32": meanpool_rows,
    "meanpool_bfloat16": meanpool_rows,
    "sweep": sweep_rows,
    "mask_step": mask_step_rows,
    "vision_step": vision_step_rows,
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
            rows = PARSERS[step](json.loads((out / f"{step}.json").read_text()))
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
