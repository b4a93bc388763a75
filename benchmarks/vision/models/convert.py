"""transformers checkpoints read and converted to torchvision's module names: a
``ResNetForImageClassification`` to ``ResNet``, a ``ViTForImageClassification`` to
``VisionTransformer`` (same logits), so that the masking presets, transfer and saving work as
with torchvision weights."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.vision.models.weights import WeightsError, read_weights


def read_checkpoint(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json as a dict, the state dict with transformers' names) of a transformers
    checkpoint folder: ``model.safetensors`` or ``pytorch_model.bin``, or their sharded
    ``*.index.json`` form. Raises WeightsError."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return config, read_weights(folder / name)
        index = folder / f"{name}.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for f in files:
                state.update(read_weights(folder / f))
            return config, state
    raise WeightsError(
        f"{folder} holds no model.safetensors or pytorch_model.bin; save the checkpoint with "
        f"model.save_pretrained(folder)"
    )


def _rename(
    state: Mapping[str, torch.Tensor],
    rules: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str | None]]],
    where: str,
    what: str,
) -> dict[str, torch.Tensor]:
    """Every key through the first rule whose pattern matches it in full (None: drop the key)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        for pattern, target in rules:
            m = pattern.fullmatch(key)
            if m:
                new = target(m)
                if new is not None:
                    out[new] = tensor
                break
        else:
            raise WeightsError(
                f"{where}: unexpected key {key!r} for {what}; only "
                f"{what}ForImageClassification checkpoints convert"
            )
    return out


_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_STAGE = r"resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\."


def _block(m: re.Match[str]) -> str:
    return f"layer{int(m[1]) + 1}.{m[2]}"


_RESNET_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str | None]]] = [
    (re.compile(r"resnet\.embedder\.embedder\.convolution\.weight"), lambda m: "conv1.weight"),
    (re.compile(rf"resnet\.embedder\.embedder\.normalization\.{_BN}"), lambda m: f"bn1.{m[1]}"),
    (re.compile(rf"{_STAGE}shortcut\.convolution\.weight"),
     lambda m: f"{_block(m)}.downsample.0.weight"),
    (re.compile(rf"{_STAGE}shortcut\.normalization\.{_BN}"),
     lambda m: f"{_block(m)}.downsample.1.{m[3]}"),
    (re.compile(rf"{_STAGE}layer\.(\d+)\.convolution\.weight"),
     lambda m: f"{_block(m)}.conv{int(m[3]) + 1}.weight"),
    (re.compile(rf"{_STAGE}layer\.(\d+)\.normalization\.{_BN}"),
     lambda m: f"{_block(m)}.bn{int(m[3]) + 1}.{m[4]}"),
    (re.compile(r"classifier\.1\.(weight|bias)"), lambda m: f"fc.{m[1]}"),
]  # fmt: skip


def resnet_to_torchvision(
    config: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str
) -> dict[str, torch.Tensor]:
    """A transformers ``ResNetForImageClassification`` state dict -> torchvision ``ResNet``
    names (``conv1``, ``bn1``, ``layer{1-4}.{b}.conv{k}/bn{k}/downsample.{0,1}``, ``fc``), for
    BasicBlock ("basic") and Bottleneck ("bottleneck", stride in the 3x3 as torchvision's).
    Raises WeightsError for a checkpoint torchvision's ResNet cannot run the same way."""
    layer_type = config.get("layer_type", "bottleneck")
    if layer_type not in ("basic", "bottleneck"):
        raise WeightsError(f"{where}: unknown ResNet layer_type {layer_type!r}")
    odd = [
        f"{k}={config.get(k)!r}"
        for k, ok in [
            ("hidden_act", config.get("hidden_act", "relu") == "relu"),
            ("downsample_in_first_stage", not config.get("downsample_in_first_stage", False)),
            ("downsample_in_bottleneck", not config.get("downsample_in_bottleneck", False)),
        ]
        if not ok
    ]
    if odd:
        raise WeightsError(
            f"{where}: {', '.join(odd)} differs from torchvision's ResNet; run it with "
            f"--arch hf:ORG/NAME instead"
        )
    out = _rename(state, _RESNET_RULES, where, "ResNet")
    if "fc.weight" not in out:
        raise WeightsError(
            f"{where} holds no classifier (classifier.1.weight); convert a "
            f"ResNetForImageClassification checkpoint, not a ResNetModel"
        )
    return out


_VIT_LAYER = r"vit\.(?:encoder\.layer|layers)\.(\d+)\."
# transformers 4 names (what save_pretrained writes, and the Hub's files) | transformers 5 names.
_VIT_PARTS = {
    r"layernorm_before": "ln_1",
    r"layernorm_after": "ln_2",
    r"attention\.attention\.query|attention\.q_proj": "q",
    r"attention\.attention\.key|attention\.k_proj": "k",
    r"attention\.attention\.value|attention\.v_proj": "v",
    r"attention\.output\.dense|attention\.o_proj": "self_attention.out_proj",
    r"intermediate\.dense|mlp\.fc1": "mlp.0",
    r"output\.dense|mlp\.fc2": "mlp.3",
}
_VIT_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str | None]]] = [
    (re.compile(r"vit\.embeddings\.cls_token"), lambda m: "class_token"),
    (re.compile(r"vit\.embeddings\.position_embeddings"), lambda m: "encoder.pos_embedding"),
    (re.compile(r"vit\.embeddings\.patch_embeddings\.projection\.(weight|bias)"),
     lambda m: f"conv_proj.{m[1]}"),
    (re.compile(r"vit\.layernorm\.(weight|bias)"), lambda m: f"encoder.ln.{m[1]}"),
    (re.compile(r"classifier\.(weight|bias)"), lambda m: f"heads.head.{m[1]}"),
    # Not used by the classifier, which reads the class token after the final LayerNorm.
    (re.compile(r"vit\.pooler\.dense\.(weight|bias)|vit\.embeddings\.mask_token"), lambda m: None),
] + [
    (re.compile(rf"{_VIT_LAYER}(?:{hf})\.(weight|bias)"),
     lambda m, tv=tv: f"encoder.layers.encoder_layer_{m[1]}.{tv}.{m[2]}")
    for hf, tv in _VIT_PARTS.items()
]  # fmt: skip


def vit_to_torchvision(
    config: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str
) -> dict[str, torch.Tensor]:
    """A transformers ``ViTForImageClassification`` state dict (transformers 4 or 5 names) ->
    torchvision ``VisionTransformer`` names: the class token, position embeddings, patch
    projection, q/k/v stacked into ``self_attention.in_proj_weight``/``in_proj_bias`` (zeros
    without qkv_bias), ``mlp.0``/``mlp.3``, ``encoder.ln`` and ``heads.head``; the pooler is
    dropped. The LayerNorm eps (transformers: 1e-12) is the architecture's to set."""
    if config.get("hidden_act", "gelu") != "gelu":
        raise WeightsError(
            f"{where}: hidden_act={config.get('hidden_act')!r}, torchvision's ViT uses exact "
            f"gelu; run it with --arch hf:ORG/NAME instead"
        )
    out = _rename(state, _VIT_RULES, where, "ViT")
    layers = sorted({int(k.split(".")[2].rsplit("_", 1)[1]) for k in out if ".encoder_layer_" in k})
    for i in layers:
        p = f"encoder.layers.encoder_layer_{i}."
        try:
            qkv = [out.pop(f"{p}{x}.weight") for x in "qkv"]
        except KeyError:
            raise WeightsError(f"{where}: layer {i} lacks its query, key or value weight") from None
        out[f"{p}self_attention.in_proj_weight"] = torch.cat(qkv)
        biases = [out.pop(f"{p}{x}.bias", None) for x in "qkv"]
        out[f"{p}self_attention.in_proj_bias"] = (
            torch.cat(biases)  # type: ignore[arg-type]
            if all(b is not None for b in biases)
            else torch.zeros(qkv[0].shape[0] * 3, dtype=qkv[0].dtype)
        )
    if "heads.head.weight" not in out:
        raise WeightsError(
            f"{where} holds no classifier (classifier.weight); convert a "
            f"ViTForImageClassification checkpoint, not a ViTModel"
        )
    return out


def convert_checkpoint(
    config: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str
) -> tuple[dict[str, torch.Tensor], float | None]:
    """(torchvision state dict, LayerNorm eps or None) of a transformers ResNet or ViT
    classification checkpoint (by ``config["model_type"]``)."""
    model_type = config.get("model_type")
    if model_type == "resnet":
        return resnet_to_torchvision(config, state, where), None
    if model_type == "vit":
        return vit_to_torchvision(config, state, where), float(config.get("layer_norm_eps", 1e-12))
    raise WeightsError(
        f"{where} is a transformers {model_type!r} checkpoint; only 'resnet' and 'vit' convert "
        f"to torchvision's modules; run it as it is with --arch hf:ORG/NAME"
    )


def check_heads(model: nn.Module, config: Mapping[str, Any], where: str) -> None:
    # Attention heads leave no trace in the weight shapes, so a mismatch would load silently.
    heads = config.get("num_attention_heads")
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention) and heads is not None and m.num_heads != heads:
            raise WeightsError(
                f"{where} has {heads} attention heads but the model's {name} has {m.num_heads}; "
                f"check --arch"
            )
