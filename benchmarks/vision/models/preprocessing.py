"""How an image becomes a model's input, one frozen dataclass for every weight source.

A :class:`Preprocessing` says how to resize (shorter side to N px, or exactly H x W), how large a
centre crop to take, with which interpolation, and the mean/std to normalise with. It is read
from where the weights come from: ImageNet's recipe for torchvision state dicts (the harness's
preprocessing until now), a transformers ``preprocessor_config.json``, torchvision's weight
metadata or a timm ``pretrained_cfg``. ``benchmarks.vision.data`` turns it into transforms.

This module imports neither torchvision nor transformers nor timm: the converters read plain
mappings and attributes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# transformers' IMAGENET_STANDARD_MEAN / _STD: the default of its ViT and ConvNeXt processors.
HALF = (0.5, 0.5, 0.5)

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
# PIL.Image.Resampling codes, as transformers stores ``resample`` in preprocessor configs.
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
CROP_ROUNDINGS = ("round", "floor")


class PreprocessingError(ValueError):
    """A preprocessing cannot be built or read (one-line message)."""


@dataclass(frozen=True)
class Preprocessing:
    """PIL image -> model input: resize, centre crop, scale to [0, 1], normalise per channel.

    ``resize``: an int N resizes the shorter side to N px keeping the aspect ratio (the longer
    side becomes int(N * long / short), as torchvision's and transformers' resizes); (H, W)
    resizes to exactly H x W px; None keeps the size. ``crop``: side of the centre crop in px,
    or None (then ``resize`` must be a square (S, S)). ``interpolation``: one of
    :data:`INTERPOLATIONS` (PIL's, antialiased). ``mean``/``std``: per RGB channel, applied to
    values in [0, 1]. ``crop_rounding``: where an odd margin puts the crop: "round" (torchvision's
    CenterCrop: top = round((H - crop) / 2), halves to even) or "floor" (transformers' image
    processors: top = (H - crop) // 2); the two differ by one pixel when H - crop = 3 mod 4.
    """

    resize: int | tuple[int, int] | None
    crop: int | None
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_rounding: str = "round"

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so that the dataclass stays hashable and compares equal.
        for name in ("mean", "std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if isinstance(self.resize, Sequence):
            object.__setattr__(self, "resize", tuple(int(v) for v in self.resize))
        problem = self._problem()
        if problem:
            raise PreprocessingError(f"invalid preprocessing: {problem}")

    def _problem(self) -> str | None:
        if self.interpolation not in INTERPOLATIONS:
            return f"interpolation {self.interpolation!r}; use one of {', '.join(INTERPOLATIONS)}"
        if self.crop_rounding not in CROP_ROUNDINGS:
            return f"crop_rounding {self.crop_rounding!r}; use 'round' or 'floor'"
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            return f"mean {self.mean} / std {self.std}; give 3 values each, std > 0"
        sizes = [self.resize] if isinstance(self.resize, int) else list(self.resize or ())
        if self.crop is not None:
            sizes.append(self.crop)
        if isinstance(self.resize, tuple) and len(self.resize) != 2:
            return f"resize {self.resize}; give N (shorter side) or (height, width)"
        if any(s < 1 for s in sizes):
            return f"sizes must be >= 1 px (resize {self.resize}, crop {self.crop})"
        if self.crop is None and not (
            isinstance(self.resize, tuple) and self.resize[0] == self.resize[1]
        ):
            return (
                f"resize {self.resize} without a crop does not give square images; add a centre "
                f"crop or resize to (S, S)"
            )
        return None

    @property
    def size(self) -> int:
        """Side of the square images it produces, in px."""
        if self.crop is not None:
            return self.crop
        assert isinstance(self.resize, tuple)
        return self.resize[0]

    @classmethod
    def imagenet(cls, image_size: int, resize_ratio: float) -> Preprocessing:
        """The harness's ImageNet recipe: shorter side to round(image_size * resize_ratio) px
        (bilinear), centre crop image_size px, ImageNet mean/std."""
        return cls(resize=round(image_size * resize_ratio), crop=image_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists); :meth:`from_dict` reads them back."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise PreprocessingError(
                f"unknown preprocessing field {unknown[0]!r}; known: "
                f"{', '.join(cls.__dataclass_fields__)}"
            )
        resize = d.get("resize")
        return cls(**{**d, "resize": tuple(resize) if isinstance(resize, list) else resize})

    def describe(self) -> str:
        """One line for logs, e.g. "shorter side 256 px, centre crop 224 px, bicubic,
        mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)"."""
        if self.resize is None:
            resize = "no resize"
        elif isinstance(self.resize, int):
            resize = f"shorter side {self.resize} px"
        else:
            resize = f"resize to {self.resize[0]}x{self.resize[1]} px"
        crop = f", centre crop {self.crop} px" if self.crop is not None else ""
        return f"{resize}{crop}, {self.interpolation}, mean {self.mean}, std {self.std}"


# ------------------------------------------------------------------------------ transformers
def _side(value: Any, what: str, where: str) -> int:
    """An int, or a square {"height": S, "width": S} -> S."""
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping) and value.get("height") == value.get("width") is not None:
        return int(value["height"])
    raise PreprocessingError(
        f"{where}: {what} {value!r} is not a square size; only square supported"
    )


def _hf_resample(config: Mapping[str, Any], default: int, where: str) -> str:
    value = config.get("resample", default)
    if isinstance(value, str) and value.lower() in INTERPOLATIONS:
        return value.lower()
    if value not in _PIL_RESAMPLE:
        raise PreprocessingError(f"{where}: unknown resample {value!r}; expected a PIL code 0-5")
    return _PIL_RESAMPLE[value]


def _hf_crop(config: Mapping[str, Any], where: str) -> int | None:
    if not config.get("do_center_crop"):
        return None
    return _side(config.get("crop_size", 224), "crop_size", where)


def _hf_geometry(config: Mapping[str, Any], kind: str, where: str) -> tuple[Any, int | None]:
    """(resize, crop) of a transformers image processor config."""
    convnext = kind.startswith("ConvNext")
    if not config.get("do_resize", True):
        return None, _hf_crop(config, where)
    size = config.get("size", {"shortest_edge": 384} if convnext else {"height": 224, "width": 224})
    if isinstance(size, int):  # the legacy format: ConvNeXt's is a shortest edge, others square
        size = {"shortest_edge": size} if convnext else {"height": size, "width": size}
    if not isinstance(size, Mapping):
        raise PreprocessingError(f"{where}: size {size!r} is neither an int nor a dict")
    if convnext:
        # ConvNextImageProcessor: below 384 px, shorter side to int(edge / crop_pct) and a centre
        # crop of edge px (crop_pct 0.875: 224 -> 256 -> 224); from 384 px on, a plain square warp.
        if "shortest_edge" not in size:
            raise PreprocessingError(
                f"{where}: a ConvNeXt size needs shortest_edge, got {dict(size)}"
            )
        edge = int(size["shortest_edge"])
        crop_pct = config.get("crop_pct") or 224 / 256
        return (int(edge / crop_pct), edge) if edge < 384 else ((edge, edge), None)
    if "crop_pct" in config and config["crop_pct"] is not None:
        raise PreprocessingError(
            f"{where}: crop_pct is only supported for ConvNeXt-style processors, not {kind or 'this one'}"
        )
    if "height" in size and "width" in size:
        resize: Any = (int(size["height"]), int(size["width"]))
    elif set(size) == {"shortest_edge"}:
        resize = int(size["shortest_edge"])
    else:
        raise PreprocessingError(
            f"{where}: size {dict(size)} is not supported; use shortest_edge or height/width"
        )
    return resize, _hf_crop(config, where)


def from_transformers(
    config: Mapping[str, Any], where: str = "preprocessor_config.json"
) -> Preprocessing:
    """The preprocessing a transformers image processor config (``preprocessor_config.json``)
    describes, as its PIL backend applies it (tested equal to transformers' own output).

    ConvNeXt-style processors (``microsoft/resnet-18``: shortest_edge 224, crop_pct 0.875,
    bicubic) and the generic size/crop_size ones (``google/vit-base-patch16-224``: 224x224,
    bilinear, mean = std = 0.5) are understood; the crop offset rounds down as transformers'.
    Raises PreprocessingError for what it cannot express (padding, other rescale factors).
    """
    kind = str(config.get("image_processor_type") or config.get("feature_extractor_type") or "")
    known = kind.startswith(("ConvNext", "ViT"))
    if config.get("do_pad"):
        raise PreprocessingError(f"{where}: padding (do_pad) is not supported")
    if not config.get("do_rescale", True) or not math.isclose(
        float(config.get("rescale_factor", 1 / 255)), 1 / 255, rel_tol=1e-6
    ):
        raise PreprocessingError(f"{where}: only rescaling by 1/255 (to [0, 1]) is supported")
    resize, crop = _hf_geometry(config, kind, where)
    if not config.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    elif "image_mean" in config and "image_std" in config:
        mean, std = tuple(config["image_mean"]), tuple(config["image_std"])
    elif known:
        mean, std = HALF, HALF
    else:
        raise PreprocessingError(
            f"{where}: {kind or 'the processor'} names no image_mean/image_std"
        )
    default_resample = 3 if kind.startswith("ConvNext") else 2
    return Preprocessing(
        resize=resize,
        crop=crop,
        interpolation=_hf_resample(config, default_resample, where),
        mean=mean,
        std=std,
        crop_rounding="floor",
    )


# ------------------------------------------------------------------------------ torchvision, timm
def from_torchvision_preset(preset: Any) -> Preprocessing:
    """From torchvision's ``WeightsEnum.transforms()`` (an ``ImageClassification``: resize_size,
    crop_size, interpolation, mean, std)."""
    resize = list(preset.resize_size)
    crop = list(preset.crop_size)
    return Preprocessing(
        resize=resize[0] if len(resize) == 1 else tuple(resize),
        crop=_side(
            crop[0] if len(crop) == 1 else {"height": crop[0], "width": crop[1]},
            "crop_size",
            "torchvision weights",
        ),  # fmt: skip
        interpolation=str(preset.interpolation.value),
        mean=tuple(preset.mean),
        std=tuple(preset.std),
    )


def from_timm_config(cfg: Mapping[str, Any], where: str = "timm") -> Preprocessing:
    """From timm's data config (``timm.data.resolve_data_config``: input_size, crop_pct,
    crop_mode, interpolation, mean, std), as ``transforms_imagenet_eval`` applies it: shorter
    side to floor(S / crop_pct) ("center"), or a square of that size ("squash"), centre crop S."""
    _, h, w = cfg["input_size"]
    if h != w:
        raise PreprocessingError(
            f"{where}: input size {h}x{w} is not square; only square supported"
        )
    crop_pct = cfg.get("crop_pct") or 0.875
    scale = math.floor(h / crop_pct)
    mode = cfg.get("crop_mode") or "center"
    if mode not in ("center", "squash"):
        raise PreprocessingError(
            f"{where}: crop_mode {mode!r} is not supported; 'center' or 'squash'"
        )
    interpolation = cfg.get("interpolation") or "bilinear"
    if interpolation not in INTERPOLATIONS:
        interpolation = "bilinear"  # timm's "random" (training only) and unknown names
    return Preprocessing(
        resize=scale if mode == "center" else (scale, scale),
        crop=h,
        interpolation=interpolation,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
    )
