"""Transfer-run throughput: batched groups vs one run at a time, same process, same device.

The slice: the paper's transfer settings (numbers < 1000, n_embd 128, batch 50, lr 2e-4, 1,000
validation rows) at n = 0 disambiguating rows (the 1,000-row ambiguous set: 20 steps per epoch),
every condition of paper Figure 3 in both unmasked modes x ``--seeds`` seeds (8 runs per seed:
one batched group, as ``subind-bench run fig3`` forms it), at each depth of ``--layers``. Base
weights and the subnetwork (20% of each masked tensor) are random: speed does not depend on
them. Each side trains ``--epochs`` epochs (training steps + validation pass) after a short
warm-up; runs per hour = 3600 / (seconds per run-epoch x 100 epochs). One-at-a-time is timed on
``--single-runs`` runs of the group (every run costs the same).

    python -m benchmarks.speed.sweep                                   # CPU, 2 layers
    python -m benchmarks.speed.sweep --device cuda --layers 2,12 --json speed.json

The projection of the paper's whole grid (6 depths x 17 sizes x 8 runs x 5 seeds = 4,080 runs,
40 runs per depth and size, trained in groups of the measured size: one group with the default
--seeds 5) uses the measured group step and validation-pass times at 2 and 12 layers, linear in
depth between them (printed only when both are measured).
"""

from __future__ import annotations

import time

import click
import torch

from benchmarks.arithmetic.batched import fit_batched, stack_runs, stacked_accuracies
from benchmarks.arithmetic.config import PAPER_SIZES, PRESETS
from benchmarks.arithmetic.gpt2 import GPT2
from benchmarks.arithmetic.stages import model_config
from benchmarks.arithmetic.tasks import Batches, accuracy, last_token_loss
from benchmarks.speed.result import Field, Row, write_result
from subind.conditions import CONDITIONS, DEFAULT_CONDITIONS
from subind.subnetwork import Subnetwork
from subind.train import TrainConfig, fit

EPOCHS = 100  # transfer epochs of the paper (runs per hour are per full run)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _variants(seeds: int) -> list[tuple[str, str, int]]:
    modes = ("inherit", "reinit")
    return [
        (cond, mode, seed)
        for seed in range(seeds)
        for cond in DEFAULT_CONDITIONS
        for mode in CONDITIONS.get(cond).modes(modes)
    ]


def _rows(n: int, vocab: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """n random rows <a> <b> <sep> <c> (values do not matter for speed)."""
    rows = torch.randint(0, vocab - 1, (n, 4), generator=gen)
    rows[:, 2] = vocab - 1
    return rows.to(device)


def _models(layers: int, variants, device: torch.device) -> list[torch.nn.Module]:
    cfg = PRESETS.get("paper")
    mcfg = model_config(cfg, layers)
    torch.manual_seed(0)
    base = GPT2(mcfg).to(device)
    gen = torch.Generator().manual_seed(0)
    masks = {
        n: torch.rand(p.shape, generator=gen) < 0.2
        for n, p in base.named_parameters()
        if ".h." in n and n.endswith("weight") and p.ndim == 2
    }
    sub = Subnetwork(masks)
    out = []
    for cond, mode, seed in variants:
        torch.manual_seed(seed)
        fresh = GPT2(mcfg).to(device)
        model, _ = CONDITIONS.get(cond).build(base, fresh, sub, mode, False, seed=seed)
        out.append(model)
    return out


def measure(
    layers: int, device: torch.device, seeds: int, epochs: int, single_runs: int
) -> dict[str, float]:
    """Seconds per run-epoch one at a time and batched, at one depth."""
    cfg = PRESETS.get("paper")
    vocab = model_config(cfg, layers).vocab_size
    variants = _variants(seeds)
    gen = torch.Generator().manual_seed(1)
    train = [_rows(cfg.max_number, vocab, gen, device) for _ in variants]  # n = 0: 1,000 rows
    val = [_rows(cfg.eval_rows, vocab, gen, device) for _ in variants]
    bs = cfg.transfer_batch_size
    tc = TrainConfig(epochs=epochs, lr=cfg.transfer_lr)
    warm = TrainConfig(epochs=1, lr=cfg.transfer_lr)

    def single(models, train_rows, tcfg) -> float:
        _sync(device)
        start = time.perf_counter()
        for m, t, v in zip(models, train_rows, val, strict=False):
            fit(m, Batches(t, bs, 0), last_token_loss, lambda mm, v=v: accuracy(mm, v), tcfg,
                progress=False)  # fmt: skip
        _sync(device)
        return time.perf_counter() - start

    def batched(models, train_rows, tcfg) -> float:
        _sync(device)
        start = time.perf_counter()
        fit_batched(models, [Batches(t, bs, 0) for t in train_rows], val, tcfg, progress=False)
        _sync(device)
        return time.perf_counter() - start

    short = [t[: 2 * bs] for t in train]  # warm-up: 2 steps and a validation pass
    single(_models(layers, variants[:1], device), short[:1], warm)
    t_single = single(_models(layers, variants[:single_runs], device), train, tc)
    batched(_models(layers, variants, device), short, warm)
    t_batched = batched(_models(layers, variants, device), train, tc)
    models = _models(layers, variants, device)
    params = stack_runs(models).effective()
    _sync(device)
    start = time.perf_counter()
    stacked_accuracies(models[0].config, params, torch.stack(val), exact=False)
    _sync(device)
    val_s = time.perf_counter() - start
    per_single = t_single / (single_runs * epochs)
    per_batched = t_batched / (len(variants) * epochs)
    steps = cfg.max_number // bs
    return {
        "layers": layers,
        "group_size": len(variants),
        "steps_per_epoch": steps,
        "batched_group_step_s": max(t_batched / epochs - val_s, 0.0) / steps,
        "batched_group_validation_s": val_s,
        "single_s_per_run_epoch": per_single,
        "batched_s_per_run_epoch": per_batched,
        "single_runs_per_hour": 3600 / (per_single * EPOCHS),
        "batched_runs_per_hour": 3600 / (per_batched * EPOCHS),
        "speedup": per_single / per_batched,
    }


def project_paper_grid(rows: list[dict[str, float]]) -> float | None:
    """Hours for the paper's grid batched (8 runs x 5 seeds per depth and size, in groups of
    the measured size), from the measured group step and validation times at 2 and 12 layers,
    linear in depth."""
    by = {r["layers"]: r for r in rows}
    if 2 not in by or 12 not in by:
        return None
    cfg = PRESETS.get("paper")
    runs = len(_variants(len(cfg.seeds)))
    total = 0.0
    for layers in cfg.layers:
        w = (layers - 2) / 10
        step, val = (
            by[2][k] + (by[12][k] - by[2][k]) * w
            for k in ("batched_group_step_s", "batched_group_validation_s")
        )
        groups = -(-runs // int(by[2]["group_size"]))
        for n in PAPER_SIZES:
            steps = -(-(cfg.max_number + n) // cfg.transfer_batch_size)
            total += groups * cfg.transfer_epochs * (steps * step + val)
    return total / 3600


@click.command()
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
@click.option("--layers", default="2", show_default=True, help="comma-separated depths")
@click.option("--seeds", default=5, show_default=True, help="seeds per group (8 runs each)")
@click.option("--epochs", type=int, default=None, help="epochs timed per side [cuda: 3, cpu: 1]")
@click.option("--single-runs", default=2, show_default=True, help="runs timed one at a time")
@click.option("--threads", default=1, show_default=True, help="torch CPU threads")
@click.option("--json", "json_path", default=None, help="also write the results as JSON here")
def main(device, layers, seeds, epochs, single_runs, threads, json_path) -> list[dict]:
    """Print runs per hour, batched vs one at a time, and the ratio."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    epochs = epochs or (3 if dev.type == "cuda" else 1)
    depths = [int(x) for x in layers.split(",") if x]
    rows = [measure(L, dev, seeds, epochs, single_runs) for L in depths]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{threads} threads"
    lines = [
        f"transfer runs per hour on {name} (paper settings, n=0, {EPOCHS} epochs/run)",
        "| layers | group | one at a time (runs/h) | batched (runs/h) | ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['layers']} | {r['group_size']} | {r['single_runs_per_hour']:.1f} | "
        f"{r['batched_runs_per_hour']:.1f} | {r['speedup']:.2f}x |"
        for r in rows
    ]
    hours = project_paper_grid(rows)
    if hours is not None:
        lines.append(f"paper grid (4,080 runs), batched, projected: {hours:.2f} h")
    for line in lines:
        click.echo(line)
    if json_path:
        config = {"device": str(dev), "device_name": name, "threads": threads, "layers": depths,
                  "seeds": seeds, "epochs": epochs, "single_runs": single_runs,
                  "epochs_per_run": EPOCHS}  # fmt: skip
        write_result(json_path, "sweep", config, result_rows(rows, hours), lines)
    return rows


# The unit of each figure measure() returns.
_UNITS = {"layers": "layers", "group_size": "runs", "steps_per_epoch": "steps", "speedup": "x"}
_UNITS |= {"batched_group_step_s": "s/step", "batched_group_validation_s": "s"}
_UNITS |= {"single_s_per_run_epoch": "s", "batched_s_per_run_epoch": "s"}
_UNITS |= {"single_runs_per_hour": "runs/h", "batched_runs_per_hour": "runs/h"}


def result_rows(rows: list[dict[str, float]], hours: float | None) -> list[Row]:
    """A "depth" row per measured depth, then the "projection" row of the paper's grid (when
    both 2 and 12 layers were measured)."""
    out = [
        Row(f"{r['layers']} layers", "depth", {k: Field(v, _UNITS[k]) for k, v in r.items()})
        for r in rows
    ]
    if hours is not None:
        out.append(Row("paper grid, batched", "projection", {"hours": Field(hours, "h")}))
    return out


if __name__ == "__main__":
    main()
