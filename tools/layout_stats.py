"""Size and shape of the code base: files and lines per top-level package, the largest file and
function, and the import arrows between the top-level packages (which package imports which,
counted in import statements, lazy ones inside functions included).

    python tools/layout_stats.py [ROOT]     # ROOT: a checkout (default: this one)
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

PACKAGES = ("subind", "meanpool", "benchmarks", "tools", "tests")


def _files(root: Path, package: str) -> list[Path]:
    return sorted(p for p in (root / package).rglob("*.py") if ".venv" not in p.parts)


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _functions(tree: ast.AST) -> list[tuple[int, str]]:
    """(lines, name) of every function and method."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            out.append((node.end_lineno - node.lineno + 1, node.name))
    return out


def stats(root: Path) -> str:
    lines = ["| package | files | lines |", "|---|---|---|"]
    arrows: Counter[tuple[str, str]] = Counter()
    largest_file = (0, "")
    largest_fn = (0, "")
    for package in PACKAGES:
        files = _files(root, package)
        total = 0
        for path in files:
            text = path.read_text(encoding="utf-8")
            n = len(text.splitlines())
            total += n
            rel = str(path.relative_to(root))
            largest_file = max(largest_file, (n, rel))
            tree = ast.parse(text)
            for length, name in _functions(tree):
                largest_fn = max(largest_fn, (length, f"{rel}:{name}"))
            for module in _imports(tree):
                top = module.split(".")[0]
                if top in PACKAGES and top != package:
                    arrows[(package, top)] += 1
        lines.append(f"| {package} | {len(files)} | {total:,} |")
    lines += [
        "",
        f"largest file: {largest_file[1]} ({largest_file[0]} lines)",
        f"largest function: {largest_fn[1]} ({largest_fn[0]} lines)",
        "",
        "import arrows (importer -> imported: import statements):",
    ]
    lines += [f"  {a} -> {b}: {n}" for (a, b), n in sorted(arrows.items())]
    return "\n".join(lines)


if __name__ == "__main__":
    print(stats(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])))
