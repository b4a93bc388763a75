"""Time one training step (forward, backward, SGD step) of each vision architecture on random
weights and a synthetic batch; prints a Markdown table of seconds per step and images/s.

    python -m benchmarks.speed.vision_step --archs resnet18-mini,vit_b_16-mini --batch 64 --threads 1
    python -m benchmarks.speed.vision_step --archs resnet18,vit_b_16 --batch 128 --device cuda --bf16
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from benchmarks.vision.models import ARCHS, replace_head


def step_time(name: str, batch: int, device: str, bf16: bool, steps: int, warmup: int = 3) -> float:
    """Median seconds of one SGD step of ``name`` (16-way head) on a (batch, 3, S, S) input."""
    arch = ARCHS.get(name)
    torch.manual_seed(0)
    model = replace_head(arch.build(16), arch, 16).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, arch.image_size, arch.image_size, device=device)
    y = torch.randint(0, 16, (batch,), device=device)
    times = []
    for i in range(warmup + steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device.split(":")[0], torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default="resnet18-mini,vit_b_16-mini")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--bf16", action="store_true", help="torch.autocast bf16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| arch | batch | device | bf16 | s/step (median of {args.steps}) | images/s |")
    print("|---|---|---|---|---|---|")
    for name in args.archs.split(","):
        s = step_time(name, args.batch, args.device, args.bf16, args.steps)
        print(
            f"| {name} | {args.batch} | {args.device} | {args.bf16} | {s:.4f} | {args.batch / s:.0f} |"
        )


if __name__ == "__main__":
    main()
