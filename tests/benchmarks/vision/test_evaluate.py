import json
import math

import pytest
import torch
from click.testing import CliRunner

from benchmarks.cli import main
from benchmarks.vision.cue_conflict import read_responses_csv, score_files
from benchmarks.vision.evaluate import (
    EvalConfig,
    decide,
    eval_images_of_tree,
    evaluate_model,
    load_decision_mapping,
)
from benchmarks.vision.models import ARCHS, replace_head
from meanpool.imagenet import sixteen_classes
from tests.meanpool.conftest import make_imagenet

from .helpers import SAMPLE_CUE_CONFLICT, make_cue_conflict, write_pooled, write_pooled_val

CATS = sixteen_classes()[0]
PAIRS = [("cat", "dog"), ("dog", "cat"), ("knife", "knife"), ("truck", "bird"), ("oven", "clock")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A tiny ImageNet tree (16 val images), a pooled build and a cue-conflict folder."""
    base = tmp_path_factory.mktemp("vision-eval")
    imagenet = make_imagenet(base / "imagenet", per_class=1, val_per_class=1)
    write_pooled_val(imagenet, base / "pooled")
    return imagenet, base / "pooled", make_cue_conflict(base / "cc", PAIRS)


def test_packaged_decision_mapping():
    m = load_decision_mapping()
    assert list(m) == CATS and sum(len(v) for v in m.values()) == 207
    assert m["airplane"] == [404] and all(0 <= i < 1000 for v in m.values() for i in v)
    assert len({i for v in m.values() for i in v}) == 207


def test_decision_mapping_files(tmp_path):
    (tmp_path / "plain.json").write_text(json.dumps({"a": [0, 1], "b": [2]}))
    assert load_decision_mapping(tmp_path / "plain.json") == {"a": [0, 1], "b": [2]}
    (tmp_path / "bad.json").write_text(json.dumps({"a": "x"}))
    with pytest.raises(ValueError, match="is not a decision mapping"):
        load_decision_mapping(tmp_path / "bad.json")


def test_decide_with_a_mapping_uses_mean_probability():
    mapping = {"a": [0, 1], "b": [2], "c": [3, 4, 5]}
    # Row 0: "a" has the most probability in total (0.6) but "b" the highest mean (0.35 > 0.3).
    # Row 1: class 5 alone is the largest logit, yet "a" has the highest mean.
    probs = torch.tensor(
        [[0.3, 0.3, 0.35, 0.0167, 0.0167, 0.0166], [0.25, 0.25, 0.05, 0.05, 0.1, 0.3]]
    )
    logits = probs.log() + 3.0  # any shift: softmax gives the same probabilities
    assert decide(logits, ["a", "b", "c"], mapping).tolist() == [1, 0]
    assert decide(logits, ["c", "b", "a"], mapping).tolist() == [1, 2]  # indices into categories
    assert logits.argmax(1).tolist() == [2, 5]
    assert decide(logits[:, :3], ["x", "y", "z"], None).tolist() == [2, 0]
    with pytest.raises(ValueError, match="sends 'c' to class 5, but the head has 5 outputs"):
        decide(logits[:, :5], ["a", "b", "c"], mapping)


def _model(arch_name: str, classes: int = 16, seed: int = 0):
    arch = ARCHS.get(arch_name)
    torch.manual_seed(seed)
    return arch, replace_head(arch.build(classes), arch, classes)


def test_evaluate_model_on_every_source(sources, tmp_path):
    imagenet, pooled, cc = sources
    arch, model = _model("resnet18-mini")
    images = eval_images_of_tree("paper", imagenet, pooled=pooled)
    r = evaluate_model(model, arch, images=images, cue_conflict_dir=cc, out_dir=tmp_path,
                       tag="m", cfg=EvalConfig(batch_size=7))  # fmt: skip
    assert r["original_n"] == 16 and r["pooled_n"] == 16  # the same images, both columns
    assert 0 <= r["original_accuracy"] <= 1 and 0 <= r["pooled_accuracy"] <= 1
    assert r["eval_set"] == "paper" and r["averaging"] == "images"
    cue = r["cue_conflict"]
    assert cue["n"] == 4 and cue["n_excluded_same_class"] == 1 and cue["n_missing"] == 0
    records = read_responses_csv(tmp_path / "responses" / "m.csv")
    assert [r_["imagename"] for r_ in records] == sorted(
        f"{s}{i}-{t}{i}.png" for i, (s, t) in enumerate(PAIRS, 1)
    )
    assert all(x["object_response"] in CATS for x in records)
    assert score_files([tmp_path / "responses" / "m.csv"])["pooled"] == cue
    # Per-class figures agree with the totals.
    per = r["per_class"]
    assert set(per) == set(CATS) and all(per[c]["original_n"] == 1 for c in CATS)
    assert sum(per[c]["original_accuracy"] for c in CATS) / 16 == pytest.approx(
        r["original_accuracy"]
    )
    pooled_hits = sum(per[c]["pooled_accuracy"] * per[c]["pooled_n"] for c in CATS)
    assert pooled_hits / 16 == pytest.approx(r["pooled_accuracy"])
    assert per["knife"]["cue_conflict_n"] == 0 and per["cat"]["cue_conflict_n"] == 1
    table = (tmp_path / "per_class" / "m.csv").read_text().splitlines()
    assert table[0].startswith("class,") and len(table) == 17
    # Deterministic: the same model gives the same numbers.
    again = evaluate_model(model, arch, images=eval_images_of_tree("paper", imagenet),
                           out_dir=tmp_path, tag="m2", cfg=EvalConfig(batch_size=16))  # fmt: skip
    assert again["original_accuracy"] == r["original_accuracy"] and again["cue_conflict"] is None


def test_a_model_that_always_answers_one_class(sources, tmp_path):
    _, _, cc = sources
    arch, model = _model("vit_b_16-mini", classes=20)
    head = model.heads.head
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.copy_(torch.arange(20.0) * 0.01)
        head.bias[7] = 5.0  # class 7 wins everywhere; the mapping gives it to "dog"
    mapping = {c: [i] for i, c in enumerate(CATS)} | {"cat": [16], "dog": [7, 17, 18]}
    r = evaluate_model(model, arch, cue_conflict_dir=cc, mapping=mapping, out_dir=tmp_path,
                       tag="dog")  # fmt: skip
    # Every answer is "dog": shape decision for the dog-shaped stimulus, texture for cat1-dog1.
    responses = read_responses_csv(tmp_path / "responses" / "dog.csv")
    assert {x["object_response"] for x in responses} == {"dog"}
    cue = r["cue_conflict"]
    assert (cue["shape_decisions"], cue["texture_decisions"], cue["n"]) == (1, 1, 4)
    assert cue["accuracy"] == 0.25 and cue["robustness"] == 0.75 and cue["shape_bias"] == 0.5
    with pytest.raises(ValueError, match="needs|pass a decision mapping"):
        evaluate_model(model, arch, cue_conflict_dir=cc, out_dir=tmp_path, tag="x")


def test_evaluate_flat_val_with_labels(tmp_path):
    flat = make_imagenet(tmp_path / "flat", per_class=1, val_per_class=1, flat_val=True)
    arch, model = _model("resnet18-mini")
    r = evaluate_model(model, arch, images=eval_images_of_tree("paper", flat), out_dir=tmp_path,
                       tag="f")  # fmt: skip
    (flat / "LOC_val_solution.csv").rename(tmp_path / "labels.csv")
    images = eval_images_of_tree("paper", flat, tmp_path / "labels.csv")
    again = evaluate_model(model, arch, images=images, out_dir=tmp_path, tag="f")
    assert r["original_n"] == again["original_n"] == 16
    assert r["original_accuracy"] == again["original_accuracy"]


@pytest.mark.skipif(not SAMPLE_CUE_CONFLICT.is_dir(), reason="../shared/data not present")
def test_evaluate_on_the_shared_sample(tmp_path):
    arch, model = _model("resnet18-mini")
    r = evaluate_model(model, arch, cue_conflict_dir=SAMPLE_CUE_CONFLICT, out_dir=tmp_path,
                       tag="s")  # fmt: skip
    assert r["cue_conflict"]["n"] == 30 and r["cue_conflict"]["n_excluded_same_class"] == 16
    assert len(read_responses_csv(tmp_path / "responses" / "s.csv")) == 46


# ------------------------------------------------------------------------------------- CLI
def test_cli_score_cue_conflict(tmp_path):
    from benchmarks.vision.cue_conflict import CSV_COLUMNS

    header = ",".join(CSV_COLUMNS)
    (tmp_path / "a.csv").write_text(
        f"{header}\ns,1,1,1,cat,cat,0,0001_s_s01_0_cat_00_cat1-dog1.png\n"
        "s,1,2,1,na,dog,0,0002_s_s01_0_dog_00_dog1-cat2.png\n"
        "s,1,3,1,bird,bird,0,0003_s_s01_0_bird_00_bird1-bird2.png\n"
    )
    (tmp_path / "b.csv").write_text(f"{header}\nm,1,1,NaN,dog,cat,0,cat1-dog1.png\n")
    res = CliRunner().invoke(main, ["score", "cue-conflict", "--responses", str(tmp_path / "a.csv"),
                                    str(tmp_path / "b.csv"), "--json", str(tmp_path / "s.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert f"| {tmp_path / 'a.csv'} | 2 | 1 | 1 | 50.0 | 100.0 | 100.0 |" in lines
    assert f"| {tmp_path / 'b.csv'} | 1 | 0 | 0 | 0.0 | 0.0 | 0.0 |" in lines
    assert "| pooled (2 files) | 3 | 1 | 1 | 33.3 | 66.7 | 50.0 |" in lines
    assert "1 same-class stimuli left out; 1 missing (na) responses counted as wrong" in lines
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["pooled"]["shape_bias"] == 0.5 and "git_commit" in saved["provenance"]
    bad = CliRunner().invoke(
        main, ["score", "cue-conflict", "--responses", str(tmp_path / "no.csv")]
    )
    assert bad.exit_code == 1 and "does not exist" in bad.output
    assert CliRunner().invoke(main, ["score", "cue-conflict"]).exit_code == 2


def test_cli_evaluate_16_and_1000_class_weights(sources, tmp_path):
    imagenet, pooled, cc = sources
    arch, model = _model("resnet18-mini")
    torch.save(model.state_dict(), tmp_path / "own16.pth")
    _, big = _model("resnet18-mini", classes=1000)
    torch.save(big.state_dict(), tmp_path / "in1k.pth")
    run = CliRunner().invoke
    out = tmp_path / "out"
    res = run(main, ["evaluate", "--arch", "resnet18-mini", "--weights", str(tmp_path / "own16.pth"),
                     "--cue-conflict-dir", str(cc), "--imagenet-dir", str(imagenet),
                     "--pooled", str(pooled), "--out", str(out), "--no-progress",
                     "--batch-size", "8"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "metrics" / "own16.json").read_text())
    direct = evaluate_model(model, arch, images=eval_images_of_tree("paper", imagenet, None, pooled),
                            cue_conflict_dir=cc, out_dir=tmp_path / "api", tag="t")  # fmt: skip
    assert rec["decision"].startswith("direct") and rec["head_outputs"] == 16
    assert rec["original_accuracy"] == direct["original_accuracy"]
    assert rec["pooled_accuracy"] == direct["pooled_accuracy"]
    assert rec["cue_conflict"] == direct["cue_conflict"] and rec["config"]["batch_size"] == 8
    assert "git_commit" in rec["provenance"] and rec["arch"] == "resnet18-mini"
    assert (out / "responses" / "own16.csv").is_file() and (
        out / "per_class" / "own16.csv"
    ).is_file()
    assert "| own16 |" in res.output and "left out" in res.output

    res = run(main, ["evaluate", "--arch", "resnet18-mini", "--weights", str(tmp_path / "in1k.pth"),
                     "--cue-conflict-dir", str(cc), "--out", str(out), "--tag", "big",
                     "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "metrics" / "big.json").read_text())
    assert rec["head_outputs"] == 1000 and rec["decision"] == "decision mapping"
    assert rec["original_accuracy"] is None and rec["cue_conflict"]["n"] == 4
    mapped = evaluate_model(big, arch, cue_conflict_dir=cc, mapping=load_decision_mapping(),
                            out_dir=tmp_path / "api", tag="b")  # fmt: skip
    assert rec["cue_conflict"] == mapped["cue_conflict"]
    assert not math.isnan(rec["cue_conflict"]["robustness"])


def test_cli_evaluate_errors(sources, tmp_path):
    _, _, cc = sources
    _, model = _model("resnet18-mini")
    torch.save(model.state_dict(), tmp_path / "mini.pth")
    torch.save({"a": 1}, tmp_path / "notsd.pth")
    run = CliRunner().invoke

    def evaluate(arch, weights, *extra):
        return run(main, ["evaluate", "--arch", arch, "--weights", str(weights), "--cue-conflict-dir",
                          str(cc), "--out", str(tmp_path / "o"), "--no-progress", *extra])  # fmt: skip

    res = evaluate("vit_b_16-mini", tmp_path / "mini.pth")
    assert res.exit_code == 1 and "no 2-D 'heads.head.weight'" in res.output
    res = evaluate("resnet18", tmp_path / "mini.pth")
    assert res.exit_code == 1
    assert "'conv1.weight' has shape (16, 3, 3, 3) in the file but (64, 3, 7, 7)" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = evaluate("resnet18-mini", tmp_path / "notsd.pth")
    assert res.exit_code == 1 and "not a state dict" in res.output
    res = evaluate("resnet18-mini", tmp_path / "absent.pth")
    assert res.exit_code == 1 and "does not exist" in res.output
    res = evaluate("resnet-18", tmp_path / "mini.pth")
    assert res.exit_code == 2 and "Did you mean" in res.output
    (tmp_path / "m.json").write_text(json.dumps({c: [i] for i, c in enumerate(CATS[:15])}))
    res = evaluate(
        "resnet18-mini", tmp_path / "mini.pth", "--decision-mapping", str(tmp_path / "m.json")
    )
    assert res.exit_code == 1 and "no indices for category 'truck'" in res.output
    assert not (tmp_path / "o" / "metrics").exists()


def _always(answer: str):
    """A 16-class resnet18-mini that answers ``answer`` to every image."""
    arch, model = _model("resnet18-mini")
    torch.nn.init.zeros_(model.fc.weight)
    with torch.no_grad():
        model.fc.bias.zero_()
        model.fc.bias[CATS.index(answer)] = 5.0
    return arch, model


def test_evaluate_model_scores_both_ways(sources, tmp_path):
    _, _, cc = sources
    arch, model = _always("knife")
    r = evaluate_model(model, arch, cue_conflict_dir=cc, out_dir=tmp_path, tag="k")
    # PAIRS, every answer "knife": only knife-knife (same-class) is answered with its shape.
    # standard: knife-knife left out, n = 4; shape 0, texture 0 -> accuracy 0, robustness 1,
    #   no shape bias.
    # released: n = 5; shape 1 (knife-knife), texture 0 -> accuracy 1/5, robustness 1.
    std, rel = r["cue_conflict"], r["cue_conflict_released"]
    assert (std["n"], std["accuracy"], std["robustness"], std["shape_bias"]) == (4, 0, 1, None)
    assert (rel["n"], rel["n_same_class"], rel["shape_decisions"]) == (5, 1, 1)
    assert (rel["accuracy"], rel["robustness"], rel["shape_bias"]) == (0.2, 1.0, None)
    # Both scorings read the same responses file.
    scores = score_files([tmp_path / "responses" / "k.csv"])
    assert scores["pooled"] == std and scores["released"]["pooled"] == rel
    pooled_only = eval_images_of_tree("paper", None, pooled=sources[1])
    none = evaluate_model(model, arch, images=pooled_only, out_dir=tmp_path, tag="p")
    assert none["cue_conflict"] is None and none["cue_conflict_released"] is None


def test_cli_headline_scoring(sources, tmp_path):
    _, _, cc = sources
    _, model = _always("dog")
    torch.save(model.state_dict(), tmp_path / "dog.pth")
    run = CliRunner().invoke
    # Every answer "dog": dog-cat is a shape decision, cat-dog a texture decision.
    # standard (n = 4): accuracy 1/4, robustness 3/4, shape bias 1/2;
    # released (n = 5, knife-knife included, answered dog: neither): accuracy 1/5,
    #   robustness 4/5, shape bias 1/2.
    args = ["evaluate", "--arch", "resnet18-mini", "--weights", str(tmp_path / "dog.pth"),
            "--cue-conflict-dir", str(cc), "--out", str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    res = run(main, [*args, "--cue-conflict-scoring", "released"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    head = lines.index("cue-conflict: released scoring (same-class stimuli included)")
    assert lines[head + 3] == "| dog | - | - | 20.0 | 80.0 | 50.0 |"
    assert (
        "standard scoring (same-class stimuli left out): accuracy 25.0%, robustness 75.0%, "
        "shape bias 50.0%"
    ) in lines[head + 4 :]
    rec = json.loads((tmp_path / "o" / "metrics" / "dog.json").read_text())
    assert rec["cue_conflict_scoring"] == "released"
    assert rec["cue_conflict"]["accuracy"] == 0.25 and rec["cue_conflict_released"]["n"] == 5
    res = run(main, args)  # the default: standard first
    assert "| dog | - | - | 25.0 | 75.0 | 50.0 |" in res.output
    first = res.output.index("cue-conflict: standard scoring (same-class stimuli left out)")
    assert first < res.output.index("released scoring (same-class stimuli included): accuracy")
    assert (
        json.loads((tmp_path / "o" / "metrics" / "dog.json").read_text())["cue_conflict_scoring"]
        == "standard"
    )
    res = run(main, [*args, "--cue-conflict-scoring", "relased"])
    assert res.exit_code == 2 and "Did you mean 'released'?" in res.output


def test_cli_score_cue_conflict_released_first(tmp_path):
    from benchmarks.vision.cue_conflict import CSV_COLUMNS

    header = ",".join(CSV_COLUMNS)
    (tmp_path / "a.csv").write_text(
        f"{header}\ns,1,1,1,cat,cat,0,0001_s_s01_0_cat_00_cat1-dog1.png\n"
        "s,1,2,1,na,dog,0,0002_s_s01_0_dog_00_dog1-cat2.png\n"
        "s,1,3,1,bird,bird,0,0003_s_s01_0_bird_00_bird1-bird2.png\n"
    )
    (tmp_path / "b.csv").write_text(f"{header}\nm,1,1,NaN,dog,cat,0,cat1-dog1.png\n")
    # a: cat1-dog1 -> cat (shape), dog1-cat2 -> na (missing), bird1-bird2 -> bird (same-class).
    #   released: n 3; shape 2 (cat, bird-bird) -> accuracy 2/3; texture 0 -> robustness 1;
    #   shape bias (standard) 1/1. standard: n 2 -> accuracy 1/2, robustness 1, shape bias 1.
    # b: cat1-dog1 -> dog (texture): 0, 0, 0 under both.
    # pooled released: n 4, shape 2, texture 1 -> 0.5, 0.75, shape bias 1/2.
    a, b = str(tmp_path / "a.csv"), str(tmp_path / "b.csv")
    res = CliRunner().invoke(main, ["score", "cue-conflict", "--responses", a, b, "--json",
                                    str(tmp_path / "s.json"), "--cue-conflict-scoring",
                                    "released"])  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "released scoring (same-class stimuli included):"
    assert lines[1].startswith("| responses | n | same-class included | missing |")
    assert lines[3:7] == [
        f"| {a} | 3 | 1 | 1 | 66.7 | 100.0 | 100.0 |",
        f"| {b} | 1 | 0 | 0 | 0.0 | 0.0 | 0.0 |",
        "| pooled (2 files) | 4 | 1 | 1 | 50.0 | 75.0 | 50.0 |",
        "1 same-class stimuli included (never texture decisions); 1 missing (na) responses "
        "counted as wrong",
    ]
    std = lines.index("standard scoring (same-class stimuli left out):")
    assert std > 6 and "| pooled (2 files) | 3 | 1 | 1 | 33.3 | 66.7 | 50.0 |" in lines[std:]
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["cue_conflict_scoring"] == "released"
    assert saved["released"]["pooled"]["accuracy"] == 0.5
    assert saved["pooled"]["accuracy"] == pytest.approx(1 / 3)  # standard, as before
    bad = CliRunner().invoke(main, ["score", "cue-conflict", a, "--cue-conflict-scoring", "x"])
    assert bad.exit_code == 2 and "unknown cue-conflict scoring 'x'" in bad.output


# fire engine, minivan, pickup, police van, tow truck: 16-class WNIDs that are ILSVRC classes but
# hold none of the paper's images
EXTRA_TRUCKS = ("n03345487", "n03770679", "n03930630", "n03977966", "n04461696")


def test_original_and_pooled_are_measured_on_the_same_202_wnid_images(tmp_path):
    """val/ also holds the 5 truck WNIDs the paper's lists leave out: the original column counts
    the listed WNIDs' images only, the very images of the pooled column."""
    tree = make_imagenet(tmp_path / "imagenet", per_class=1, val_per_class=2,
                         extra_val_wnids=EXTRA_TRUCKS)  # fmt: skip
    write_pooled_val(tree, tmp_path / "pooled")
    arch, model = _model("resnet18-mini")
    torch.save(model.state_dict(), tmp_path / "m.pth")
    cc = make_cue_conflict(tmp_path / "cc", PAIRS)
    res = CliRunner().invoke(main, ["evaluate", "--arch", "resnet18-mini", "--weights",
                                    str(tmp_path / "m.pth"), "--cue-conflict-dir", str(cc),
                                    "--imagenet-dir", str(tree), "--pooled",
                                    str(tmp_path / "pooled"), "--out", str(tmp_path / "o"),
                                    "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "o" / "metrics" / "m.json").read_text())
    assert rec["original_n"] == rec["pooled_n"] == 16 * 2  # not 21 * 2
    assert rec["eval_set"] == "paper" and "32 images" in rec["evaluated_on"]
    # a pooled build that lacks some of the originals is refused, before any work
    write_pooled(tmp_path / "short", "val", [0, 1], sources=["val/x/a.JPEG", "val/x/b.JPEG"])
    res = CliRunner().invoke(main, ["evaluate", "--arch", "resnet18-mini", "--weights",
                                    str(tmp_path / "m.pth"), "--cue-conflict-dir", str(cc),
                                    "--imagenet-dir", str(tree), "--pooled",
                                    str(tmp_path / "short"), "--out", str(tmp_path / "o2"),
                                    "--no-progress"])  # fmt: skip
    assert res.exit_code == 1 and "lacks 32 of the 32 validation images" in res.output
    assert not (tmp_path / "o2").exists()


def test_the_released_eval_set_averages_over_classes_on_the_evaluation_lists_wnids(tmp_path):
    """released: the validation images of the WNIDs in the evaluation list, accuracy the mean
    of per-class accuracies; a model that answers "airplane" to everything: 1/16 either way on
    a balanced set, but per-class averaging weights a class with more images no more."""
    from meanpool.imagenet import paper_items

    tree = make_imagenet(tmp_path / "imagenet", per_class=1, val_per_class=1)
    # airplane gets 3 more validation images: over images 4/19, over classes 1/16
    airplane = next(p for p in (tree / "val").iterdir() if p.name == "n02690373")
    for j in range(3):
        (airplane / f"extra{j}.JPEG").write_bytes(next(airplane.iterdir()).read_bytes())
    arch, model = _always("airplane")
    by_images = evaluate_model(model, arch, images=eval_images_of_tree("paper", tree),
                               out_dir=tmp_path, tag="p")  # fmt: skip
    by_classes = evaluate_model(model, arch, images=eval_images_of_tree("released", tree),
                                out_dir=tmp_path, tag="r")  # fmt: skip
    wnids = {it.wnid for it in paper_items("evaluation")}
    kept = [w for w in {p.name for p in (tree / "val").iterdir()} if w in wnids]
    assert by_images["original_accuracy"] == pytest.approx(4 / 19)
    assert by_classes["averaging"] == "classes"
    assert by_classes["original_n"] == 3 + len(kept)
    assert by_classes["original_accuracy"] == pytest.approx(1 / len(kept))


def _tiny_task():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16))
    x, y = torch.randn(23, 3, 2, 2), torch.randint(0, 16, (23,))
    return model, torch.utils.data.TensorDataset(x, y)


def _sharded_accuracy(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from benchmarks.vision.evaluate import accuracy

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    model, ds = _tiny_task()
    acc = accuracy(model, ds, torch.device("cpu"), batch_size=4, rank=rank, world=world)
    with open(f"{out}.{rank}", "w") as f:
        f.write(repr(acc))
    dist.destroy_process_group()


def test_evaluation_sharded_over_two_gloo_ranks_gives_one_ranks_numbers(tmp_path):
    """Each rank evaluates every other image; the summed counts give every rank the accuracy
    one process computes over all 23 images (an odd count: the shards differ in size)."""
    import torch.multiprocessing as mp

    from benchmarks.vision.evaluate import accuracy

    mp.spawn(_sharded_accuracy, args=(2, str(tmp_path / "store"), str(tmp_path / "acc")),
             nprocs=2, join=True)  # fmt: skip
    model, ds = _tiny_task()
    alone = accuracy(model, ds, torch.device("cpu"), batch_size=5)
    assert 0 < alone < 1
    for rank in (0, 1):
        assert float((tmp_path / f"acc.{rank}").read_text()) == alone
