"""Do two output folders hold the same results? Compares OUT_A/results.jsonl with
OUT_B/results.jsonl record by record (matched by ``key``), every field exactly, except the
fields that record how and when a run was made rather than what it measured (wall times,
provenance). Exit status 0 when every record and field is equal, 1 otherwise.

    python tools/same_results.py runs/before runs/after

Used to show that a refactor changed no number: run the same command and seed before and after
(on the same CPU), then compare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# How long a run took and what produced it: expected to differ between two runs of one command.
VOLATILE = ("wall_seconds", "group_seconds", "seconds", "provenance")


def _records(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / "results.jsonl"
    if not path.is_file():
        sys.exit(f"error: {path} does not exist; give two output folders of `subind-bench run`")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["key"]: r for r in records}


def _strip(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def compare(a: Path, b: Path) -> list[str]:
    """One line per difference (missing records, differing fields); empty when equal."""
    ra, rb = _records(a), _records(b)
    problems = [f"only in {a}: {k}" for k in sorted(set(ra) - set(rb))]
    problems += [f"only in {b}: {k}" for k in sorted(set(rb) - set(ra))]
    for key in sorted(set(ra) & set(rb)):
        x, y = _strip(ra[key]), _strip(rb[key])
        for field in sorted(set(x) | set(y)):
            if x.get(field, "<absent>") != y.get(field, "<absent>"):
                problems.append(
                    f"{key}: {field} differs: {x.get(field, '<absent>')!r:.80} vs "
                    f"{y.get(field, '<absent>')!r:.80}"
                )
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: python tools/same_results.py OUT_A OUT_B", file=sys.stderr)
        return 2
    a, b = map(Path, argv)
    problems = compare(a, b)
    n = len(_records(a))
    fields = sorted({f for r in _records(a).values() for f in _strip(r)})
    if problems:
        print(f"{len(problems)} difference(s) between {a} and {b}:")
        print("\n".join(problems[:50]))
        return 1
    print(f"identical: {n} records, {len(fields)} fields each compared exactly "
          f"(ignored: {', '.join(VOLATILE)})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
