"""The layers of the code base: subind (the method) imports neither meanpool nor benchmarks;
meanpool (the dataset builder) does not import benchmarks (the experiments)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = {"subind": ("meanpool", "benchmarks"), "meanpool": ("benchmarks",)}


def _imported(path: Path) -> set[str]:
    """Top-level packages a file imports, lazy (in-function) imports included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(BLOCKED))
def test_no_file_imports_a_higher_layer(package):
    bad = {
        str(p.relative_to(ROOT)): sorted(_imported(p) & set(BLOCKED[package]))
        for p in sorted((ROOT / package).rglob("*.py"))
    }
    assert not {k: v for k, v in bad.items() if v}


_IMPORT_ALL_BLOCKED = """
import importlib, importlib.abc, pkgutil, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is a higher layer than {package}")

sys.meta_path.insert(0, Block())
pkg = importlib.import_module({package!r})
names = [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    if not name.endswith("__main__"):
        importlib.import_module(name)
print(len(names))
"""


@pytest.mark.parametrize("package", sorted(BLOCKED))
def test_every_module_imports_with_the_higher_layers_blocked(package):
    code = _IMPORT_ALL_BLOCKED.format(blocked=set(BLOCKED[package]), package=package)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.strip()) >= 5  # the walk found the package's modules


# --- inside benchmarks/vision: the ground floor, and the order of benchmarks.vision.ORDER -----
_MODELS_ALONE = """
import importlib, importlib.abc, pkgutil, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.startswith("benchmarks.vision.") and not name.startswith("benchmarks.vision.models"):
            raise ImportError(f"{name} is above benchmarks.vision.models")

sys.meta_path.insert(0, Block())
pkg = importlib.import_module("benchmarks.vision.models")
names = [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def test_vision_models_import_with_the_rest_of_vision_blocked():
    res = subprocess.run(
        [sys.executable, "-c", _MODELS_ALONE], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.strip()) >= 7  # preprocessing, arch, weights, libraries, ...


def test_no_import_circle_and_no_arrow_back_up_inside_vision():
    from tests.scripts import load_script

    layout = load_script("tools/layout_stats.py")
    graph = layout.module_graph(ROOT)
    assert "benchmarks.vision.runs" in graph["benchmarks.vision.experiment"]  # lazy ones too
    assert layout.circles(graph) == []
    from benchmarks.vision import ORDER

    vision = {
        m.removeprefix("benchmarks.vision.") for m in graph if m.startswith("benchmarks.vision.")
    }
    assert vision == set(ORDER)  # every module has its place in the order
    assert layout.arrows_back_up(graph, ORDER) == []


def test_the_layout_rule_sees_an_arrow_back_up_and_a_circle():
    from tests.scripts import load_script

    layout = load_script("tools/layout_stats.py")
    graph = {"benchmarks.vision.a": {"benchmarks.vision.b"}, "benchmarks.vision.b": set()}
    assert layout.arrows_back_up(graph, ("a", "b")) == [
        ("benchmarks.vision.a", "benchmarks.vision.b")
    ]
    assert layout.arrows_back_up(graph, ("b", "a")) == []
    graph["benchmarks.vision.b"] = {"benchmarks.vision.a"}
    assert layout.circles(graph) == [["benchmarks.vision.a", "benchmarks.vision.b"]]
