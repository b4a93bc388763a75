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
