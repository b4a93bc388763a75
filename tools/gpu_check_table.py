"""The one table of tools/gpu_check.sh, from the JSON files its steps wrote into OUTDIR.

    python tools/gpu_check_table.py OUTDIR    # prints the table, writes OUTDIR/table.md

Each step STEP leaves OUTDIR/STEP.json (its benchmark's --json), OUTDIR/STEP.log and
OUTDIR/STEP.rc (exit status); a step without a readable JSON file gets a row
"failed: <reason>" (timed out, exit status and the log's last line, or unreadable JSON) and
the others are still reported. The benchmarks are written independently, so fields are
looked up by name fragments (e.g. a number whose key contains "speedup") rather than by
fixed paths; a JSON file with none of the expected fields is shown as its numeric fields.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# (step, title): the steps of gpu_check.sh, in the order of the table.
STEPS = (
    ("meanpool_float32", "meanpool vit_h fp32, realistic load: fast vs reference"),
    ("meanpool_bfloat16", "meanpool vit_h bf16, realistic load: fast vs reference"),
    ("sweep", "fig3 transfer runs: batched vs one at a time"),
    ("mask_step", "discovery mask step vs plain step (target <= 1.3x)"),
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


def _failure(out: Path, step: str) -> str:
    """Why ``step`` left no usable JSON: timeout, exit status, the log's last line."""
    rc_path, log_path = out / f"{step}.rc", out / f"{step}.log"
    if not rc_path.exists():
        return "failed: not run"
    rc = rc_path.read_text().strip()
    lines = log_path.read_text(errors="replace").strip().splitlines() if log_path.exists() else []
    last = lines[-1].strip()[:160] if lines else "no output"
    if rc in ("124", "137"):
        return f"failed: timed out (exit {rc}); last line: {last}"
    if rc == "0":
        return f"failed: exit 0 but no JSON written; last line: {last}"
    return f"failed: exit {rc}: {last}"


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


PARSERS = {
    "meanpool_float32": meanpool_rows,
    "meanpool_bfloat16": meanpool_rows,
    "sweep": sweep_rows,
    "mask_step": mask_step_rows,
}


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
        path = out / f"{step}.json"
        try:
            results = PARSERS[step](json.loads(path.read_text()))
        except FileNotFoundError:
            results = [_failure(out, step)]
        except (OSError, ValueError, AttributeError, TypeError) as e:
            results = [f"failed: unreadable {path.name}: {type(e).__name__}: {e}"]
        for i, text in enumerate(results):
            lines.append(f"| {title if i == 0 else ''} | {text} |")
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
