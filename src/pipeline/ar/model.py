"""The autoregressive prior: a decoder-only transformer over a tokenizer's code indices (nanoGPT-style).

A sequence is the codes of one example in raster order (images: row by row; audio and text: in
time order), preceded by a start token that names its class (one start token per class; a single
one when unconditional). Training is next-code cross-entropy; sampling draws one code at a time
with temperature and top-k, reusing each layer's keys and values (a KV cache).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.diffusion.positions import position_embedding

KVCache = list[tuple[torch.Tensor, torch.Tensor] | None]


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """Causal attention over ``x``; with ``cache``, ``x`` continues the cached positions (which it extends)."""
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if cache[layer] is not None:
                assert tokens == 1, "the cache is extended one token at a time"
                past_k, past_v = cache[layer]
                k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
            cache[layer] = (k, v)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=tokens > 1)  # one new token attends to all before it
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class Block(nn.Module):
    def __init__(self, width: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, num_heads)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cache, layer)
        return x + self.mlp(self.norm2(x))


class ARPrior(nn.Module):
    """Next-code prediction over ``length`` codes of a ``vocab_size``-code book.

    Args:
        vocab_size: codes in the tokenizer's codebook.
        length: codes per example (the latent grid flattened).
        num_classes: one start token per class; 0: a single start token (unconditional).
        depth, width, num_heads, mlp_ratio: transformer size.
    """

    def __init__(self, vocab_size: int, length: int, num_classes: int = 10, depth: int = 6, width: int = 256, num_heads: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width={width} must be divisible by num_heads={num_heads}")
        self.config: dict[str, Any] = dict(vocab_size=vocab_size, length=length, num_classes=num_classes, depth=depth, width=width, num_heads=num_heads, mlp_ratio=mlp_ratio)
        self.vocab_size, self.length, self.num_classes = vocab_size, length, num_classes
        self.start = nn.Embedding(max(num_classes, 1), width)
        self.embed = nn.Embedding(vocab_size, width)
        self.register_buffer("pos_embed", position_embedding([length], width)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _starts(self, y: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        index = y if y is not None and self.num_classes else torch.zeros(batch, dtype=torch.long, device=device)
        return self.start(index)[:, None]

    def _run(self, h: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        for layer, block in enumerate(self.blocks):
            h = block(h, cache, layer)
        return self.head(self.norm(h))

    def forward(self, codes: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Codes ``(B, length)`` -> logits ``(B, length, vocab)``: position i predicts code i from the start token and codes before i."""
        inputs = torch.cat([self._starts(y, codes.shape[0], codes.device), self.embed(codes[:, :-1])], dim=1)
        return self._run(inputs + self.pos_embed)

    def loss(self, codes: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return F.cross_entropy(self(codes, y).flatten(0, 1).float(), codes.flatten())

    @torch.no_grad()
    def sample(self, y: torch.Tensor | None, num: int, temperature: float = 1.0, top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` code sequences ``(num, length)``; ``y`` their classes (ignored when unconditional). Same generator, same codes."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        device = self.pos_embed.device
        cache: KVCache = [None] * len(self.blocks)
        h = self._starts(y.to(device) if y is not None else None, num, device) + self.pos_embed[:, :1]
        codes = torch.empty(num, self.length, dtype=torch.long, device=device)
        for position in range(self.length):
            logits = self._run(h, cache)[:, -1].float() / temperature
            if top_k is not None and top_k < self.vocab_size:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            codes[:, position] = torch.multinomial(probs.cpu(), 1, generator=generator).flatten().to(device)
            if position + 1 < self.length:
                h = self.embed(codes[:, position : position + 1]) + self.pos_embed[:, position + 1 : position + 2]
        return codes
