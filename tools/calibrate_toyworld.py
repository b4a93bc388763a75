"""Calibration of the mini world: build it, pretrain both mini architectures, and measure what
the mini preset needs of them (original and pooled 16-class accuracy and cue-conflict shape bias,
all through the world's decision mapping). Usage:

    PYTHONPATH=. python tools/calibrate_toyworld.py OUT [--set FIELD=VALUE ...] [--pset FIELD=VALUE ...]

``--set`` overrides WorldConfig fields, ``--pset`` PretrainConfig fields (ints, floats, tuples as
a,b). Prints one table row per architecture.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.vision.models import ARCHS, load_weights
from benchmarks.vision.toyworld.pretrain import PretrainConfig, normalize, pretrain
from benchmarks.vision.toyworld.world import WorldConfig, make_world
from meanpool import loader
from meanpool.imagenet import scan, sixteen_classes


def _parse(cls, pairs):
    kw = {}
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    for pair in pairs or []:
        k, v = pair.split("=", 1)
        t = str(types[k])
        if "tuple" in t:
            kw[k] = tuple(float(x) for x in v.split(","))
        elif t == "bool":
            kw[k] = v.lower() in ("1", "true", "yes")
        else:
            kw[k] = int(v) if t == "int" else float(v)
    return cls(**kw)


def _stack(images) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(i.convert("RGB")) for i in images])).permute(
        0, 3, 1, 2
    )


@torch.no_grad()
def _decide(model, x: torch.Tensor, idx: list[int]) -> torch.Tensor:
    out = []
    for i in range(0, len(x), 512):
        p = model(normalize(x[i : i + 512])).softmax(1)
        out.append(p[:, idx].argmax(1))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--set", nargs="*")
    ap.add_argument("--pset", nargs="*")
    ap.add_argument("--archs", default="resnet18-mini,vit_b_16-mini")
    args = ap.parse_args()
    out = Path(args.out)
    wcfg, pcfg = _parse(WorldConfig, args.set), _parse(PretrainConfig, args.pset)
    t0 = time.perf_counter()
    world = make_world(out / "world", wcfg)
    t_world = time.perf_counter() - t0
    order, _ = sixteen_classes()
    mapping = json.loads(world.decision_mapping.read_text())["categories"]
    idx = [mapping[c]["imagenet_indices"][0] for c in order]
    val = scan(world.imagenet_dir)["val"]
    x_val = _stack(Image.open(world.imagenet_dir / it.rel) for it in val)
    y_val = torch.tensor([it.label for it in val])
    pooled = list(loader.dataset(world.pooled_dir / "val"))
    x_pool = _stack(s["image"] for s in pooled)
    y_pool = torch.tensor([s["cls"] for s in pooled])
    cue = sorted(world.cue_conflict_dir.glob("*/*.png"))
    x_cue = _stack(Image.open(p) for p in cue)
    shape = torch.tensor([order.index(p.parent.name) for p in cue])
    texture = torch.tensor([order.index(p.stem.split("-")[1].rstrip("0123456789")) for p in cue])
    keep = shape != texture
    print(f"world: {t_world:.1f} s  {json.dumps(dataclasses.asdict(wcfg))}")
    print(f"pretrain: {json.dumps(dataclasses.asdict(pcfg))}")

    @torch.no_grad()
    def metrics(model) -> dict[str, float]:
        d = _decide(model, x_cue, idx)[keep]
        s_dec = float((d == shape[keep]).float().mean())
        t_dec = float((d == texture[keep]).float().mean())
        return {
            "original": float((_decide(model, x_val, idx) == y_val).float().mean()),
            "pooled": float((_decide(model, x_pool, idx) == y_pool).float().mean()),
            "cue_shape": s_dec,
            "cue_texture": t_dec,
            "shape_bias": s_dec / max(s_dec + t_dec, 1e-9),
        }

    print(
        "| arch | epoch | holdout | original | pooled | cue shape | cue texture | shape bias | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.archs.split(","):
        arch = ARCHS.get(name)
        t1 = time.perf_counter()
        path = pretrain(arch, world, pcfg, out / f"{name}.pth", progress=False, monitor=metrics)
        secs = time.perf_counter() - t1
        meta = json.loads(Path(str(path) + ".json").read_text())
        for h, m in zip(meta["history"], meta["monitor"], strict=True):
            print(
                f"| {name} | {h['epoch'] + 1} | {h['val_accuracy']:.3f} | {m['original']:.3f} | "
                f"{m['pooled']:.3f} | {m['cue_shape']:.3f} | {m['cue_texture']:.3f} | "
                f"{m['shape_bias']:.3f} | |"
            )
        model = arch.build(len(world.pretrain_classes))
        load_weights(model, path)
        m = metrics(model.eval())
        print(
            f"| **{name}** (saved) | {meta['best_epoch'] + 1} | {meta['holdout_accuracy']:.3f} | "
            f"{m['original']:.3f} | {m['pooled']:.3f} | {m['cue_shape']:.3f} | "
            f"{m['cue_texture']:.3f} | {m['shape_bias']:.3f} | {secs:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
