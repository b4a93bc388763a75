"""The vision training step (forward, backward, SGD step as ``subind.train.fit`` runs it) of each
architecture on random weights and a synthetic batch, fp32 and bf16 autocast: seconds per step
and images/s, as a Markdown table (and JSON with ``--json``), plus the projected wall time of
Table 1's training and discovery (``--project``).

    python -m benchmarks.speed.vision_step --device cpu --archs resnet18-mini,vit_b_16-mini \\
        --batch 16 --dtypes fp32
    python -m benchmarks.speed.vision_step --device cuda --archs resnet18,vit_b_16 \\
        --dtypes fp32,bf16 --project --project-set batch_size_resnet=512 --json vision_step.json

``--batch preset`` (the default) times each architecture at its family's batch in ``--preset``
(paper: 128 ResNet, 512 ViT). ``--project`` also times the batches the projection needs (each
model's batch / ``--gpus``, the discovery batch) and projects the preset's runs
(:func:`project_table1`) per dtype; each ``--project-set FIELD=N`` adds a projection of the
preset with one field changed (the released code trained ResNet18 at batch 512:
``batch_size_resnet=512``). On ``--gpus`` GPUs it projects both ways the harness splits the
work: DDP (every run on all GPUs, each at batch / gpus, that step timed here on one GPU) and
runs dealt to GPUs (``distributed=slice``, each run at its full batch); either way the discoveries (every lambda,
and the random-init control when ``transfer_penalty`` fixes its lambda) are dealt to the GPUs.
The JSON file is rewritten after every setting, so a run cut short still leaves what it
measured. The projection reads the preset's image counts (the paper's lists; with
``selection=random``, ``discovery_per_class``): a preset with a synthetic world (mini, tiny)
has its own, smaller ones.

The projection counts GPU step time only: it leaves out data loading (JPEG decoding and
augmentation, which may well be the bottleneck at these speeds), the evaluations (every
``eval_every`` steps and the final original / pooled / cue-conflict pass), the adaptation to
16 classes (5 epochs of the 13,929 discovery images: about 1,100 steps at batch 64), DDP's
gradient all-reduce, checkpoints and start-up.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import click
import torch
from torch import nn

from benchmarks.speed.result import Field, Row, read_result, write_result
from benchmarks.vision.config import PRESETS, Table1Config
from benchmarks.vision.grid import plan_runs
from benchmarks.vision.models import ARCHS, recipe_family
from benchmarks.vision.plan import image_counts, run_steps
from benchmarks.vision.strategies import STRATEGIES
from benchmarks.vision.training import recipe

NUM_CLASSES = 16  # the 16-class head of every Table 1 model
DTYPES = ("fp32", "bf16")
# Why a discovery (mask) step is assumed to cost 1.3 plain steps at the same batch: its backward
# needs every masked tensor's gradient (the scores' gradient is the weight gradient times the
# mask's slope), so it is a plain step's backward plus parameter-sized elementwise work (the
# sigmoid of the scores, their product with the weights, the penalty and its gradient; cached
# once per step by MaskSet.cached()) and Adam over the scores instead of SGD over the weights.
# 1.3 is the bound the project's mask_step benchmark holds that step to (on GPT-2; the same GPU
# check measures it); at discovery's small batch the parameter-sized share is larger than at
# the training batch, so the bound is used rather than a lower guess.
MASK_STEP_FACTOR = 1.3
LEFT_OUT = (
    "data loading, evaluation (every eval_every steps and the final pass), adaptation, "
    "DDP all-reduce, checkpoints, start-up"
)


@dataclass(frozen=True)
class ProjectionAssumptions:
    mask_step_factor: float = MASK_STEP_FACTOR  # discovery step / plain step at the same batch
    gpus: int = 8  # the multi-GPU projection's world size
    # images/s one GPU's data loader delivers (benchmarks.speed.loader); a step takes at least
    # batch / images_per_s: the projection uses the slower of the model step and the loader.
    # None: the model step alone.
    images_per_s: float | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    image_size: int,
    batch: int,
    bf16: bool,
    steps: int,
    warmup: int = 3,
) -> list[float]:
    """Seconds of each of ``steps`` SGD steps of ``model`` (train mode, 16-way cross-entropy)
    on a random (batch, 3, image_size, image_size) batch, after ``warmup`` untimed steps;
    ``bf16``: the loss under bf16 autocast, as ``subind.train.fit`` with amp="bf16"."""
    device = next(model.parameters()).device
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    model.train()
    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def _model(name: str, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Architecture ``name`` (random weights, 16-way head) and Table 1's optimizer."""
    torch.manual_seed(0)
    model = ARCHS.get(name).build(NUM_CLASSES).to(device)
    cfg = Table1Config()
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    return model, opt


def _family(model: str) -> str:
    """The recipe family ("resnet" / "vit") of a registered architecture."""
    return recipe_family(ARCHS.get(model))


def discovery_steps_per_epoch(images: int, batch: int) -> int:
    """Steps of one discovery epoch on one rank (epoch_loader drops the last short batch when
    there is a full one)."""
    return images // batch if images >= batch else 1


def _trained_runs(cfg: Table1Config, model: str) -> list[tuple[int, int]]:
    """(steps, batch) of each trained run of ``model`` in ``cfg``, by its strategy's recipe
    (an epoch-based recipe counts the paper lists' training images)."""
    family, counts = _family(model), image_counts(cfg)
    out = []
    for r in plan_runs(cfg):
        strat = STRATEGIES.get(r.strategy)
        if r.model != model or not strat.trains:
            continue
        rec = recipe(cfg, strat.recipe, family)
        if rec.steps is None and counts["train"] is None:
            raise ValueError(f"the {r.strategy} recipe trains for epochs: its steps need the "
                             "training set's size, known for selection=paper only")  # fmt: skip
        out.append((run_steps(cfg, r.strategy, family, counts), rec.batch_size))
    return out


def _model_workload(cfg: Table1Config, model: str) -> dict[str, Any]:
    """Step counts of ``model``'s runs in ``cfg``: each trained run's steps at its recipe's
    batch, discovery runs (one per lambda, plus the random-init control) x epochs x steps per
    epoch."""
    runs_ = _trained_runs(cfg, model)
    images = image_counts(cfg)["discovery"]
    batch = cfg.per_family("discovery_batch_size", _family(model))
    per_run = cfg.per_family("discovery_epochs", _family(model)) * discovery_steps_per_epoch(
        images, batch
    )
    runs = len(cfg.penalties) + int(cfg.random_init_control)
    return {
        "train_batch": cfg.batch_size(_family(model)),
        "trained_runs": len(runs_),
        "train_steps": sum(steps for steps, _ in runs_),
        "_train_steps_by_batch": {b: sum(s for s, bb in runs_ if bb == b) for _, b in runs_},
        "discovery_batch": batch,
        "discovery_runs": runs,
        "discovery_steps": runs * per_run,
        # the random-init control is dealt with the lambdas when its lambda is known up front
        "discovery_dealt": len(cfg.penalties)
        + int(cfg.random_init_control and cfg.transfer_penalty is not None),
    }


def projection_batches(cfg: Table1Config, gpus: int) -> dict[str, dict[int, str]]:
    """{model: {batch: role}}: the batches :func:`project_table1` needs timed per model (each
    trained run's batch, its per-GPU share under DDP when it splits, the discovery batch)."""
    need: dict[str, dict[int, str]] = {}
    for model in cfg.models:
        roles: dict[int, str] = {}
        for _, batch in sorted(set(_trained_runs(cfg, model)), key=lambda t: -t[1]):
            roles.setdefault(batch, "train")
            if batch % gpus == 0:
                roles.setdefault(batch // gpus, f"DDP share (/{gpus})")
        roles.setdefault(cfg.per_family("discovery_batch_size", _family(model)), "discovery")
        need[model] = roles
    return need


def _step_s(step_s: Mapping[tuple[str, int], float], model: str, batch: int) -> float:
    if (model, batch) not in step_s:
        raise ValueError(
            f"no step time for {model} at batch {batch}: time it (projection_batches lists "
            f"what the projection needs)"
        )
    return step_s[(model, batch)]


def project_table1(
    cfg: Table1Config,
    step_s: Mapping[tuple[str, int], float],
    assume: ProjectionAssumptions = ProjectionAssumptions(),
) -> dict[str, Any]:
    """Projected GPU hours of ``cfg``'s training runs and discovery from ``step_s`` ({(model,
    batch): seconds per plain step}).

    Per model: train_hours = trained runs x steps x step_s[(model, batch)]; discovery_hours =
    discovery runs x steps x step_s[(model, discovery batch)] x mask_step_factor. The discovery
    runs are dealt to the GPUs (the random-init control too when transfer_penalty fixes its
    lambda; else it runs after them on one GPU): multi-GPU figures pay the busiest GPU's share.
    hours_1gpu:
    everything on one GPU. hours_ddp: every run trained on all ``gpus`` together, each GPU at
    batch / gpus (None when that step time is missing or the batch does not split).
    hours_runs_dealt: each run on one GPU at the full batch, runs dealt as the harness deals
    them (plan order, every gpus-th run to a rank), the slowest rank's total."""
    models: dict[str, dict[str, Any]] = {}
    ddp_s: float | None = 0.0
    dealt: list[float] = []  # seconds of each discovery dealt to the GPUs, in job order
    after = 0.0  # discoveries run once the dealt ones are done (one GPU)
    for model in cfg.models:
        w = _model_workload(cfg, model)
        by_batch = w["_train_steps_by_batch"]
        train = sum(n * _step_s(step_s, model, b) for b, n in by_batch.items())
        disc_step = _step_s(step_s, model, w["discovery_batch"]) * assume.mask_step_factor
        disc = w["discovery_steps"] * disc_step
        one = disc / max(w["discovery_runs"], 1)
        dealt += [one] * w["discovery_dealt"]
        after += one * (w["discovery_runs"] - w["discovery_dealt"])
        share = w["train_batch"] // assume.gpus
        ddp_train = None
        if all(b % assume.gpus == 0 and (model, b // assume.gpus) in step_s for b in by_batch):
            ddp_train = sum(n * step_s[(model, b // assume.gpus)] for b, n in by_batch.items())
        ddp_s = None if ddp_s is None or ddp_train is None else ddp_s + ddp_train
        models[model] = {**w, "train_hours": train / 3600, "discovery_hours": disc / 3600,
                         "ddp_batch_per_gpu": share,
                         "ddp_train_hours": None if ddp_train is None else ddp_train / 3600}  # fmt: skip
    discovery_s = 3600 * sum(m["discovery_hours"] for m in models.values())
    one_gpu_s = discovery_s + 3600 * sum(m["train_hours"] for m in models.values())
    gpus_discovery_s = max(sum(dealt[k :: assume.gpus]) for k in range(assume.gpus)) + after

    counts = image_counts(cfg)

    def run_s(run) -> float:
        strat = STRATEGIES.get(run.strategy)
        if not strat.trains:
            return 0.0
        family = _family(run.model)
        batch = recipe(cfg, strat.recipe, family).batch_size
        return run_steps(cfg, run.strategy, family, counts) * step_s[(run.model, batch)]

    plan = plan_runs(cfg)
    ranks = [sum(run_s(r) for r in plan[k :: assume.gpus]) for k in range(assume.gpus)]
    return {
        "gpus": assume.gpus,
        "mask_step_factor": assume.mask_step_factor,
        "models": models,
        "hours_1gpu": one_gpu_s / 3600,
        "hours_ddp": None if ddp_s is None else (gpus_discovery_s + ddp_s) / 3600,
        "hours_runs_dealt": (gpus_discovery_s + max(ranks)) / 3600,
        "left_out": LEFT_OUT,
    }


def _variant(cfg: Table1Config, assignment: str) -> tuple[str, Table1Config]:
    """(label, cfg with FIELD=N applied) for ``--project-set FIELD=N`` (integer fields)."""
    field, _, value = assignment.partition("=")
    current = getattr(cfg, field, None)
    if not isinstance(current, int) or isinstance(current, bool) or not value.isdigit():
        raise click.BadParameter(
            f"--project-set takes FIELD=N for an integer field of Table1Config (e.g. "
            f"batch_size_resnet=512), got {assignment!r}"
        )
    return assignment, dataclasses.replace(cfg, **{field: int(value)})


def plan_settings(
    archs: list[str], batch: str, cfg: Table1Config, variants: list[Table1Config], gpus: int
) -> dict[str, dict[int, list[str]]]:
    """{arch: {batch: [roles]}}: the batches to time per architecture, ascending. ``variants``:
    the configs to project (their models must be among ``archs``), whose batches come with
    their roles; ``batch``: "preset" (the arch's batch in ``cfg``) or an integer, added as
    "requested" when no variant needs it."""
    plan: dict[str, dict[int, list[str]]] = {a: {} for a in archs}
    for i, variant in enumerate(variants):
        tag = "" if i == 0 else f" [variant {i}]"
        for model, roles in projection_batches(variant, gpus).items():
            if model not in plan:
                raise click.BadParameter(
                    f"--project needs every model of the preset ({', '.join(variant.models)}) "
                    f"in --archs; got {', '.join(archs)} (or leave out --project)"
                )
            for b, role in roles.items():
                plan[model].setdefault(b, []).append(role + tag)
    for arch in archs:
        b = cfg.batch_size(_family(arch)) if batch == "preset" else int(batch)
        plan[arch].setdefault(b, ["requested"])
    return {a: dict(sorted(bs.items())) for a, bs in plan.items()}


def _measure_arch(
    arch: str, batches: dict[int, list[str]], dtypes: list[str], device: torch.device,
    steps: int, warmup: int,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """One result per (batch, dtype) of ``arch``, as each is measured: s_per_step (median),
    images_per_s, s_all; or an "error" (out of GPU memory) instead of the times. One model and
    optimizer serve every setting (their values do not change the time of a step)."""
    model, opt = _model(arch, device)
    size = ARCHS.get(arch).image_size
    for batch, roles in batches.items():
        for dtype in dtypes:
            entry: dict[str, Any] = {"arch": arch, "batch": batch, "dtype": dtype, "roles": roles}
            try:
                times = step_times(model, opt, size, batch, dtype == "bf16", steps, warmup)
            except torch.cuda.OutOfMemoryError:
                times = None  # freed below, once the exception no longer holds the batch
            if times is None:
                opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                entry["error"] = "out of GPU memory"
            else:
                s = statistics.median(times)
                entry |= {"s_per_step": s, "images_per_s": batch / s, "s_all": times}
            yield entry
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _projections(
    results: list[dict[str, Any]],
    variants: list[tuple[str, Table1Config]],
    dtypes: list[str],
    assume: ProjectionAssumptions,
) -> list[dict[str, Any]]:
    """One projection per (variant, dtype) whose needed step times were all measured."""
    out = []
    for label, cfg in variants:
        for dtype in dtypes:
            step_s = {
                (r["arch"], r["batch"]): r["s_per_step"]
                for r in results
                if r["dtype"] == dtype and "s_per_step" in r
            }
            if assume.images_per_s:  # the slower of the model step and the data loader
                step_s = {k: max(v, k[1] / assume.images_per_s) for k, v in step_s.items()}
            try:
                proj = project_table1(cfg, step_s, assume)
            except ValueError as e:
                proj = {"error": str(e)}
            out.append({"variant": label, "dtype": dtype, **proj,
                        "loader_images_per_s": assume.images_per_s})  # fmt: skip
    return out


def _row(r: dict[str, Any], device: str) -> str:
    roles = ", ".join(r["roles"])
    if "error" in r:
        return (
            f"| {r['arch']} | {r['batch']} | {r['dtype']} | {device} | {roles} | {r['error']} | - |"
        )
    return (
        f"| {r['arch']} | {r['batch']} | {r['dtype']} | {device} | {roles} | "
        f"{r['s_per_step']:.4f} | {r['images_per_s']:.0f} |"
    )


def projection_text(p: dict[str, Any]) -> str:
    """One line: the projected hours on 1 GPU and on ``gpus`` GPUs (both ways)."""
    head = f"Table 1 projection ({p['variant']}, {p['dtype']})"
    if "error" in p:
        return f"{head}: not projected: {p['error']}"
    parts = [
        f"{m} {w['train_hours'] + w['discovery_hours']:.2f} h (train {w['train_steps']} steps "
        f"{w['train_hours']:.2f} h + discovery {w['discovery_steps']} steps "
        f"{w['discovery_hours']:.2f} h)"
        for m, w in p["models"].items()
    ]
    ddp = "-" if p["hours_ddp"] is None else f"{p['hours_ddp']:.2f} h"
    return (
        f"{head}: 1 GPU {p['hours_1gpu']:.2f} h ({'; '.join(parts)}); {p['gpus']} GPUs: "
        f"DDP {ddp}, runs dealt {p['hours_runs_dealt']:.2f} h"
    )


@click.command()
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--archs", default="resnet18-mini,vit_b_16-mini", show_default=True)
@click.option("--batch", default="preset", show_default=True,
              help="'preset' (each arch's batch in --preset) or an integer")  # fmt: skip
@click.option("--dtypes", default="fp32", show_default=True, help="comma-separated: fp32, bf16")
@click.option("--preset", default="paper", show_default=True, help="table1 preset")
@click.option("--project/--no-project", default=False, help="project the preset's wall time")
@click.option("--project-set", "project_sets", multiple=True, metavar="FIELD=N",
              help="also project the preset with this integer field changed")  # fmt: skip
@click.option("--gpus", default=8, show_default=True, help="GPUs of the multi-GPU projection")
@click.option("--mask-step-factor", default=MASK_STEP_FACTOR, show_default=True,
              help="discovery step / plain step (assumed; see the module docstring)")  # fmt: skip
@click.option("--loader-json", default=None,
              help="benchmarks.speed.loader's --json: the projection takes each step at least "
                   "batch / its images_per_s_per_gpu")  # fmt: skip
@click.option("--steps", default=10, show_default=True, help="timed steps per setting")
@click.option("--warmup", default=3, show_default=True, help="untimed steps per setting")
@click.option("--threads", default=1, show_default=True, help="torch CPU threads")
@click.option("--json", "json_path", default=None, help="also write the results as JSON here")
def main(
    device, archs, batch, dtypes, preset, project, project_sets, gpus, mask_step_factor,
    loader_json, steps, warmup, threads, json_path,
) -> None:  # fmt: skip
    """Print seconds per training step and images/s per architecture, batch and dtype."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda but torch sees no CUDA device; use --device cpu")
    arch_list, dtype_list = _check_lists(archs, dtypes, batch, preset, gpus)
    cfg = PRESETS.get(preset)
    variants = ([(preset, cfg)] + [_variant(cfg, s) for s in project_sets]) if project else []
    plan = plan_settings(arch_list, batch, cfg, [v for _, v in variants], gpus)
    config = _config(dev, arch_list, dtype_list, batch, preset, list(project_sets), gpus,
                     mask_step_factor, steps, warmup)  # fmt: skip
    write = _writer(json_path, config)
    results: list[dict[str, Any]] = []
    click.echo(f"| arch | batch | dtype | device | for | s/step (median of {steps}) | images/s |")
    click.echo("|---|---|---|---|---|---|---|")
    for arch, batches in plan.items():
        for entry in _measure_arch(arch, batches, dtype_list, dev, steps, warmup):
            results.append(entry)
            click.echo(_row(entry, device))
            write(results, [], [])
    loader_rate = None
    if loader_json:  # the data path measured beside the model step
        loader_rate = (
            read_result(loader_json, "loader").row("projection").value("images_per_s_per_gpu")
        )
    assume = ProjectionAssumptions(mask_step_factor, gpus, loader_rate)
    projections = _projections(results, variants, dtype_list, assume)
    summary = [projection_text(p) for p in projections]
    if projections:
        summary.append(
            f"(mask step = {mask_step_factor}x a plain step, assumed; left out: {LEFT_OUT})"
        )
    for line in summary:
        click.echo(line)
    write(results, projections, summary)


def _check_lists(
    archs: str, dtypes: str, batch: str, preset: str, gpus: int
) -> tuple[list[str], list[str]]:
    """The parsed --archs and --dtypes, or a UsageError naming the bad value and the fix."""
    arch_list = [a for a in archs.split(",") if a]
    dtype_list = [d for d in dtypes.split(",") if d]
    if not arch_list:
        raise click.UsageError("--archs is empty; give e.g. resnet18,vit_b_16")
    for arch in arch_list:
        if arch not in ARCHS:
            raise click.UsageError(f"--archs: {ARCHS.unknown_message(arch)}")
    if not dtype_list or any(d not in DTYPES for d in dtype_list):
        raise click.UsageError(f"--dtypes takes fp32 and/or bf16, got {dtypes!r}")
    if batch != "preset" and not (batch.isdigit() and int(batch) > 0):
        raise click.UsageError(f"--batch takes 'preset' or a positive integer, got {batch!r}")
    if preset not in PRESETS:
        raise click.UsageError(f"--preset: {PRESETS.unknown_message(preset)}")
    if gpus < 1:
        raise click.UsageError(f"--gpus takes a positive integer, got {gpus}")
    return arch_list, dtype_list


def _config(dev: torch.device, archs: list[str], dtypes: list[str], batch: str, preset: str,
            project_sets: list[str], gpus: int, factor: float, steps: int,
            warmup: int) -> dict[str, Any]:  # fmt: skip
    """The resolved options, as the result's config."""
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "archs": archs,
        "dtypes": dtypes,
        "batch": batch,
        "preset": preset,
        "project_sets": project_sets,
        "gpus": gpus,
        "mask_step_factor": factor,
        "steps": steps,
        "warmup": warmup,
    }


_Write = Callable[[list[dict[str, Any]], list[dict[str, Any]], list[str]], None]


def _writer(json_path: str | None, config: dict[str, Any]) -> _Write:
    """write(results, projections, summary): the result file rewritten with what is known so
    far (provenance taken once: it runs git); nothing when ``json_path`` is None."""
    if not json_path:
        return lambda results, projections, summary: None
    from subind.provenance import provenance

    prov = provenance()

    def write(results: list[dict], projections: list[dict], summary: list[str]) -> None:
        rows = [setting_row(r) for r in results] + projection_rows(projections)
        write_result(json_path, "vision_step", config, rows, summary, prov)

    return write


def setting_row(entry: dict[str, Any]) -> Row:
    """The "setting" row of one measured (arch, batch, dtype): its median s/step, images/s and
    every timed step, or its error."""
    fields = {k: Field(entry[k]) for k in ("arch", "dtype")}
    fields |= {"batch": Field(entry["batch"], "images"), "roles": Field(", ".join(entry["roles"]))}
    if "error" in entry:
        fields["error"] = Field(entry["error"])
    else:
        fields["s_per_step"] = Field(entry["s_per_step"], "s/step")
        fields["images_per_s"] = Field(entry["images_per_s"], "images/s")
        fields["s_per_step_all"] = Field(entry["s_all"], "s/step")
    name = f"{entry['arch']} batch {entry['batch']} {entry['dtype']}"
    return Row(name, "setting", fields)


# The unit of each number of a projection (project_table1) and of its per-model workload.
_UNITS = {"gpus": "GPUs", "mask_step_factor": "x", "train_batch": "images",
          "loader_images_per_s": "images/s"}  # fmt: skip
_UNITS |= {"discovery_batch": "images", "ddp_batch_per_gpu": "images"}
_UNITS |= {k: "runs" for k in ("trained_runs", "discovery_runs", "discovery_dealt")}
_UNITS |= {"train_steps": "steps", "discovery_steps": "steps"}


def projection_rows(projections: list[dict[str, Any]]) -> list[Row]:
    """Per projection of :func:`_projections`: a "projection" row (hours on 1 GPU and on
    ``gpus`` GPUs both ways, the assumed mask step factor, what is left out; or its error) and
    a "projection_model" row per model (its workload and hours), both with the projection's
    variant and dtype."""
    rows = []
    for p in projections:
        ident = {"variant": Field(p["variant"]), "dtype": Field(p["dtype"])}
        head = f"Table 1 projection ({p['variant']}, {p['dtype']})"
        fields = ident | {
            k: Field(p[k], "h") for k in ("hours_1gpu", "hours_ddp", "hours_runs_dealt") if k in p
        }
        fields |= {k: Field(p[k], _UNITS[k])
                   for k in ("gpus", "mask_step_factor", "loader_images_per_s") if k in p}  # fmt: skip
        if "error" in p:
            fields["error"] = Field(p["error"])
        else:
            discovery = sum(w["discovery_hours"] for w in p["models"].values())
            fields |= {"discovery_hours": Field(discovery, "h"), "left_out": Field(p["left_out"])}
        rows.append(Row(head, "projection", fields))
        for model, w in p.get("models", {}).items():
            hours = {k: Field(v, "h") for k, v in w.items() if k.endswith("_hours")}
            hours["hours"] = Field(w["train_hours"] + w["discovery_hours"], "h")
            counts = {k: Field(v, _UNITS[k]) for k, v in w.items()
                      if not k.endswith("_hours") and not k.startswith("_")}  # fmt: skip
            fields = ident | {"model": Field(model)} | counts | hours
            rows.append(Row(f"{head} {model}", "projection_model", fields))
    return rows


if __name__ == "__main__":
    main()
