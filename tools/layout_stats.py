"""Size and shape of the code base: files and lines per top-level package, the largest file and
function, the import arrows between the top-level packages (which package imports which,
counted in import statements, lazy ones inside functions included), the import circles between
modules, the arrows that climb back up against the order of benchmarks/vision/
(``benchmarks.vision.ORDER``), and the call sites of ``arch_for``.

    python tools/layout_stats.py [ROOT]     # ROOT: a checkout (default: this one)

Standard library only: reads the files, imports nothing of the project.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

PACKAGES = ("subind", "meanpool", "benchmarks", "tools", "tests")
CODE = ("subind", "meanpool", "benchmarks")  # the packages whose module graph is drawn


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


def _module(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph(root: Path) -> dict[str, set[str]]:
    """{module: modules of the project it imports} over ``CODE`` (relative imports resolved;
    ``from pkg import mod`` counts as importing ``pkg.mod``)."""
    paths = {_module(root, p): p for pkg in CODE for p in _files(root, pkg)}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        is_pkg = path.name == "__init__.py"
        here = name if is_pkg else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                found = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base
                         for a in node.names]  # fmt: skip
            else:
                continue
            deps |= {d for d in found if d in paths and d != name}
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected groups of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def vision_order(root: Path) -> tuple[str, ...]:
    """``benchmarks.vision.ORDER``, read from the file (a literal tuple)."""
    tree = ast.parse((root / "benchmarks" / "vision" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ORDER":
            return tuple(ast.literal_eval(node.value))
    return ()


def arrows_back_up(graph: dict[str, set[str]], order: tuple[str, ...]) -> list[tuple[str, str]]:
    """(importer, imported) pairs inside benchmarks/vision/ that break ``order``: a module that
    imports one listed after it (or one not listed at all)."""
    prefix = "benchmarks.vision."
    rank = {prefix + m: i for i, m in enumerate(order)}
    bad = []
    for mod, deps in sorted(graph.items()):
        if not mod.startswith(prefix):
            continue
        for dep in sorted(deps):
            if dep.startswith(prefix) and (
                mod not in rank or dep not in rank or rank[dep] >= rank[mod]
            ):
                bad.append((mod, dep))
    return bad


def call_sites(root: Path, function: str) -> list[str]:
    """file:line of every call of ``function`` (by name) in ``CODE`` and ``tools``."""
    out = []
    for package in CODE + ("tools",):
        for path in _files(root, package):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                    if name == function:
                        out.append(f"{path.relative_to(root)}:{node.lineno}")
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
    graph = module_graph(root)
    found = circles(graph)
    lines += ["", f"import circles between modules: {len(found)}"]
    lines += [f"  {' <-> '.join(c)}" for c in found]
    order = vision_order(root)
    if order:
        back = arrows_back_up(graph, order)
        vision = [m for m in graph if m.startswith("benchmarks.vision.")]
        edges = sum(
            len([d for d in graph[m] if d.startswith("benchmarks.vision.")]) for m in vision
        )
        lines += [f"benchmarks/vision: {len(vision)} modules, {edges} module imports inside, "
                  f"{len(back)} against benchmarks.vision.ORDER"]  # fmt: skip
        lines += [f"  {a} -> {b}" for a, b in back]
    sites = call_sites(root, "arch_for")
    lines += [f"arch_for call sites: {len(sites)} ({', '.join(sites)})"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(stats(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])))
