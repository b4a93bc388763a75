"""Table 1's runs trained stacked (``stack``: :func:`subind.stacked.fit_stacked`) vs one at a
time (:func:`subind.train.fit` per run): seconds per step of all R runs, and the ratio, for
each architecture, on random weights and synthetic batches (SGD with the paper's settings; an
evaluation only at the end, of one batch).

    python -m benchmarks.speed.stacked_step --device cpu --runs 3 --batch 64 --threads 2
    python -m benchmarks.speed.stacked_step --device cuda --runs 3,8 --batch 64 --json s.json

A ratio above 1 means the stacked runs are faster. Both paths run ``--steps`` steps after
``--warmup`` untimed ones, in this process, one after the other, on the same data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import click
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.speed.result import Field, Row, write_result
from benchmarks.vision.models import arch_for
from subind.stacked import fit_stacked
from subind.train import TrainConfig, fit

NUM_CLASSES = 16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _models(arch: str, runs: int, device: torch.device) -> list[nn.Module]:
    a = arch_for(arch)
    out = []
    for r in range(runs):
        torch.manual_seed(r)
        out.append(a.build(NUM_CLASSES).to(device))
    return out


def _batches(x: torch.Tensor, y: torch.Tensor, steps: int) -> Callable[[int], Iterator]:
    return lambda epoch: ((x, y) for _ in range(steps))


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def time_paths(
    arch: str, runs: int, batch: int, steps: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Seconds per step of all ``runs`` runs: one at a time ("single") and stacked; and
    ("max_weight_diff") the largest difference between the two paths' weights after
    ``warmup + steps`` steps (float rounding, grown over the steps)."""
    size = arch_for(arch).image_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
    xv, yv = x[: min(batch, 16)], y[: min(batch, 16)]

    def evaluate(m: nn.Module) -> float:
        with torch.no_grad():
            return float((m(xv).argmax(-1) == yv).float().mean())

    out, trained = {}, {}
    for path in ("single", "stacked"):
        seconds = []
        for n in (warmup, warmup + steps):  # the difference: `steps` steps, set-up excluded
            cfg = TrainConfig(epochs=1, lr=1e-3, optimizer="sgd", momentum=0.9,
                              weight_decay=1e-4, max_steps=n)  # fmt: skip
            models = _models(arch, runs, device)
            _sync(device)
            start = time.perf_counter()
            if path == "single":
                for m in models:
                    fit(m, _batches(x, y, n), _loss, evaluate, cfg, progress=False)
            else:
                fit_stacked(models, [_batches(x, y, n)] * runs, _loss, [evaluate] * runs, cfg,
                            list(range(runs)), progress=False)  # fmt: skip
            _sync(device)
            seconds.append(time.perf_counter() - start)
        out[path] = (seconds[1] - seconds[0]) / steps
        trained[path] = models
    out["max_weight_diff"] = max(
        float((p - q).detach().abs().max())
        for a, b in zip(trained["single"], trained["stacked"], strict=True)
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )
    return out


@click.command()
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--archs", default="resnet18-mini,vit_b_16-mini", show_default=True)
@click.option("--runs", default="3", show_default=True, help="comma-separated run counts R")
@click.option("--batch", default=64, show_default=True, help="each run's batch")
@click.option("--steps", default=10, show_default=True, help="timed steps per path")
@click.option("--warmup", default=3, show_default=True, help="untimed steps per path")
@click.option("--threads", default=1, show_default=True, help="torch CPU threads")
@click.option("--json", "json_path", default=None, help="also write the results as JSON here")
def main(device, archs, runs, batch, steps, warmup, threads, json_path) -> None:
    """Print seconds per step of R runs trained stacked vs one at a time, and the ratio."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda but torch sees no CUDA device; use --device cpu")
    names = [a.strip() for a in archs.split(",") if a.strip()]
    counts = [int(r) for r in runs.split(",") if r.strip()]
    if steps < 1 or warmup < 0 or not counts or min(counts) < 1:
        raise click.UsageError("--steps >= 1, --warmup >= 0 and --runs of positive counts")
    for a in names:
        arch_for(a)  # an unknown name fails here, before any timing
    rows = []
    lines = ["| arch | runs | batch | one at a time ms | stacked ms | ratio | weight diff |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for a in names:
        for r in counts:
            t = time_paths(a, r, batch, steps, warmup, dev)
            ratio = t["single"] / t["stacked"]
            rows.append(Row(f"{a} x{r}", "setting", {
                "arch": Field(a), "runs": Field(r, "runs"), "batch": Field(batch, "images"),
                "single_ms": Field(1e3 * t["single"], "ms/step"),
                "stacked_ms": Field(1e3 * t["stacked"], "ms/step"),
                "ratio": Field(ratio, "x"),
                "max_weight_diff": Field(t["max_weight_diff"], "abs"),
            }))  # fmt: skip
            lines.append(f"| {a} | {r} | {batch} | {1e3 * t['single']:.1f} | "
                         f"{1e3 * t['stacked']:.1f} | {ratio:.2f}x | "
                         f"{t['max_weight_diff']:.1e} |")  # fmt: skip
    lines.append("ms: one step of all runs; ratio: one at a time / stacked (above 1: faster); "
                 f"weight diff: largest |stacked - one at a time| after {warmup + steps} steps")  # fmt: skip
    click.echo("\n".join(lines))
    if json_path:
        config = {"device": device, "archs": names, "runs": counts, "batch": batch,
                  "steps": steps, "warmup": warmup, "threads": threads}  # fmt: skip
        write_result(json_path, "stacked_step", config, rows, lines)


if __name__ == "__main__":
    main()
