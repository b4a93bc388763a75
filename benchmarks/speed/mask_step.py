"""Discovery's mask step vs a plain training step of the same GPT-2 (target: at most 1.3x).

The steps are the bodies of the real loops on the same batch-50 rows of the paper's model
(n_embd 128, 4 heads, inner 512, numbers < 1000):
    plain:       subind.train.fit's step (train mode, AdamW over every parameter)
    mask:        subind.discover.discover's step (eval mode, masks on every attention/MLP
                 weight, loss + lambda * penalty inside MaskSet.cached(), Adam over the scores)
    mask_naive:  the same without MaskSet.cached() (one sigmoid per weight read and per
                 penalty term: the straightforward parametrization, for comparison)
Rounds rotate the order of the blocks so that drift favours none; the table gives the median
ms per step over rounds and the ratios of the medians to plain.

    python -m benchmarks.speed.mask_step --device cpu --layers 2,12 --json mask_step.json
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import click
import torch

from benchmarks.arithmetic.gpt2 import GPT2, GPT2Config
from benchmarks.arithmetic.tasks import last_token_loss
from benchmarks.speed.result import Field, Row, write_result
from subind.discover import DiscoveryConfig
from subind.masks import add_masks, select_parameters
from subind.train import TrainConfig


def _model(layers: int, device: torch.device, seed: int) -> GPT2:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=1001, n_positions=4, n_embd=128, n_layer=layers, n_head=4)
    return GPT2(cfg).to(device)


def _rows(batch_size: int, device: torch.device, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, 1000, (batch_size, 4), generator=gen)
    rows[:, 2] = 1000  # separator
    rows[:, 3] %= 7
    return rows.to(device)


def plain_step(model: GPT2, rows: torch.Tensor) -> Callable[[], None]:
    """One step of subind.train.fit: AdamW on every parameter, train mode (dropout on)."""
    cfg = TrainConfig()
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    model.train()

    def step() -> None:
        loss = last_token_loss(model, rows)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def mask_step(model: GPT2, rows: torch.Tensor, cached: bool = True) -> Callable[[], None]:
    """One step of subind.discover.discover on the attention/MLP weights (fig3's selection);
    ``cached=False``: without MaskSet.cached()."""
    from contextlib import nullcontext

    from benchmarks.arithmetic.stages import GPT2_MASKED

    cfg = DiscoveryConfig()
    masks = add_masks(model, select_parameters(model, GPT2_MASKED), init=cfg.mask_init)
    masks.set_beta(3.0)
    opt = torch.optim.Adam(list(masks.parameters()), lr=cfg.lr)
    model.eval()

    def step() -> None:
        with masks.cached() if cached else nullcontext():
            loss = last_token_loss(model, rows) + cfg.penalty * masks.penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _time(step: Callable[[], None], n: int, device: torch.device) -> float:
    """Milliseconds per step over ``n`` steps (CUDA synchronised at both ends)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - start) / n


def measure(
    layers: int,
    device: torch.device,
    steps: int = 20,
    rounds: int = 5,
    warmup: int = 5,
    batch_size: int = 50,
    seed: int = 0,
) -> dict:
    """{layers, plain_ms, mask_ms, mask_naive_ms, ratio, naive_ratio, *_ms_all}: medians over
    ``rounds`` blocks of ``steps`` steps of each kind (order rotated per round), after
    ``warmup`` untimed steps of each."""
    rows = _rows(batch_size, device, seed)
    steps_by_name = {
        "plain": plain_step(_model(layers, device, seed), rows),
        "mask": mask_step(_model(layers, device, seed), rows),
        "mask_naive": mask_step(_model(layers, device, seed), rows, cached=False),
    }
    names = list(steps_by_name)
    for _ in range(warmup):
        for step in steps_by_name.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(_time(steps_by_name[name], steps, device))
    med = {name: statistics.median(times[name]) for name in names}
    return {
        "layers": layers,
        "plain_ms": med["plain"],
        "mask_ms": med["mask"],
        "mask_naive_ms": med["mask_naive"],
        "ratio": med["mask"] / med["plain"],
        "naive_ratio": med["mask_naive"] / med["plain"],
        **{f"{name}_ms_all": times[name] for name in names},
    }


def table(results: list[dict]) -> str:
    """Plain step ms, mask step ms (discovery's), their ratio, and the uncached mask step."""
    lines = [
        f"{'layers':>6} {'plain_ms':>10} {'mask_ms':>10} {'mask/plain':>11} "
        f"{'naive_ms':>10} {'naive/plain':>12}"
    ]
    for r in results:
        lines.append(
            f"{r['layers']:>6} {r['plain_ms']:>10.2f} {r['mask_ms']:>10.2f} {r['ratio']:>10.2f}x "
            f"{r['mask_naive_ms']:>10.2f} {r['naive_ratio']:>11.2f}x"
        )
    return "\n".join(lines)


@click.command()
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--layers", default="2,12", show_default=True, help="comma-separated depths")
@click.option("--steps", type=int, default=20, show_default=True, help="steps per timed block")
@click.option("--rounds", type=int, default=5, show_default=True, help="blocks of each kind")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(device, layers, steps, rounds, threads, json_path) -> None:
    """Print plain step ms, mask step ms and their ratio per depth."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda but torch sees no CUDA device; use --device cpu")
    try:
        depths = [int(x) for x in layers.split(",") if x]
    except ValueError:
        raise click.BadParameter(
            f"--layers takes comma-separated integers, got {layers!r}"
        ) from None
    results = [measure(L, dev, steps=steps, rounds=rounds) for L in depths]
    text = table(results)
    click.echo(text)
    if json_path:
        config = {
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "layers": depths,
            "steps": steps,
            "rounds": rounds,
            "batch_size": 50,
        }
        write_result(json_path, "mask_step", config, result_rows(results), text.splitlines())


def result_rows(results: list[dict]) -> list[Row]:
    """A "depth" row per result of :func:`measure`: medians in ms/step, their ratios, and every
    round's time (``*_ms_all``)."""
    units = {"layers": "layers", "ratio": "x", "naive_ratio": "x"}
    return [
        Row(
            f"{r['layers']} layers",
            "depth",
            {k: Field(v, units.get(k, "ms/step")) for k, v in r.items()},
        )
        for r in results
    ]


if __name__ == "__main__":
    main()
