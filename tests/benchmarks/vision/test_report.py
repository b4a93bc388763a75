from benchmarks.vision.report import paired_md, table1_csv, table1_md, table2_md, write_reports


def _rec(strategy, unmasked, seed, original, pooled, shape_bias, model="m", curve=True):
    return {
        "experiment": "table1",
        "key": f"{model}/{strategy}/{unmasked}/s{seed}",
        "model": model,
        "strategy": strategy,
        "unmasked": unmasked,
        "seed": seed,
        "train_images": 0 if strategy in ("linear-ft", "pretrained") else 100,
        "original_accuracy": original,
        "pooled_accuracy": pooled,
        "cue_conflict": {"accuracy": 0.2, "robustness": 0.7, "shape_bias": shape_bias},
        "per_class": {
            "cat": {"original_accuracy": original, "cue_conflict_shape_bias": None},
            "dog": {"original_accuracy": 1.0, "pooled_accuracy": 0.5},
        },
        "curve": [
            {"step": 10, "original": 0.3, "pooled": 0.2},
            {"step": 20, "original": original, "pooled": pooled},
        ]
        if curve and strategy not in ("linear-ft", "pretrained")
        else [],
    }


RECORDS = [
    _rec("subtask-induction", "inherit", 0, 0.8, 0.6, 0.5),
    _rec("subtask-induction", "inherit", 1, 0.9, 0.5, 0.7),
    _rec("random-subnetwork", "inherit", 0, 0.7, 0.4, 0.4),
    _rec("random-subnetwork", "inherit", 1, 0.8, 0.4, 0.5),
    _rec("random-subnetwork", "reinit", 0, 0.1, 0.1, 0.1),
    _rec("scratch", "reinit", 0, 0.5, 0.2, 0.2),
    _rec("scratch", "reinit", 1, 0.6, 0.3, 0.3),
    _rec("linear-ft", "inherit", 0, 0.95, 0.3, 0.1),
]


def test_table1_md_means_and_order():
    md = table1_md(RECORDS, "T")
    lines = [x for x in md.splitlines() if x.startswith("| m |")]
    assert [x.split("|")[2].strip() for x in lines] == [
        "subtask-induction", "random-subnetwork", "random-subnetwork", "scratch", "linear-ft",
    ]  # fmt: skip
    si = lines[0].split("|")
    assert si[4].strip() == "2" and si[5].strip() == "100"
    assert si[6].strip() == "85.0 +- 7.1"  # original: mean of .8 and .9, std .0707
    assert si[7].strip() == "55.0 +- 7.1"
    assert lines[-1].split("|")[5].strip() == "pretraining set"


def test_paired_differences_like_with_like():
    md = paired_md(RECORDS)
    rows = {x.split("|")[3].strip(): x.split("|") for x in md.splitlines() if x.startswith("| m")}
    # random (inherit) is paired with SI (inherit) only: pooled diffs .2 and .1
    assert rows["random-subnetwork (inherit)"][4].strip() == "2"
    assert rows["random-subnetwork (inherit)"][5].strip() == "+15.0 +- 7.1"
    assert "random-subnetwork (reinit)" not in rows
    # scratch has one mode: paired by seed; linear-ft is one run: paired with both seeds
    assert rows["scratch (reinit)"][5].strip() == "+30.0 +- 14.1"
    assert rows["linear-ft (inherit)"][4].strip() == "2"
    assert rows["linear-ft (inherit)"][5].strip() == "+25.0 +- 7.1"


def test_csv_and_table2_and_files(tmp_path):
    csv_text = table1_csv(RECORDS)
    assert csv_text.splitlines()[0].startswith("model,strategy,unmasked,seed,train_images,original")
    assert len(csv_text.splitlines()) == len(RECORDS) + 1
    rows = [
        {"model": "m", "kind": "pretrained", "lambda": 1e-7, "density": 0.149,
         "pooled_whole_model": 0.368, "pooled_subnetwork": 0.738, "best_epoch": 9,
         "selected": True},
        {"model": "m", "kind": "random-init", "lambda": 1e-7, "density": 0.3,
         "pooled_whole_model": None, "pooled_subnetwork": 0.35, "best_epoch": 3,
         "selected": False},
    ]  # fmt: skip
    md = table2_md(rows)
    assert "| m | pretrained | 1e-07 | 14.9% | 36.8% | 73.8% | 9 | yes |" in md
    assert "| m | random-init | 1e-07 | 30.0% | - | 35.0% | 3 |  |" in md
    write_reports(RECORDS, tmp_path, "T", rows)
    for name in ("table1.md", "table1.csv", "table2.md", "table2.json", "per_class.md", "fig5.png"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "fig5.png").read_bytes()[:4] == b"\x89PNG"
    per_class = (tmp_path / "per_class.md").read_text()
    assert "| dog | 100.0 | 50.0 | - | - |" in per_class
    assert "## m / subtask-induction (inherit), 2 run(s)" in per_class
    assert "| cat | 85.0 +- 7.1 | - | - | - |" in per_class
