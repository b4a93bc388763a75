"""Images/s through Table 1's exact training transform, on generated JPEGs the size of ImageNet's
(~500 x 375 px, ~110 KB at quality 90): the data path the GPU-hour projection also depends on.

Paths (one row each):
    pil       one process: PIL decode + the released training transform
              (benchmarks.vision.data.released_train_transform), per image: images/s of one core
    loader-W  a DataLoader with W worker processes over the same files: images/s, and per core
    device    torchvision.io.decode_jpeg on --device (nvJPEG on CUDA) + the same transform as
              tensors there (benchmarks.vision.decode, ``image_decoding=device``)

    python -m benchmarks.speed.loader --images 64 --workers 2 --device cpu --json loader.json

``--cores-per-gpu`` turns the per-core rate into the images/s one GPU's share of a node feeds it
(``images_per_s_per_gpu``, the figure docs/reproduce-table1.md assumes at 4,000 with 16 cores).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks.speed.result import Field, Row, write_result
from benchmarks.vision.data import FileImages, released_train_transform
from benchmarks.vision.decode import DeviceDecoded, EncodedImages, encoded_batch

SIZES = ((500, 375), (375, 500), (500, 333), (640, 480))  # ImageNet's common shapes (w, h)


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` JPEGs of ImageNet-like sizes and content (smooth colour fields with texture and
    noise, quality 90) under ``folder``; their names."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        low = rng.integers(0, 256, (h // 32 + 2, w // 32 + 2, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((w, h), Image.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-24, 25, (h, w, 3))
        name = f"img{i:04d}.JPEG"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / name, quality=90)
        names.append(name)
    return names


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def time_pil(files: FileImages, passes: int) -> float:
    """Images/s of one process reading and transforming ``files`` one by one."""
    for i in range(min(4, len(files))):  # warm-up: imports, caches
        files[i]
    start = time.perf_counter()
    for _ in range(passes):
        for i in range(len(files)):
            files[i]
    return _rate(passes * len(files), time.perf_counter() - start)


def time_loader(files: FileImages, workers: int, batch: int, passes: int) -> float:
    """Images/s of a DataLoader with ``workers`` processes (their start-up not counted)."""
    loader = DataLoader(files, batch_size=batch, num_workers=workers,
                        persistent_workers=workers > 0)  # fmt: skip
    for _ in loader:  # first pass: workers started, files in the page cache
        break
    start = time.perf_counter()
    n = 0
    for _ in range(passes):
        for x, _ in loader:
            n += len(x)
    return _rate(n, time.perf_counter() - start)


def time_device(files: FileImages, device: torch.device, batch: int, passes: int) -> float:
    """Images/s of decoding and transforming on ``device`` (the files read in this process)."""
    encoded = EncodedImages.of(files)
    loader = DataLoader(encoded, batch_size=batch, collate_fn=encoded_batch)
    epochs = DeviceDecoded(lambda epoch: iter(loader), device)
    next(iter(epochs(0)))  # warm-up (CUDA context, nvJPEG handles)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    n = 0
    for e in range(passes):
        for x, _ in epochs(e):
            n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return _rate(n, time.perf_counter() - start)


@click.command()
@click.option("--images", default=64, show_default=True, help="generated JPEGs")
@click.option("--passes", default=2, show_default=True, help="timed passes over them")
@click.option("--workers", default="2", show_default=True,
              help="comma-separated DataLoader worker counts (0: none)")  # fmt: skip
@click.option("--batch", default=32, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="the device path's: cpu, cuda")
@click.option("--cores-per-gpu", default=16, show_default=True,
              help="CPU cores one GPU's loader gets (for images_per_s_per_gpu)")  # fmt: skip
@click.option("--threads", default=1, show_default=True, help="torch CPU threads (main process)")
@click.option("--json", "json_path", default=None, help="also write the results as JSON here")
def main(images, passes, workers, batch, device, cores_per_gpu, threads, json_path) -> None:
    """Print images/s of Table 1's training transform: PIL per core, DataLoader workers, and
    decoding on a device."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda but torch sees no CUDA device; use --device cpu")
    counts = [int(w) for w in workers.split(",") if w.strip()]
    rows, lines = [], ["| path | cores | images/s | images/s per core |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        names = make_jpegs(Path(tmp), images)
        kb = sum((Path(tmp) / n).stat().st_size for n in names) / len(names) / 1024
        files = FileImages(tmp, [(n, 0) for n in names], released_train_transform())
        measured = [("pil", 1, time_pil(files, passes))]
        measured += [(f"loader-{w}", max(w, 1), time_loader(files, w, batch, passes))
                     for w in counts]  # fmt: skip
        measured.append((f"device-{dev.type}", 1, time_device(files, dev, batch, passes)))
    per_core = measured[0][2]
    for name, cores, rate in measured:
        rows.append(Row(name, "path", {
            "cores": Field(cores, "cores"),
            "images_per_s": Field(rate, "images/s"),
            "images_per_s_per_core": Field(rate / cores, "images/s"),
        }))  # fmt: skip
        lines.append(f"| {name} | {cores} | {rate:,.0f} | {rate / cores:,.0f} |")
    per_gpu = per_core * cores_per_gpu
    rows.append(Row("projection", "projection", {
        "cores_per_gpu": Field(cores_per_gpu, "cores"),
        "images_per_s_per_gpu": Field(per_gpu, "images/s"),
    }))  # fmt: skip
    lines.append(f"PIL path: {per_core:,.0f} images/s per core x {cores_per_gpu} cores = "
                 f"{per_gpu:,.0f} images/s per GPU (JPEGs of {kb:.0f} KB on average)")  # fmt: skip
    click.echo("\n".join(lines))
    if json_path:
        config = {"images": images, "passes": passes, "workers": counts, "batch": batch,
                  "device": device, "cores_per_gpu": cores_per_gpu, "threads": threads,
                  "jpeg_kb": round(kb, 1)}  # fmt: skip
        write_result(json_path, "loader", config, rows, lines)


if __name__ == "__main__":
    main()
