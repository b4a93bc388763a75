"""The fidelity list (benchmarks/vision/fidelity.py) and its page (docs/table1-fidelity.md)."""

import dataclasses
from pathlib import Path

from benchmarks.vision.config import PRESETS, Table1Config
from benchmarks.vision.fidelity import FIDELITY, fidelity_rows

DOC = Path(__file__).resolve().parents[3] / "docs" / "table1-fidelity.md"


def test_every_choice_is_a_setting_and_the_page_explains_it():
    fields = {f.name for f in dataclasses.fields(Table1Config)}
    text = DOC.read_text()
    for choice in FIDELITY:
        assert choice.setting in fields, choice
        assert f"`{choice.setting}`" in text, f"docs/table1-fidelity.md lacks {choice.setting}"


def test_rows_show_the_runs_values():
    paper = PRESETS.get("paper")
    rows = {r["setting"]: r for r in fidelity_rows(paper)}
    assert rows["adapt_resnet"]["value"] == "full" and rows["adapt_vit"]["value"] == "head"
    assert rows["unmasked"]["value"] == "inherit,reinit"
    assert rows["transfer_penalty"]["value"] == "1e-08"
    text = {r["setting"]: r for r in fidelity_rows(dataclasses.replace(paper, adapt_resnet="head"))}
    assert text["adapt_resnet"]["value"] == "head" == text["adapt_resnet"]["text"]
