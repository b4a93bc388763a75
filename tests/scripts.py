"""Load a repository script (benchmarks/*.py, tools/*.py) as a module, for tests."""

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relpath: str) -> ModuleType:
    """The module defined by ``ROOT / relpath`` (e.g. "benchmarks/sweep_speed.py")."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
