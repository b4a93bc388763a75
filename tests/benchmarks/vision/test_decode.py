"""image_decoding=device: JPEGs decoded by torchvision.io and transformed as tensors give what
PIL and the released transform give, draw for draw (tested on the CPU; on CUDA the same code
runs with nvJPEG)."""

import dataclasses
import io

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from benchmarks.vision.config import PRESETS
from benchmarks.vision.data import FileImages, released_train_transform
from benchmarks.vision.decode import DeviceDecoded, EncodedImages, released_train_tensor
from benchmarks.vision.training import train_loader


def _jpegs(folder, n=5):
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        w, h = [(300, 250), (250, 300), (400, 260)][i % 3]
        low = Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).resize((w, h))
        arr = np.clip(np.asarray(low).astype(int) + rng.integers(-20, 21, (h, w, 3)), 0, 255)
        Image.fromarray(arr.astype(np.uint8)).save(folder / f"{i}.JPEG", quality=90)
        names.append(f"{i}.JPEG")
    return names


def test_decode_jpeg_gives_pils_pixels(tmp_path):
    for name in _jpegs(tmp_path):
        data = (tmp_path / name).read_bytes()
        ours = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                           mode=ImageReadMode.RGB)  # fmt: skip
        pil = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        assert torch.equal(ours, pil.permute(2, 0, 1)), name


def test_the_tensor_transform_is_the_released_transform_draw_for_draw(tmp_path):
    for name in _jpegs(tmp_path):
        img = Image.open(tmp_path / name).convert("RGB")
        torch.manual_seed(3)
        want = released_train_transform()(img)
        torch.manual_seed(3)
        got = released_train_tensor(torch.from_numpy(np.asarray(img)).permute(2, 0, 1))
        assert got.shape == (3, 224, 224) and torch.equal(got, want), name


def test_image_decoding_device_feeds_training_the_same_batches(tmp_path):
    names = _jpegs(tmp_path, 6)
    files = FileImages(tmp_path, [(n, i % 2) for i, n in enumerate(names)],
                       released_train_transform())  # fmt: skip
    cfg = dataclasses.replace(PRESETS.get("paper"), loader_workers=0)
    pil = train_loader(cfg, files, 3, seed=1, rank=0, world=1, device=torch.device("cpu"))
    dev = train_loader(dataclasses.replace(cfg, image_decoding="device"), files, 3, seed=1,
                       rank=0, world=1, device=torch.device("cpu"))  # fmt: skip
    assert isinstance(dev, DeviceDecoded) and not isinstance(pil, DeviceDecoded)
    assert len(dev) == len(pil) == 2
    torch.manual_seed(7)
    a = list(pil(0))
    torch.manual_seed(7)
    b = list(dev(0))
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    assert len(EncodedImages.of(files)) == 6
