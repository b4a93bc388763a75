"""What an experiment is to ``subind-bench``: an :class:`Experiment` owns its config dataclass
and presets, the command-line options that set its fields, the checks of a resolved config, the
run (which writes results and reports) and the rewriting of reports from a finished output
folder. The experiments themselves are registered in :mod:`benchmarks.experiments`; each
imports its heavy modules (e.g. the vision stack) only when it runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from benchmarks.harness import StageError
from subind.registry import Registry
from subind.transfer import UNMASKED_MODES


class ConfigError(ValueError):
    """A setting that cannot work (one line naming the setting and the fix)."""


def ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise ConfigError(f"expected comma-separated integers (e.g. 0,1,2), got {text!r}") from None


def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers, got {text!r}") from None


def names(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.replace(" ", "").split(",") if x)


@dataclass(frozen=True)
class Option:
    """A command-line option that sets one config field: ``--flag VALUE`` parsed by ``parse``,
    or, when ``parse`` is None, an on/off pair such as ``--trainable-subnetwork/--frozen-...``."""

    flag: str
    field: str
    help: str
    parse: Callable[[str], Any] | None = str
    hidden: bool = False  # accepted but not listed by --help

    def click_option(self, required: bool = False) -> click.Option:
        """The click option (value unparsed: None when not given), for `subind-bench run` and
        for the commands that share an experiment's options (e.g. `evaluate`)."""
        metavar = None if self.parse is None else "VALUE"  # None: an on/off flag pair
        return click.Option([self.flag], default=None, help=self.help, metavar=metavar,
                            hidden=self.hidden, required=required)  # fmt: skip


# Options every experiment has (its config has these fields).
COMMON_OPTIONS = (
    Option("--seeds", "seeds", "comma-separated seeds of the trained runs", ints),
    Option("--unmasked", "unmasked", "inherit,reinit or one of them: what a transferred model "
           "takes from the source outside the masked tensors", names),  # fmt: skip
    Option("--device", "device", "auto (CUDA when available), cpu, cuda, cuda:1"),
    Option("--trainable-subnetwork/--frozen-subnetwork", "subnetwork_trainable",
           "let the transferred entries train (paper Figure 7); frozen by default", None),
)  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """What a finished run shows: its tables, and how many runs its results hold."""

    text: str
    runs: int


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper (see the module docstring); subclasses implement the
    methods that raise NotImplementedError."""

    name: str
    doc: str
    config_class: type
    presets: Registry
    default_preset: str
    options: tuple[Option, ...] = ()
    outputs: str = ""  # the files a run writes, for the closing line of `subind-bench run`
    # The exceptions of a run that are the user's to fix: one line on stderr, exit status 1.
    errors: tuple[type[BaseException], ...] = (StageError, ValueError, FileNotFoundError)
    # Config fields that may differ between runs into one output folder (harness.claim_folder):
    # which runs and seeds (each record's key holds what it depends on) and execution settings.
    free_fields: tuple[str, ...] = ()

    def preset(self, name: str) -> Any:
        """The config of preset ``name`` (KeyError with a suggestion when unknown)."""
        return self.presets.get(name)

    def resolve(self, preset: str | None, overrides: dict[str, Any], sets: tuple[str, ...]) -> Any:
        """The preset (None: the default one) with the options given (None: not given) and
        ``--set FIELD=VALUE``s."""
        preset = preset or self.default_preset
        if preset not in self.presets:
            raise ConfigError(self.presets.unknown_message(preset))
        fields = {f.name: f for f in dataclasses.fields(self.config_class)}
        changes = {k: v for k, v in overrides.items() if v is not None}
        for item in sets:
            key, sep, value = item.partition("=")
            if not sep or key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.6)
                close += [f for f in fields if (key in f or f in key) and f not in close]
                raise ConfigError(
                    f"--set takes FIELD=VALUE with a {self.config_class.__name__} field, got "
                    f"{item!r}" + (f"; did you mean {', '.join(close[:3])}?" if close else "")
                    + f" (`subind-bench ls {self.name}` lists the fields)"
                )  # fmt: skip
            changes[key] = coerce(self.config_class, key, value)
        return dataclasses.replace(self.preset(preset), **changes)

    def check(self, cfg: Any) -> None:
        """Raise ConfigError for a setting that cannot work, before anything runs."""
        for mode in cfg.unmasked:
            if mode not in UNMASKED_MODES:
                raise ConfigError(f"--unmasked takes inherit and/or reinit, got {mode!r}")

    def run(self, cfg: Any, out: Path, preset: str, progress: bool) -> Outcome | None:
        """Run what ``out`` does not hold yet, write the reports and return what to print
        (None on the ranks other than 0 under torchrun)."""
        raise NotImplementedError

    def report(self, out: Path, records: list[dict[str, Any]]) -> str:
        """Rewrite the reports of a finished output folder; return what to print."""
        raise NotImplementedError

    def plan(self, cfg: Any, out: Path, preset: str) -> tuple[str, bool]:
        """What a run would do, and whether its inputs are there, without training (--plan):
        the text to print, and whether every input check passed."""
        raise ConfigError(f"--plan is not available for {self.name} yet")


def check_names(given: tuple[str, ...], registry: Registry) -> None:
    """ConfigError with a "did you mean" for the first name not in ``registry``."""
    for name in given:
        if name not in registry:
            raise ConfigError(registry.unknown_message(name))


def coerce(cls: type, name: str, value: str) -> Any:
    """``value`` (text) as the type of field ``name`` of dataclass ``cls``; "none" unsets an
    optional field."""
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value.lower() == "none":
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"{name} takes true or false, got {value!r}")
        return value.lower() in ("true", "1")
    if hint in (int, float, str):
        try:
            return hint(value)
        except ValueError:
            what = {int: "an integer", float: "a number", str: "a text"}[hint]
            raise ConfigError(f"{name} takes {what}, got {value!r} (--set {name}=...)") from None
    args = typing.get_args(hint)
    if args and args[0] is int:
        return ints(value)
    if args and args[0] is float:
        return floats(value)
    return names(value)
