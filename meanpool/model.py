"""Loading SAM: the three released sizes plus a tiny random-weight model used only by tests.

A checkpoint that does not fit the model type raises ``CheckpointError`` with a one-line message
that names the size the checkpoint looks like.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

MODEL_TYPES = ("vit_h", "vit_l", "vit_b")
# Hidden model type for tests and the CPU benchmark: a 64 px SAM with a 2-block encoder.
TINY_TEST = "tiny_test"
_EMBED_DIM_TO_TYPE = {1280: "vit_h", 1024: "vit_l", 768: "vit_b", 32: TINY_TEST}


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the requested model type."""


def build_tiny_sam(seed: int | None = None, img_size: int = 64) -> torch.nn.Module:
    """A tiny SAM (64 px input, 4x4 embedding, 32 channels) with random weights, for tests only.

    ``img_size`` (a multiple of 16) gives a larger input and embedding (img_size / 16 per side)
    with the same small layers, e.g. for tests of ``benchmarks.speed.standin`` at a finer mask resolution.

    It exercises every code path of the real models in milliseconds; its masks mean nothing.
    With ``seed``, weights are drawn reproducibly and the prompt encoder and mask decoder weights
    are scaled by 4, so that masks depend on the prompt point (at default init nearly every point
    gives the same blob and NMS leaves one mask).
    """
    assert img_size % 16 == 0, f"img_size must be a multiple of 16, got {img_size}"
    if seed is None:
        return _tiny_sam(img_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = _tiny_sam(img_size)
    with torch.no_grad():
        for name, param in sam.named_parameters():
            if name.startswith(("prompt_encoder.", "mask_decoder.")):
                param.mul_(4.0)
    return sam


def _tiny_sam(img_size: int = 64) -> torch.nn.Module:
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    patch, dim = 16, 32
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=img_size,
            patch_size=patch,
            embed_dim=dim,
            depth=2,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=2,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(img_size // patch, img_size // patch),
            input_image_size=(img_size, img_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
    )
    return sam.eval()


def _build(model_type: str) -> torch.nn.Module:
    if model_type == TINY_TEST:
        return _tiny_sam()
    from segment_anything import sam_model_registry

    return sam_model_registry[model_type](checkpoint=None)


def load_sam(
    model_type: str,
    checkpoint: str | Path | None,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """Build SAM of ``model_type`` and load ``checkpoint`` (``None``: random weights, for
    benchmarks only). Returns the model in eval mode on ``device``.

    Raises ``CheckpointError`` (one line) when the file is missing, unreadable or does not fit.
    """
    known = (*MODEL_TYPES, TINY_TEST)
    if model_type not in known:
        raise CheckpointError(
            f"unknown model type {model_type!r}; use one of {', '.join(MODEL_TYPES)}"
        )
    # Check the checkpoint before building: a random-init vit_h alone takes seconds on a CPU.
    state = _read_state_dict(checkpoint, model_type) if checkpoint is not None else None
    sam = _build(model_type)
    if state is not None:
        sam.load_state_dict(state)
    return sam.to(device).eval()


def _read_state_dict(checkpoint: str | Path, model_type: str) -> dict[str, torch.Tensor]:
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(
            f"SAM checkpoint {str(path)!r} does not exist; download it or fix the path"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exn:  # pickle, zip and torch errors all mean "not a checkpoint"
        raise CheckpointError(
            f"cannot read SAM checkpoint {str(path)!r}: not a PyTorch state dict "
            f"({type(exn).__name__}); pass the sam_vit_*.pth file released with segment-anything"
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(path)!r} holds a {type(state).__name__}, not a SAM state dict")
    expected = _build_shapes(model_type)
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if got != expected:
        guess = _guess_type(state)
        hint = f"; it looks like a {guess} checkpoint (--model-type {guess})" if guess else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit --model-type {model_type}{hint}"
        )
    return state


def _build_shapes(model_type: str) -> dict[str, tuple[int, ...]]:
    # Building on the meta device costs no memory, even for vit_h.
    with torch.device("meta"):
        model = _build(model_type)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _guess_type(state: dict) -> str | None:
    pos = state.get("image_encoder.pos_embed")
    if isinstance(pos, torch.Tensor) and pos.ndim == 4:
        return _EMBED_DIM_TO_TYPE.get(int(pos.shape[-1]))
    return None
