import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from benchmarks.cli import main
from benchmarks.harness import SINGLE, StageError
from benchmarks.vision.config import PRESETS
from benchmarks.vision.data import epoch_loader, split_items, training_set
from benchmarks.vision.grid import plan_runs
from benchmarks.vision.inputs import resolve_inputs
from benchmarks.vision.models import ARCHS
from benchmarks.vision.strategies import STRATEGIES
from benchmarks.vision.timing import read_timings
from meanpool.imagenet import Item
from subind.io import read_jsonl

TINY = PRESETS.get("tiny")
REQUIRED = {
    "experiment", "key", "model", "strategy", "unmasked", "seed", "train_images", "steps",
    "original_accuracy", "pooled_accuracy", "cue_conflict", "per_class", "curve",
    "subnetwork_density", "wall_seconds", "config_digest", "provenance",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("table1") / "tiny"
    res = CliRunner().invoke(
        main, ["run", "table1", "--preset", "tiny", "--out", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    return out, res.output


def test_tiny_end_to_end_outputs(tiny_run):
    out, output = tiny_run
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == len(plan_runs(TINY))
    for r in records:
        assert set(r) >= REQUIRED, REQUIRED - set(r)
        assert r["provenance"]["git_commit"]
        assert r["unmasked"] in ("inherit", "reinit")
        assert 0.0 <= r["original_accuracy"] <= 1.0 and 0.0 <= r["pooled_accuracy"] <= 1.0
        assert (out / "models" / f"{r['model']}_{r['strategy']}_{r['unmasked']}_s{r['seed']}.safetensors").exists()  # fmt: skip
    modes = {(r["model"], r["unmasked"]) for r in records if r["strategy"] == "subtask-induction"}
    assert modes == {(m, u) for m in TINY.models for u in ("inherit", "reinit")}
    # the inherited / re-initialised tensors are counted in every transfer record
    si = next(r for r in records if r["strategy"] == "subtask-induction")
    assert si["inherited_unmasked"] + si["reinitialized_unmasked"] > 0
    for name in ("table1.md", "table1.csv", "table2.md", "per_class.md", "fig5.png", "config.json"):
        assert (out / name).exists(), name
    assert "| subtask-induction | inherit |" in (out / "table1.md").read_text()
    assert "random-init" in (out / "table2.md").read_text()
    assert list((out / "responses").glob("*.csv"))
    assert "Table 1" in output and "wall time" in output


def test_both_columns_on_the_same_images_and_an_empty_subnetwork_is_flagged(tiny_run):
    out, output = tiny_run
    records = read_jsonl(out / "results.jsonl")
    assert all(r["original_n"] == r["pooled_n"] == 16 * 2 for r in records)  # the tiny world's val
    assert {r["eval_set"] for r in records} == {"paper"}
    # the tiny preset's discovery keeps no weight: said in the log, table1.md and table2.md
    empty = {r["model"] for r in records
             if r["strategy"] == "subtask-induction" and r["subnetwork_density"] == 0}  # fmt: skip
    assert empty, "the tiny preset was expected to find empty subnetworks"
    for model in empty:
        assert f"warning: the {model} subnetwork of lambda" in output
        assert f"**Warning: the {model} subnetwork is empty**" in (out / "table1.md").read_text()
    table2 = (out / "table2.md").read_text()
    assert "**Warnings**" in table2 and "keeps 0.0% of the masked weights" in table2


def test_data_mixture_trains_on_more_images_and_rerun_reuses_everything(tiny_run):
    out, _ = tiny_run
    records = read_jsonl(out / "results.jsonl")
    by = {(r["model"], r["strategy"]): r for r in records}
    for model in TINY.models:
        world = out / "world"
        assert world.exists()
        extra = by[(model, "data-mixture")]["train_images"] - by[(model, "scratch")]["train_images"]
        assert extra == 16 * 3  # the pooled discovery images of the tiny world
    res = CliRunner().invoke(
        main, ["run", "table1", "--preset", "tiny", "--out", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert len(read_jsonl(out / "results.jsonl")) == len(records)


def test_training_images_are_disjoint_from_evaluation_and_val(tiny_run):
    out, _ = tiny_run
    inputs = resolve_inputs(TINY, out, SINGLE, False)
    data = inputs.image_sets("resnet18-mini", TINY)
    train = {it.rel for it in data.train_items}
    assert train and not train & {it.rel for it in data.evaluation_items}
    assert not train & {it.rel for it in data.val_items}
    assert not train & set(data.pooled_evaluation.sources)

    def digest(rel):
        return hashlib.sha256(Image.open(inputs.imagenet_dir / rel).tobytes()).hexdigest()

    held = {digest(it.rel) for it in data.evaluation_items + data.val_items}
    assert not {digest(r) for r in train} & held  # no held-out picture under another name
    # the data-mixture stream really holds the pooled discovery images (count them in one
    # epoch), never the pooled evaluation images its pooled curve is measured on
    mixed = training_set(data, pooled_in_training=True)
    n_orig = len(data.train)
    assert len(mixed) == n_orig + len(data.pooled_discovery)
    epochs = epoch_loader(mixed, batch_size=1, seed=0, workers=0)
    idx = epochs.indices(0).tolist()  # the order of epoch 0 (the world's images as tensors)
    assert sorted(idx) == list(range(len(mixed)))
    assert sum(i >= n_orig for i in idx) == 16 * 3
    assert len(list(epochs(0))) == len(mixed)  # every image drawn
    assert len(training_set(data, pooled_in_training=False)) == n_orig
    mixture_pooled = set(mixed.sources[n_orig:])
    assert mixture_pooled == {it.rel for it in data.discovery_items}
    assert not mixture_pooled & set(data.pooled_evaluation.sources)  # the pooled curve's images
    assert not {it.rel for it in data.train_items} & set(data.pooled_evaluation.sources)


def test_split_items_refuses_a_leak():
    a, b = Item("train/n1/a.png", "n1", "cat", 0), Item("train/n1/b.png", "n1", "cat", 0)
    train, evaluation, val = split_items({"train": [a, b, a], "evaluation": [b], "val": []})
    assert [it.rel for it in train] == [a.rel] and evaluation == [b]
    with pytest.raises(StageError, match="evaluation/val images"):
        split_items({"train": [a], "evaluation": [], "val": [Item(a.rel, "n1", "cat", 0)]})


def test_epoch_loader_order_is_a_function_of_the_epoch():
    ds = torch.utils.data.TensorDataset(torch.arange(10), torch.zeros(10))
    make = epoch_loader(ds, batch_size=3, seed=1, workers=0)
    first = [b[0].tolist() for b in make(2)]
    again = [b[0].tolist() for b in epoch_loader(ds, batch_size=3, seed=1, workers=0)(2)]
    assert first == again and first != [b[0].tolist() for b in make(3)]
    halves = [[int(b[0]) for b in epoch_loader(ds, 1, 1, 0, rank=r, world=2)(0)] for r in (0, 1)]
    assert len(halves[0]) == 5 and sorted(halves[0] + halves[1]) == list(range(10))


def test_missing_inputs_and_unknown_names_are_one_line_errors(tmp_path):
    res = CliRunner().invoke(main, ["run", "table1", "--preset", "paper", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "--imagenet-dir is required" in res.output
    res = CliRunner().invoke(main, ["run", "table1", "--strategies", "subtask-inductoin"])
    assert res.exit_code != 0 and "Did you mean 'subtask-induction'" in res.output
    res = CliRunner().invoke(main, ["run", "table1", "--layers", "2"])
    assert res.exit_code == 2 and "No such option '--layers'" in res.output
    res = CliRunner().invoke(main, ["run", "fig3", "--pooled", "x"])
    assert res.exit_code == 2 and "No such option '--pooled'" in res.output


def test_precondition_stops_when_the_subnetwork_is_no_better(tmp_path, tiny_run):
    out, _ = tiny_run
    # Same tiny world and caches, but demand the gain: with a few steps of discovery on a barely
    # trained model the best subnetwork may or may not beat the whole model; force the failing
    # case with a subnetwork that must beat an accuracy of 1.0.
    cfg = dataclasses.replace(TINY, require_subnetwork_gain=True)
    from benchmarks.vision import stages

    inputs = resolve_inputs(cfg, out, SINGLE, False)
    entry = inputs.models["resnet18-mini"]
    data = inputs.image_sets(entry.name, cfg)
    adapted, meta = stages.adapted_model(cfg, entry, data, out, False)
    with pytest.raises(StageError, match="no better than the whole model"):
        stages.find_subnetwork(
            cfg, entry, adapted, {**meta, "pooled_evaluation_accuracy": 1.0}, data, out, False
        )


@pytest.mark.slow
def test_torchrun_ddp_two_ranks_train_every_run_together(tmp_path):
    """Both ranks train each run with DDP (per-rank batch = global batch / 2); rank 0 writes.
    Not bit-equal to one process: each rank draws its own flips for its own images."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "-m", "benchmarks.cli", "run", "table1", "--preset", "tiny", "--out", str(out),
           "--models", "vit_b_16-mini", "--strategies", "scratch,subtask-induction",
           "--unmasked", "inherit", "--set", "distributed=ddp", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    records = read_jsonl(out / "results.jsonl")
    assert sorted(r["strategy"] for r in records) == ["scratch", "subtask-induction"]
    assert all(r["curve"] and r["curve"][-1]["step"] == TINY.steps for r in records)


# Rank 0 sleeps for SLEEP_S before it reports the world built: a stage longer than the process
# group's timeout on any machine, however fast (the old barrier wait fails here: checked by hand
# with Sync.wait replaced by torch.distributed.barrier()).
_SLOW_LAUNCH = """
import sys, time
from pathlib import Path

from benchmarks import harness
from benchmarks.cli import main

SLEEP_S, MARK = float(sys.argv.pop(1)), Path(sys.argv.pop(1))
_wait = harness.Sync.wait


def wait(self, name):
    if self.rank == 0 and name == "world":
        time.sleep(SLEEP_S)
        MARK.write_text(str(SLEEP_S))
    return _wait(self, name)


harness.Sync.wait = wait
main()
"""


def test_torchrun_survives_a_rank0_stage_longer_than_the_process_group_timeout(tmp_path):
    """Rank 0 builds the world and then sleeps three times the process group's timeout (2 s)
    while rank 1 waits: rank 1 must wait through files, not a collective. Every record is
    written once."""
    import os
    import subprocess
    import sys

    timeout_s, sleep_s = 2, 6.0
    launch, mark = tmp_path / "launch.py", tmp_path / "slept"
    launch.write_text(_SLOW_LAUNCH)
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(launch), str(sleep_s), str(mark), "run", "table1", "--preset", "tiny", "--out",
           str(out), "--models", "resnet18-mini", "--strategies", "scratch,subtask-induction",
           "--unmasked", "inherit", "--set", "distributed=slice",
           "--set", f"dist_timeout_s={timeout_s}", "--no-progress"]  # fmt: skip
    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert float(mark.read_text()) > 2 * timeout_s  # rank 0 really was away that long
    keys = [r["key"] for r in read_jsonl(out / "results.jsonl")]
    assert len(keys) == len(set(keys)) == 2
    assert not list(out.glob("results.rank*.jsonl"))


def test_a_failed_evaluation_keeps_the_trained_model_and_the_rerun_does_not_retrain(
    tmp_path, monkeypatch
):
    from benchmarks.vision import runs, training

    cfg = dataclasses.replace(TINY, models=("resnet18-mini",), strategies=("scratch",))
    real_evaluate, calls = runs.evaluate_model, {"evaluate": 0, "fit": 0}

    def failing_once(*args, **kw):
        calls["evaluate"] += 1
        if calls["evaluate"] == 1:
            raise RuntimeError("cue-conflict folder went away")
        return real_evaluate(*args, **kw)

    real_fit = training.fit

    def counting_fit(*args, **kw):
        calls["fit"] += 1
        return real_fit(*args, **kw)

    monkeypatch.setattr(runs, "evaluate_model", failing_once)
    monkeypatch.setattr(training, "fit", counting_fit)
    with pytest.raises(RuntimeError, match="went away"):
        runs.run_table1(cfg, tmp_path, progress=False)
    assert calls["fit"] == 1 and not (tmp_path / "results.jsonl").exists()
    tag = "resnet18-mini_scratch_reinit_s0"
    assert (tmp_path / "models" / f"{tag}.safetensors").exists()
    assert (tmp_path / "models" / f"{tag}.json").exists()
    records, _ = runs.run_table1(cfg, tmp_path, progress=False)
    assert calls == {"evaluate": 2, "fit": 1}  # evaluated again, not trained again
    assert len(records) == 1 and records[0]["curve"] and records[0]["train_images"] > 0
    assert records[0]["original_accuracy"] is not None


def test_sync_batchnorm_only_for_ddp_on_gpus():
    from benchmarks.vision.training import ddp_ready

    net = ARCHS.get("resnet18-mini").build(16)
    on = ddp_ready(TINY, net, torch.device("cuda"), world=2)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in on.modules())
    for device, world, cfg in ((torch.device("cpu"), 2, TINY), (torch.device("cuda"), 1, TINY),
                               (torch.device("cuda"), 2,
                                dataclasses.replace(TINY, sync_batchnorm=False))):  # fmt: skip
        net = ARCHS.get("resnet18-mini").build(16)
        assert not any(isinstance(m, torch.nn.SyncBatchNorm)
                       for m in ddp_ready(cfg, net, device, world).modules())  # fmt: skip


def test_tiny_preset_runs_end_to_end_with_a_library_classifier(tmp_path):
    """`--models torchvision:resnet18`: built by torchvision at the world's 32 px, pretrained on
    the world (its weights a local file), adapted, discovered in, transferred, evaluated."""
    out = tmp_path / "tv"
    res = CliRunner().invoke(main, ["run", "table1", "--preset", "tiny", "--out", str(out),
                                    "--models", "torchvision:resnet18", "--strategies",
                                    "subtask-induction,pretrained", "--unmasked", "inherit",
                                    "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    records = read_jsonl(out / "results.jsonl")
    assert {(r["model"], r["strategy"]) for r in records} == {
        ("torchvision:resnet18", "subtask-induction"),
        ("torchvision:resnet18", "pretrained"),
    }
    assert all(r["original_n"] and r["pooled_n"] for r in records)
    assert list(out.glob("pretrained/torchvision:resnet18-*.safetensors"))
    assert list(out.glob("torchvision:resnet18/subnetworks/lam*"))
    assert (
        "| torchvision:resnet18 | subtask-induction | inherit |" in (out / "table1.md").read_text()
    )


def test_a_classifier_that_cannot_take_the_worlds_images_is_refused_before_work(tmp_path):
    res = CliRunner().invoke(main, ["run", "table1", "--preset", "tiny", "--out", str(tmp_path),
                                    "--models", "torchvision:vit_b_16", "--no-progress"])  # fmt: skip
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].startswith("error: models on the synthetic world:")
    assert not (tmp_path / "world").exists()


def test_two_local_workers_give_the_records_of_one_process(tmp_path):
    """--set workers=2 deals stages and runs to two processes (one thread each here, as the
    in-process run): every record is the one process's, wall times and provenance aside."""
    args = ["run", "table1", "--preset", "tiny", "--models", "resnet18-mini", "--strategies",
            "pretrained,scratch,subtask-induction", "--unmasked", "inherit", "--seeds", "0,1",
            "--no-progress"]  # fmt: skip
    one = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    two = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "two"), "--set", "workers=2"])
    assert two.exit_code == 0, two.output
    assert "| resnet18-mini | subtask-induction | inherit | 2 |" in two.output

    def strip(r):
        return {k: v for k, v in r.items() if k not in ("wall_seconds", "provenance")}

    a = {r["key"]: strip(r) for r in read_jsonl(tmp_path / "one" / "results.jsonl")}
    b = {r["key"]: strip(r) for r in read_jsonl(tmp_path / "two" / "results.jsonl")}
    assert len(a) == 5 and a == b
    # two processes did the work: each rank timed its own share of the runs
    trained = {r: [t for t in read_timings(tmp_path / "two") if t["rank"] == r
                   and t["stage"] == "train"] for r in (0, 1)}  # fmt: skip
    assert trained[0] and trained[1] and len(trained[0]) + len(trained[1]) == 5
    # the costliest runs were taken first: the untrained one, planned first, started last
    starts = {t["label"]: t["start"] for t in trained[0] + trained[1]}
    assert starts["pretrained"] == max(starts.values())
    assert not (tmp_path / "one" / "timings" / "rank1.jsonl").exists()


def _without(record, *fields):
    return {k: v for k, v in record.items() if k not in ("wall_seconds", "provenance", *fields)}


def _same_records_and_models(one, two, stacked_sizes):
    """Every record of ``two`` is ``one``'s ("stacked" aside, which ``stacked_sizes`` gives per
    strategy), and every saved model too (float rounding aside: here equal)."""
    from safetensors.torch import load_file

    a = {r["key"]: r for r in read_jsonl(one / "results.jsonl")}
    b = {r["key"]: r for r in read_jsonl(two / "results.jsonl")}
    assert a and a.keys() == b.keys()
    for k in a:
        assert b[k].get("stacked") == stacked_sizes.get(a[k]["strategy"]), k
        assert "stacked" not in a[k]
        assert _without(a[k]) == _without(b[k], "stacked")
    for path in (one / "models").glob("*.safetensors"):
        x, y = load_file(str(path)), load_file(str(two / "models" / path.name))
        assert x.keys() == y.keys()
        assert all(torch.allclose(x[n].float(), y[n].float(), atol=1e-5) for n in x), path.name
    return a, b


TRAINS = ["run", "table1", "--preset", "tiny", "--unmasked", "inherit", "--seeds", "0,1",
          "--no-progress"]  # fmt: skip


def test_stacked_seeds_give_the_records_and_models_of_one_at_a_time(tmp_path):
    """--set stack=seeds trains the seeds of each (model, strategy, unmasked) together
    (subind.stacked): the same records and models; a unit whose runs are partly saved trains
    only the rest."""
    args = [*TRAINS, "--strategies", "pretrained,scratch,subtask-induction"]
    one = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    out = tmp_path / "two"
    two = CliRunner().invoke(main, [*args, "--out", str(out), "--set", "stack=seeds"])
    assert two.exit_code == 0, two.output
    a, _ = _same_records_and_models(tmp_path / "one", out,
                                    {"scratch": 2, "subtask-induction": 2})  # fmt: skip
    assert len(a) == 10
    # one training entry per unit (2 models x 2 trained strategies + 2 untrained)
    assert len([t for t in read_timings(out) if t["stage"] == "train"]) == 6
    assert len([t for t in read_timings(tmp_path / "one") if t["stage"] == "train"]) == 10

    # a unit interrupted after seed 0 was saved: the rerun loads it and trains seed 1 alone
    group = [k for k in a if k.startswith("resnet18-mini/scratch/")]
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(
        "".join(f"{ln}\n" for ln in lines if not any(f'"{k}"' in ln for k in group))
    )
    for suffix in (".json", ".safetensors"):
        (out / "models" / f"resnet18-mini_scratch_reinit_s1{suffix}").unlink()
    again = CliRunner().invoke(main, [*args, "--out", str(out), "--set", "stack=seeds"])
    assert again.exit_code == 0, again.output
    c = {r["key"]: r for r in read_jsonl(out / "results.jsonl")}
    assert c.keys() == a.keys()
    for k in group:
        assert _without(c[k], "stacked") == _without(a[k])
    s0, s1 = sorted(group)
    assert c[s0].get("stacked") == 2 and "stacked" not in c[s1]  # loaded; trained alone


def test_stacked_strategies_give_the_records_of_one_at_a_time(tmp_path):
    """--set stack=strategies: subtask induction and its controls (every seed) train as one
    unit per model, scratch (another recipe and start) as another."""
    args = [*TRAINS, "--strategies", "scratch,subtask-induction,random-subnetwork,unmasked-only"]
    one = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    two = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "two"),
                                    "--set", "stack=strategies"])  # fmt: skip
    assert two.exit_code == 0, two.output
    sizes = {"scratch": 2, "subtask-induction": 6, "random-subnetwork": 6, "unmasked-only": 6}
    a, _ = _same_records_and_models(tmp_path / "one", tmp_path / "two", sizes)
    assert len(a) == 16
    labels = sorted(t["label"] for t in read_timings(tmp_path / "two") if t["stage"] == "train")
    assert labels == ["scratch"] * 2 + ["subtask-induction+random-subnetwork+unmasked-only"] * 2


def test_stacked_units_group_by_recipe_data_and_start():
    from benchmarks.vision.runs import stacked_units

    cfg = dataclasses.replace(TINY, seeds=(0, 1), models=("resnet18-mini",))
    runs = plan_runs(cfg)
    by_seeds = stacked_units(runs, "seeds")
    by_strategies = stacked_units(runs, "strategies")
    assert sorted(r.tag() for u in by_seeds for r in u) == sorted(r.tag() for r in runs)
    assert sorted(r.tag() for u in by_strategies for r in u) == sorted(r.tag() for r in runs)
    for units in (by_seeds, by_strategies):
        for u in units:  # untrained runs alone; one model and recipe per unit
            assert len({r.model for r in u}) == 1
            assert len({STRATEGIES.get(r.strategy).recipe for r in u}) == 1
            assert len(u) == 1 or all(STRATEGIES.get(r.strategy).trains for r in u)
    assert {len(u) for u in by_seeds if len(u) > 1} == {2}
    mixed = [u for u in by_strategies if len({r.strategy for r in u}) > 1]
    assert len(mixed) == 1 and {r.strategy for r in mixed[0]} == {
        "subtask-induction", "random-subnetwork", "unmasked-only"}  # fmt: skip
    data = [u for u in by_strategies if u[0].strategy == "data-mixture"]
    assert len(data) == 1 and len(data[0]) == 2  # its own training set: apart


def test_stacking_under_ddp_is_a_config_error():
    from benchmarks.vision.checks import ConfigError, check_config

    for stack in ("seeds", "strategies"):
        cfg = dataclasses.replace(TINY, stack=stack, distributed="ddp")
        with pytest.raises(ConfigError, match="distributed=slice"):
            check_config(cfg, world=2)
        check_config(cfg, world=1)  # one process: nothing to split
    with pytest.raises(ConfigError, match="stack"):
        check_config(dataclasses.replace(TINY, stack="models"))
