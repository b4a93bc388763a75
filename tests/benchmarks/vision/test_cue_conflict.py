import csv

import pytest

from benchmarks.vision.cue_conflict import (
    CSV_COLUMNS,
    SCORINGS,
    CueConflictError,
    Stimulus,
    cue_conflict_metrics,
    parse_stimulus_name,
    per_class_metrics,
    read_responses_csv,
    released_metrics,
    response_rows,
    scan_cue_conflict,
    score_files,
    scoring,
    write_responses_csv,
)

from .helpers import SAMPLE_CUE_CONFLICT, make_cue_conflict

# (shape, texture, response): 2 shape decisions, 1 texture decision, 1 other class, 1 missing,
# and 2 same-class rows that must be left out whatever they answer.
ROWS = [
    ("cat", "dog", "cat"),
    ("cat", "dog", "dog"),
    ("dog", "cat", "dog"),
    ("dog", "elephant", None),
    ("knife", "oven", "car"),
    ("bird", "bird", "bird"),
    ("bird", "bird", "cat"),
]


def test_parse_stimulus_names():
    assert parse_stimulus_name("cat1-airplane1.png") == ("cat", "airplane")
    assert parse_stimulus_name("airplane10-airplane1.png") == ("airplane", "airplane")
    assert parse_stimulus_name("0001_s5n_s01_0_bird_00_bird3-bird2.png") == ("bird", "bird")
    assert parse_stimulus_name("0417_cl_dnn_0_knife_00_knife1-bird2.png") == ("knife", "bird")
    for bad in ("cat.png", "cat1_airplane1.png", "cat1-air-plane1.png"):
        with pytest.raises(CueConflictError, match="cannot parse the stimulus name"):
            parse_stimulus_name(bad)


def test_metrics_on_hand_made_rows():
    m = cue_conflict_metrics(ROWS)
    assert m["n"] == 5 and m["n_excluded_same_class"] == 2 and m["n_missing"] == 1
    assert m["shape_decisions"] == 2 and m["texture_decisions"] == 1
    assert m["accuracy"] == pytest.approx(2 / 5)  # the missing response counts as wrong
    assert m["robustness"] == pytest.approx(1 - 1 / 5)
    assert m["shape_bias"] == pytest.approx(2 / 3)
    # Same-class rows change nothing, whatever they answer.
    assert cue_conflict_metrics(ROWS[:5]) == {**m, "n_excluded_same_class": 0}
    empty = cue_conflict_metrics([("cat", "cat", "cat")])
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["shape_bias"] is None
    per = per_class_metrics(ROWS)
    assert list(per) == ["bird", "cat", "dog", "knife"]
    assert per["cat"]["accuracy"] == 0.5 and per["cat"]["shape_bias"] == 0.5
    assert per["dog"]["accuracy"] == 0.5 and per["dog"]["n_missing"] == 1
    assert per["bird"]["n"] == 0 and per["knife"]["shape_bias"] is None


def test_scan_generated_folder_and_errors(tmp_path):
    root = make_cue_conflict(tmp_path / "cc", [("cat", "dog"), ("cat", "cat"), ("truck", "bird")])
    (root / "cat" / "notes.txt").write_text("not an image")
    stimuli = scan_cue_conflict(root)
    assert [(s.name, s.shape, s.texture) for s in stimuli] == [
        ("cat1-dog1.png", "cat", "dog"),
        ("cat2-cat2.png", "cat", "cat"),
        ("truck3-bird3.png", "truck", "bird"),
    ]
    assert stimuli[0].path == root / "cat" / "cat1-dog1.png"
    with pytest.raises(CueConflictError, match="does not exist"):
        scan_cue_conflict(tmp_path / "absent")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(CueConflictError, match="no cue-conflict images"):
        scan_cue_conflict(tmp_path / "empty")
    misplaced = make_cue_conflict(tmp_path / "m", [("cat", "dog")])
    (misplaced / "cat" / "cat1-dog1.png").rename(misplaced / "cat" / "dog1-cat1.png")
    with pytest.raises(CueConflictError, match="lies in folder 'cat'"):
        scan_cue_conflict(misplaced)
    with pytest.raises(CueConflictError, match="not one of the 16 categories"):
        scan_cue_conflict(make_cue_conflict(tmp_path / "u", [("cat", "zebra")]))


@pytest.mark.skipif(not SAMPLE_CUE_CONFLICT.is_dir(), reason="../shared/data not present")
def test_scan_the_shared_sample():
    stimuli = scan_cue_conflict(SAMPLE_CUE_CONFLICT)
    assert len(stimuli) == 46 and len({s.shape for s in stimuli}) == 16
    assert sum(s.shape == s.texture for s in stimuli) == 16
    assert Stimulus(SAMPLE_CUE_CONFLICT / "cat/cat1-airplane1.png", "cat1-airplane1.png",
                    "cat", "airplane") in stimuli  # fmt: skip


def test_responses_csv_round_trip(tmp_path):
    stimuli = [Stimulus(tmp_path / f"{s}{i}-{t}{i}.png", f"{s}{i}-{t}{i}.png", s, t)
               for i, (s, t, _) in enumerate(ROWS)]  # fmt: skip
    responses = [r for *_, r in ROWS]
    write_responses_csv(tmp_path / "r" / "model.csv", stimuli, responses, subj="model")
    text = (tmp_path / "r" / "model.csv").read_text().splitlines()
    assert text[0] == ",".join(CSV_COLUMNS)
    assert text[4] == "model,1,4,NaN,na,dog,0,dog3-elephant3.png"
    records = read_responses_csv(tmp_path / "r" / "model.csv")
    assert [r["trial"] for r in records] == [str(i) for i in range(1, 8)]
    assert response_rows(records) == ROWS
    assert score_files([tmp_path / "r" / "model.csv"])["pooled"] == cue_conflict_metrics(ROWS)


def test_score_model_vs_human_files(tmp_path):
    # model-vs-human's own raw data: prefixed image names, "na" for a missing answer.
    human = tmp_path / "human.csv"
    with open(human, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        w.writerow(["s5n", 1, 1, 812, "bird", "bird", 0, "0001_s5n_s01_0_bird_00_bird3-bird2.png"])
        w.writerow(["s5n", 1, 2, 640, "cat", "cat", 0, "0002_s5n_s01_0_cat_00_cat1-airplane1.png"])
        w.writerow(["s5n", 1, 3, 701, "na", "dog", 0, "0003_s5n_s01_0_dog_00_dog1-bear1.png"])
        w.writerow(["s5n", 1, 4, 930, "boat", "car", 0, "0004_s5n_s01_0_car_00_car1-boat2.png"])
    model = tmp_path / "model.csv"
    with open(model, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        w.writerow(["m", 1, 1, "NaN", "airplane", "cat", 0, "cat1-airplane1.png"])
        w.writerow(["m", 1, 2, "NaN", "dog", "dog", 0, "dog1-bear1.png"])
    scores = score_files([human, model])
    h, m, p = scores["files"][str(human)], scores["files"][str(model)], scores["pooled"]
    assert (h["n"], h["n_excluded_same_class"], h["n_missing"]) == (3, 1, 1)
    assert h["accuracy"] == pytest.approx(1 / 3) and h["robustness"] == pytest.approx(2 / 3)
    assert h["shape_bias"] == pytest.approx(0.5)
    assert (m["accuracy"], m["robustness"], m["shape_bias"]) == (0.5, 0.5, 0.5)
    assert p["n"] == 5 and p["shape_decisions"] == 2 and p["texture_decisions"] == 2
    assert p["accuracy"] == pytest.approx(2 / 5) and p["n_missing"] == 1
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CueConflictError, match="lacks the column"):
        score_files([tmp_path / "bad.csv"])


# ------------------------------------------------------------------ the released scoring
def test_released_metrics_on_hand_made_rows():
    # ROWS under both scorings, by hand:
    #   standard: the 2 bird-bird rows left out, n = 5; shape decisions: cat1 (cat), dog (dog) = 2;
    #     texture: cat2 answered dog = 1; accuracy 2/5, robustness 1 - 1/5, shape bias 2/3.
    #   released: all n = 7 rows; shape decisions: cat1, dog, and bird-bird answered bird = 3
    #     (a same-class row answered with its class is correct); texture decisions: cat2 = 1
    #     (bird-bird answered cat is neither); accuracy 3/7, robustness 1 - 1/7 = 6/7;
    #     shape bias: the standard one, 2/3. The missing (dog/elephant) and third-class
    #     (knife answered car) rows are wrong and not misled under both.
    std, rel = cue_conflict_metrics(ROWS), released_metrics(ROWS)
    assert (std["accuracy"], std["robustness"]) == (pytest.approx(2 / 5), pytest.approx(4 / 5))
    assert rel["accuracy"] == pytest.approx(3 / 7) and rel["robustness"] == pytest.approx(6 / 7)
    assert rel["shape_bias"] == std["shape_bias"] == pytest.approx(2 / 3)
    assert (rel["n"], rel["n_same_class"], rel["n_missing"]) == (7, 2, 1)
    assert (rel["shape_decisions"], rel["texture_decisions"]) == (3, 1)
    # The scorings are told apart: swapping them changes both ratios.
    assert rel["accuracy"] != pytest.approx(std["accuracy"])
    assert rel["robustness"] != pytest.approx(std["robustness"])
    # No same-class rows: both scorings agree on accuracy and robustness (2/5, 4/5).
    rel5 = released_metrics(ROWS[:5])
    assert (rel5["accuracy"], rel5["robustness"]) == (std["accuracy"], std["robustness"])
    empty = released_metrics([])
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["robustness"] is None
    # Only same-class rows: 1/1 correct and never misled; no shape bias (nothing to decide).
    only = released_metrics([("cat", "cat", "cat")])
    assert (only["accuracy"], only["robustness"], only["shape_bias"]) == (1.0, 1.0, None)


def test_released_same_class_is_never_misled_whatever_the_file_order():
    # The released script gives bird3-bird2 the previous file's texture label (dog here), so it
    # would count this "dog" answer as misled: misled 1/2, "robustness" 1/2. Here a same-class
    # stimulus is never a texture decision: texture 0 of 2 -> robustness 1.0, accuracy 1/2
    # (cat1-dog1 answered cat), in either order.
    rows = [("cat", "dog", "cat"), ("bird", "bird", "dog")]
    for order in (rows, rows[::-1]):
        m = released_metrics(order)
        assert (m["accuracy"], m["robustness"], m["texture_decisions"]) == (0.5, 1.0, 0)


def test_released_is_the_pooled_share_not_the_per_class_mean():
    # Unbalanced: 3 cat-shaped stimuli, 1 dog-shaped.
    rows = [
        ("cat", "dog", "cat"),  # shape
        ("cat", "dog", "cat"),  # shape
        ("cat", "cat", "cat"),  # same-class, answered with its class: shape (released)
        ("dog", "cat", "cat"),  # texture
    ]
    # Pooled share (implemented): accuracy 3/4, robustness 1 - 1/4 = 3/4.
    # The released script's per-class mean would give: accuracy mean(cat 3/3, dog 0/1) = 1/2;
    # misled, counted under the texture class over that class's stimulus count:
    # mean(cat 1/3, dog 0/1) = 1/6 -> robustness 5/6.
    # Standard: the cat-cat row left out, n = 3: accuracy 2/3, robustness 2/3.
    m = released_metrics(rows)
    assert m["accuracy"] == pytest.approx(3 / 4) and m["robustness"] == pytest.approx(3 / 4)
    assert m["accuracy"] != pytest.approx(1 / 2) and m["robustness"] != pytest.approx(5 / 6)
    std = cue_conflict_metrics(rows)
    assert std["accuracy"] == pytest.approx(2 / 3) and std["robustness"] == pytest.approx(2 / 3)
    # Balanced (2 per class): the per-class mean and the pooled share agree.
    balanced = [
        ("cat", "dog", "cat"),  # shape
        ("cat", "cat", "dog"),  # same-class, third answer: neither
        ("dog", "cat", "cat"),  # texture
        ("dog", "dog", "dog"),  # same-class, answered with its class: shape
    ]
    # Per-class: accuracy mean(cat 1/2, dog 1/2) = 1/2; misled mean(cat 1/2, dog 0/2) = 1/4.
    # Pooled: accuracy 2/4 = 1/2, robustness 1 - 1/4 = 3/4: the same.
    m = released_metrics(balanced)
    assert m["accuracy"] == pytest.approx(1 / 2) and m["robustness"] == pytest.approx(3 / 4)


def test_scoring_registry():
    assert SCORINGS.names() == ["standard", "released"]
    assert scoring("standard").metrics is cue_conflict_metrics
    assert scoring("released").metrics is released_metrics
    assert (scoring("standard").key, scoring("released").key) == (
        "cue_conflict", "cue_conflict_released",
    )  # fmt: skip
    with pytest.raises(CueConflictError, match="Did you mean 'released'") as e:
        scoring("relased")
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def test_score_files_under_both_scorings(tmp_path):
    stimuli = [Stimulus(tmp_path / f"{s}{i}-{t}{i}.png", f"{s}{i}-{t}{i}.png", s, t)
               for i, (s, t, _) in enumerate(ROWS)]  # fmt: skip
    write_responses_csv(tmp_path / "a.csv", stimuli, [r for *_, r in ROWS], subj="a")
    write_responses_csv(tmp_path / "b.csv", stimuli[:1], ["dog"], subj="b")  # cat1-dog1: texture
    scores = score_files([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert scores["files"][str(tmp_path / "a.csv")] == cue_conflict_metrics(ROWS)
    assert scores["released"]["files"][str(tmp_path / "a.csv")] == released_metrics(ROWS)
    # Pooled, released: 8 rows; shape 3, texture 1 + 1 -> accuracy 3/8, robustness 1 - 2/8.
    pooled = scores["released"]["pooled"]
    assert pooled["accuracy"] == pytest.approx(3 / 8) and pooled["robustness"] == 0.75
    # Pooled, standard: 6 rows; shape 2, texture 2 -> accuracy 2/6, robustness 4/6.
    assert scores["pooled"]["accuracy"] == pytest.approx(1 / 3)
