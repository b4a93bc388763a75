"""Cue-conflict stimuli (Geirhos et al., ICLR 2019), their three metrics under two scorings
(``SCORINGS``: "standard", Geirhos et al.'s, and "released", the paper's released code's; see
docs/cue-conflict-scoring.md) and response files in model-vs-human's CSV format.

Layout: ``<root>/<shape>/<shape><n>-<texture><m>.png`` (the shape class is the folder, the
texture class is parsed from the file name), e.g. ``cat/cat1-airplane1.png``.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meanpool.imagenet import IMAGE_SUFFIXES, sixteen_classes
from subind.io import write_text_atomic
from subind.registry import Registry

_NAME_RE = re.compile(r"^(?P<shape>[A-Za-z]+)\d*-(?P<texture>[A-Za-z]+)\d*$")
CSV_COLUMNS = ("subj", "session", "trial", "rt", "object_response", "category", "condition",
               "imagename")  # fmt: skip
MISSING = ("na", "nan", "")  # how a missing response is written (model-vs-human writes "na")


class CueConflictError(ValueError):
    """Stimuli or a responses file that cannot be read (one-line message)."""


@dataclass(frozen=True)
class Stimulus:
    path: Path  # the image file
    name: str  # its file name, e.g. "cat1-airplane1.png"
    shape: str  # shape class (the folder)
    texture: str  # texture class (parsed from the name)


def parse_stimulus_name(name: str) -> tuple[str, str]:
    """(shape, texture) from a stimulus file name: "cat1-airplane1.png" -> ("cat", "airplane").

    model-vs-human prefixes names with trial fields joined by "_"
    ("0001_s5n_s01_0_bird_00_bird3-bird2.png"); the stimulus is the last "_" field.
    """
    stem = Path(name.rsplit("_", 1)[-1]).stem
    m = _NAME_RE.match(stem)
    if not m:
        raise CueConflictError(
            f"cannot parse the stimulus name {name!r}; expected <shape><n>-<texture><m>.png "
            f"(e.g. cat1-airplane1.png), optionally after a '_'-separated prefix"
        )
    return m["shape"].lower(), m["texture"].lower()


def scan_cue_conflict(root: str | Path) -> list[Stimulus]:
    """Every stimulus under ``root`` (sorted by shape folder, then name). Raises
    CueConflictError if there are none, or a name does not parse, names an unknown class or
    disagrees with its folder."""
    root = Path(root)
    if not root.is_dir():
        raise CueConflictError(
            f"cue-conflict folder {root} does not exist; pass Geirhos et al.'s "
            f"style-transfer-preprocessed-512 folder (<shape>/<shape><n>-<texture><m>.png)"
        )
    classes = set(sixteen_classes()[0])
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            shape, texture = parse_stimulus_name(path.name)
            if shape != folder.name:
                raise CueConflictError(
                    f"{path} names shape {shape!r} but lies in folder {folder.name!r}; the "
                    f"shape class must be the folder (<shape>/<shape><n>-<texture><m>.png)"
                )
            for cls in (shape, texture):
                if cls not in classes:
                    raise CueConflictError(
                        f"{path} names class {cls!r}, not one of the 16 categories "
                        f"({', '.join(sorted(classes))})"
                    )
            out.append(Stimulus(path, path.name, shape, texture))
    if not out:
        raise CueConflictError(
            f"no cue-conflict images under {root}; expected <shape>/<shape><n>-<texture><m>.png"
        )
    return out


def same_class_note(stimuli: Sequence[Stimulus]) -> str:
    """One line on the same-class stimuli (said once per run, not once per model)."""
    same = sum(s.shape == s.texture for s in stimuli)
    return (f"cue-conflict: {same} of {len(stimuli)} stimuli have the same shape and texture "
            "class: the standard scoring leaves them out, the released one keeps them (never "
            "as texture decisions)")  # fmt: skip


# (shape class, texture class, response): one scored stimulus; response None = no answer.
Row = tuple[str, str, str | None]


def cue_conflict_metrics(rows: Iterable[Row]) -> dict[str, Any]:
    """The three metrics over (shape, texture, response) rows; response None = no answer.

    Rows whose shape and texture class are the same are left out of everything (counted in
    ``n_excluded_same_class``). Of the ``n`` rows kept:

    - accuracy   = shape_decisions / n
    - robustness = 1 - texture_decisions / n
    - shape_bias = shape_decisions / (shape_decisions + texture_decisions) (None if both are 0)

    A missing response (counted in ``n_missing``) stays in ``n``: it is neither a shape nor a
    texture decision, so it counts as wrong in accuracy, as not misled in robustness, and not at
    all in shape bias. Responses naming a third class are treated the same way. Ratios are None
    when ``n`` is 0.
    """
    n = excluded = missing = shape_dec = texture_dec = 0
    for shape, texture, response in rows:
        if shape == texture:
            excluded += 1
            continue
        n += 1
        if response is None:
            missing += 1
        elif response == shape:
            shape_dec += 1
        elif response == texture:
            texture_dec += 1
    decided = shape_dec + texture_dec
    return {
        "accuracy": shape_dec / n if n else None,
        "robustness": 1 - texture_dec / n if n else None,
        "shape_bias": shape_dec / decided if decided else None,
        "n": n,
        "n_excluded_same_class": excluded,
        "n_missing": missing,
        "shape_decisions": shape_dec,
        "texture_decisions": texture_dec,
    }


def per_class_metrics(rows: Iterable[tuple[str, str, str | None]]) -> dict[str, dict[str, Any]]:
    """{shape class: cue_conflict_metrics of its rows} (paper C.3), classes sorted."""
    by_class: dict[str, list[tuple[str, str, str | None]]] = {}
    for row in rows:
        by_class.setdefault(row[0], []).append(row)
    return {c: cue_conflict_metrics(by_class[c]) for c in sorted(by_class)}


def released_metrics(rows: Iterable[Row]) -> dict[str, Any]:
    """The metrics as the paper's released code scored them (its Table 1), over (shape, texture,
    response) rows; response None = no answer. Every row counts, same-class ones included:

    - accuracy   = shape_decisions / n      (a same-class row answered with its class counts)
    - robustness = 1 - texture_decisions / n (a same-class row is never a texture decision)
    - shape_bias = the standard shape bias (same-class rows left out): the released code
      computes none, and the paper's Table 1 reports none

    ``n`` counts every row (``n_same_class`` of them same-class). Missing and third-class
    responses are neither shape nor texture decisions, as in the standard scoring. The ratios are
    shares of all rows pooled; the released script averages per shape class instead, which is
    the same number when every class has as many stimuli (80 each in Geirhos et al.'s 1,280).
    Ratios are None when ``n`` is 0.
    """
    rows = list(rows)
    n = len(rows)
    same = sum(s == t for s, t, _ in rows)
    shape_dec = sum(r is not None and r == s for s, _, r in rows)
    # The released script reuses the previous file's texture label for a same-class stimulus (a
    # file-order artefact); here such a stimulus never counts as misled, whatever it answers.
    texture_dec = sum(r is not None and s != t and r == t for s, t, r in rows)
    return {
        "accuracy": shape_dec / n if n else None,
        "robustness": 1 - texture_dec / n if n else None,
        "shape_bias": cue_conflict_metrics(rows)["shape_bias"],
        "n": n,
        "n_same_class": same,
        "n_missing": sum(r is None for *_, r in rows),
        "shape_decisions": shape_dec,
        "texture_decisions": texture_dec,
    }


# ----------------------------------------------------------------------------- scorings
@dataclass(frozen=True)
class Scoring:
    """One way to turn cue-conflict responses into accuracy, robustness and shape bias."""

    name: str
    key: str  # where evaluate_model's result and table1's records keep its metrics
    metrics: Callable[[Iterable[Row]], dict[str, Any]]  # rows -> {"accuracy", "robustness", ...}
    same_class: str  # what it does with same-class stimuli: "left out" or "included"
    same_class_count: str  # the key of its metrics that counts them


SCORINGS: Registry[Scoring] = Registry("cue-conflict scoring")
SCORINGS.register("standard", "Geirhos et al.: same-class stimuli left out; shares of the rest")(
    Scoring("standard", "cue_conflict", cue_conflict_metrics, "left out", "n_excluded_same_class")
)
SCORINGS.register(
    "released",
    "the paper's released code (its Table 1): shares of all stimuli, same-class ones "
    "included (never texture decisions); standard shape bias",
)(Scoring("released", "cue_conflict_released", released_metrics, "included", "n_same_class"))


def scoring(name: str) -> Scoring:
    """The scoring called ``name``; CueConflictError (one line, "did you mean") if unknown."""
    if name not in SCORINGS:
        raise CueConflictError(SCORINGS.unknown_message(name))
    return SCORINGS.get(name)


# ----------------------------------------------------------------------------- response files
def write_responses_csv(
    path: str | Path,
    stimuli: Sequence[Stimulus],
    responses: Sequence[str | None],
    subj: str,
    session: int = 1,
) -> None:
    """Write one row per stimulus (atomically) in model-vs-human's raw-data format:
    subj, session, trial (1-based), rt ("NaN": models have none), object_response ("na" for
    None), category (the shape class), condition (0), imagename (the stimulus file name)."""
    assert len(stimuli) == len(responses), (
        f"expected one response per stimulus, got {len(responses)} for {len(stimuli)}"
    )
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for trial, (s, r) in enumerate(zip(stimuli, responses, strict=True), 1):
        w.writerow([subj, session, trial, "NaN", "na" if r is None else r, s.shape, 0, s.name])
    write_text_atomic(path, buf.getvalue())


def read_responses_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a responses CSV as dicts (all values strings). Raises CueConflictError if the
    file is missing or lacks the columns that scoring needs."""
    path = Path(path)
    if not path.is_file():
        raise CueConflictError(f"responses file {path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"object_response", "category", "imagename"}
        lacking = sorted(need - set(reader.fieldnames or ()))
        if lacking:
            raise CueConflictError(
                f"{path} lacks the column(s) {', '.join(lacking)}; expected model-vs-human's "
                f"format ({','.join(CSV_COLUMNS)})"
            )
        return list(reader)


def _rows(records: Iterable[dict[str, str]]) -> tuple[list[Row], Counter[str]]:
    """(shape, texture, response) rows, and the answers that are not one of the 16 category
    names (counted; their rows answer None)."""
    classes = set(sixteen_classes()[0])
    rows: list[Row] = []
    unknown: Counter[str] = Counter()
    for r in records:
        _, texture = parse_stimulus_name(r["imagename"])
        resp: str | None = r["object_response"].strip()
        if resp.lower() in MISSING:
            resp = None
        elif resp not in classes:
            unknown[resp] += 1
            resp = None
        rows.append((r["category"].strip(), texture, resp))
    return rows, unknown


def response_rows(
    records: Iterable[dict[str, str]], unknown_as_missing: bool = False, where: str = "responses"
) -> list[Row]:
    """(shape, texture, response) per CSV row: shape = ``category``, texture parsed from
    ``imagename``, response None where ``object_response`` is "na" (or empty / NaN).

    A response that is not one of the 16 category names (e.g. "Airplane", a label of the
    user's own) would count as neither shape nor texture, silently: CueConflictError saying how
    many and which, unless ``unknown_as_missing`` (then they are scored as missing)."""
    rows, unknown = _rows(records)
    if unknown and not unknown_as_missing:
        examples = ", ".join(f"{a!r} x{n}" for a, n in unknown.most_common(3))
        raise CueConflictError(
            f"{where}: {sum(unknown.values())} of {len(rows)} answers are not one of the 16 "
            f"category names (e.g. {examples}); answer with the lower-case names (airplane, "
            "bear, ...), or pass --unknown-as-missing to score them as missing (na)"
        )
    return rows


def score_files(paths: Sequence[str | Path], unknown_as_missing: bool = False) -> dict[str, Any]:
    """{"files": {path: metrics}, "pooled": metrics over the rows of all files} under the
    standard scoring, and the same under every other scoring by its name, e.g.
    {"released": {"files": ..., "pooled": ...}}. ``unknown_as_missing``: see
    :func:`response_rows`."""
    rows = {str(p): response_rows(read_responses_csv(p), unknown_as_missing, str(p)) for p in paths}
    unknown = {str(p): sum(_rows(read_responses_csv(p))[1].values()) for p in paths}
    everything = [row for file_rows in rows.values() for row in file_rows]
    scored = {
        name: {
            "files": {p: SCORINGS.get(name).metrics(r) for p, r in rows.items()},
            "pooled": SCORINGS.get(name).metrics(everything),
        }
        for name in SCORINGS
    }
    return {**scored.pop("standard"), **scored, "unknown_answers_as_missing": unknown}
