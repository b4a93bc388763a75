"""A GPT-2 decoder with exactly the parameter names, shapes and initialisation of transformers'
``GPT2LMHeadModel`` (so its state dicts load both ways), written natively so the arithmetic
experiments need no transformers install and run fast on a CPU.

Layout: transformer.{wte, wpe, h.{i}.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj},
ln_f} and lm_head tied to wte. Linear layers are ``Conv1D`` as in GPT-2: weight shape [in, out].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 1001
    n_positions: int = 8
    n_embd: int = 128
    n_layer: int = 2
    n_head: int = 4
    n_inner: int = 512
    dropout: float = 0.1  # transformers' default for resid, embd and attn dropout
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02


class Conv1D(nn.Module):
    """y = x @ W + b with W of shape [nx, nf] (GPT-2's transposed linear)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight  # read once: under a mask (parametrization) every read costs a call
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.shape[1])


class _Attention(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "expected n_embd divisible by n_head"
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.c_attn = Conv1D(3 * cfg.n_embd, cfg.n_embd)
        self.c_proj = Conv1D(cfg.n_embd, cfg.n_embd)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C), or (B, 1, C) for the last position only."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if last_only:  # the last query sees every key: causal without a mask
            q = q[:, :, -1:]
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=not last_only)
        y = y.transpose(1, 2).reshape(B, q.shape[2], C)  # (B, T or 1, C)
        return self.resid_dropout(self.c_proj(y))


class _MLP(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.c_fc = Conv1D(cfg.n_inner, cfg.n_embd)
        self.c_proj = Conv1D(cfg.n_embd, cfg.n_inner)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class _Block(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = _Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = _MLP(cfg)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        a = self.attn(self.ln_1(x), last_only)
        x = (x[:, -1:] if last_only else x) + a
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """GPT-2 language model. forward(idx: (B, T) int64) -> logits (B, T, vocab_size)."""

    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(cfg.vocab_size, cfg.n_embd),
                "wpe": nn.Embedding(cfg.n_positions, cfg.n_embd),
                "drop": nn.Dropout(cfg.dropout),
                "h": nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layer)),
                "ln_f": nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon),
            }
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT2LMHeadModel
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections: std / sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, std=cfg.initializer_range / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, Conv1D)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """idx: (B, T) token ids -> logits (B, T, vocab), or (B, vocab) for the last position
        only when ``last_only`` (saves the head's matmul on the other positions and the last
        block's work after its attention)."""
        B, T = idx.shape
        assert self.config.n_positions >= T, f"expected at most {self.config.n_positions} tokens"
        tr = self.transformer
        pos = torch.arange(T, device=idx.device)
        x = tr.drop(tr.wte(idx) + tr.wpe(pos))  # (B, T, C)
        for i, block in enumerate(tr.h):
            # With last_only the last block computes the last position only after its
            # attention: the others feed nothing the logits need (a quarter of a 2-layer
            # model's work).
            x = block(x, last_only and i == len(tr.h) - 1)
        if last_only:
            x = x[:, -1]  # (B, C)
        return self.lm_head(tr.ln_f(x))
