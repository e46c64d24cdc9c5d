"""The diffusion transformer: adaLN-Zero blocks over patches of a 2-D latent grid or a 1-D latent sequence.

``model(x, t, y)``: ``x`` latents ``(B, C, *spatial)``, ``t`` float times in [0, 1], ``y`` the
condition: class indices where ``num_classes`` (the last embedding row) is the learned null class,
or prompts from another modality (:mod:`pipeline.diffusion.prompt`: the DiT reads their tokens by
cross-attention and adds their pooled vector to the adaLN conditioning), or None. Either kind has a
learned null condition for classifier-free guidance (:meth:`DiT.null_condition`). At
initialisation every block is the identity and the output is zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.diffusion.code_head import CodeHead
from pipeline.diffusion.positions import position_embedding
from pipeline.diffusion.prompt import PromptEncoder

# (depth, hidden_size, num_heads): XS for CPU, the rest as in the DiT paper.
PRESETS: dict[str, tuple[int, int, int]] = {
    "XS": (6, 256, 4),
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}


def make_norm(kind: str, dim: int, affine: bool = False) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, elementwise_affine=affine, eps=1e-6)
    raise ValueError(f"norm must be layernorm or rmsnorm, got {kind!r}")


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool, norm: str) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = make_norm(norm, dim // num_heads, affine=True) if qk_norm else nn.Identity()
        self.k_norm = make_norm(norm, dim // num_heads, affine=True) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class CrossAttention(nn.Module):
    """The latent tokens attend to conditioning tokens (a prompt's), as in PixArt-alpha's blocks."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, norm: str) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.q_norm = make_norm(norm, dim // num_heads, affine=True) if qk_norm else nn.Identity()
        self.k_norm = make_norm(norm, dim // num_heads, affine=True) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        q = self.q(x).view(batch, tokens, heads, head_dim).transpose(1, 2)
        k, v = self.kv(context).view(batch, context.shape[1], 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    """GELU (tanh) MLP as in DiT, or SwiGLU at about the same parameter count as in LightningDiT."""

    def __init__(self, dim: int, ratio: float, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "gelu":
            hidden = int(dim * ratio)
            self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        elif kind == "swiglu":
            hidden = 64 * math.ceil(int(2 * dim * ratio / 3) / 64)
            self.fc1, self.fc2 = nn.Linear(dim, 2 * hidden), nn.Linear(hidden, dim)
        else:
            raise ValueError(f"mlp must be gelu or swiglu, got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "gelu":
            return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * value)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms are shifted, scaled and gated by the conditioning (adaLN-Zero).

    With ``cross_attention`` it also reads conditioning tokens between self-attention and the MLP
    (a plain pre-norm residual branch whose output projection starts at zero).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, norm: str, mlp: str, qk_norm: bool, cross_attention: bool = False) -> None:
        super().__init__()
        self.norm1, self.norm2 = make_norm(norm, dim), make_norm(norm, dim)
        self.attn = Attention(dim, num_heads, qk_norm, norm)
        self.cross_norm = make_norm(norm, dim, affine=True) if cross_attention else None
        self.cross_attn = CrossAttention(dim, num_heads, qk_norm, norm) if cross_attention else None
        self.mlp = Mlp(dim, mlp_ratio, mlp)
        self.modulation = nn.Linear(dim, 6 * dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=-1)
        x = torch.addcmul(x, gate1.unsqueeze(1), self.attn(modulate(self.norm1(x), shift1, scale1)))
        if self.cross_attn is not None:
            assert context is not None, "a cross-attention block needs conditioning tokens"
            x = x + self.cross_attn(self.cross_norm(x), context)
        return torch.addcmul(x, gate2.unsqueeze(1), self.mlp(modulate(self.norm2(x), shift2, scale2)))


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sin-cos features of 1000 t (the DDPM step scale) -> MLP."""

    def __init__(self, dim: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        angles = 1000.0 * t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1).to(self.mlp[0].weight.dtype))


class DiT(nn.Module):
    """Diffusion transformer.

    Args:
        input_size: latent grid ``H`` (square), ``[H, W]`` or ``[L]`` for a 1-D sequence. Sizes that
            ``patch_size`` does not divide are zero-padded at the end and cropped from the output
            (a 7 x 7 grid becomes 4 x 4 patches of 2 x 2).
        in_channels: latent channels; the output has the same shape as the input (the clean estimate of a code-predicting DiT).
        codebook_size: > 0 for a DiT that predicts codes (:class:`~pipeline.diffusion.code_head.CodeHead`):
            it ends in logits over the tokenizer's ``codebook_size`` codes per latent and returns the
            expected code vector, its clean estimate (``logits=True`` returns the logits); 0 (default)
            for one that returns ``in_channels`` per latent. ``cosine_codes``: the codebook is cosine.
        patch_size: side of a square patch (or length of a 1-D patch).
        depth, hidden_size, num_heads: transformer size (see :data:`PRESETS`).
        num_classes: classes for conditioning; 0 makes the model unconditional.
        norm: ``layernorm`` (DiT) or ``rmsnorm``; mlp: ``gelu`` (DiT) or ``swiglu``; qk_norm: normalise queries and keys.
        self_condition: also read the previous estimate of the clean latents (``x_self``; zeros when
            absent), as in Analog Bits and self-conditioned embedding diffusion: the samplers feed
            each step's estimate to the next, which matters most for near-discrete latents (text).
        prompt: condition on prompts instead of classes: ``{"channels": D, "length": L}`` of the source
            tokenizer's latents, plus :class:`~pipeline.diffusion.prompt.PromptEncoder` options
            (``patch_size``, ``depth``, ``num_heads``); every block then gets cross-attention.
        preset: the preset name it was built from, recorded only.
    """

    def __init__(
        self,
        input_size: int | Sequence[int],
        in_channels: int,
        patch_size: int = 2,
        depth: int = 6,
        hidden_size: int = 256,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        num_classes: int = 10,
        norm: str = "layernorm",
        mlp: str = "gelu",
        qk_norm: bool = False,
        self_condition: bool = False,
        prompt: dict[str, int] | None = None,
        codebook_size: int = 0,
        cosine_codes: bool = False,
        preset: str | None = None,
    ) -> None:
        super().__init__()
        spatial = [int(input_size)] * 2 if isinstance(input_size, int) else [int(s) for s in input_size]
        if len(spatial) not in (1, 2):
            raise ValueError(f"input_size {spatial} must be 1-D or 2-D")
        if hidden_size % num_heads or hidden_size % 4:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads} and by 4")
        self.config: dict[str, Any] = dict(
            input_size=spatial, in_channels=in_channels, patch_size=patch_size, depth=depth, hidden_size=hidden_size,
            num_heads=num_heads, mlp_ratio=mlp_ratio, num_classes=num_classes, norm=norm, mlp=mlp, qk_norm=qk_norm,
            self_condition=self_condition, prompt=dict(prompt) if prompt else None, codebook_size=codebook_size, cosine_codes=cosine_codes,
            preset=preset,
        )
        if prompt and num_classes:
            raise ValueError("a DiT is conditioned on classes or on prompts, not both: set num_classes=0 with prompt")
        self.spatial, self.in_channels, self.patch_size, self.num_classes = spatial, in_channels, patch_size, num_classes
        self.self_condition = self_condition
        self.grid = [math.ceil(s / patch_size) for s in spatial]  # a partial last patch is zero-padded
        patch_dim = in_channels * patch_size ** len(spatial)
        self.patch_embed = nn.Linear(patch_dim * (2 if self_condition else 1), hidden_size)
        self.register_buffer("pos_embed", position_embedding(self.grid, hidden_size)[None], persistent=False)
        self.t_embed = TimestepEmbedder(hidden_size)
        self.y_embed = nn.Embedding(num_classes + 1, hidden_size) if num_classes > 0 else None
        self.prompt_encoder = None
        if prompt:
            options = {k: v for k, v in prompt.items() if k not in ("channels", "length")}
            self.prompt_encoder = PromptEncoder(prompt["channels"], prompt["length"], hidden_size, **options)
        cross = self.prompt_encoder is not None
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio, norm, mlp, qk_norm, cross) for _ in range(depth))
        self.final_norm = make_norm(norm, hidden_size)
        self.final_modulation = nn.Linear(hidden_size, 2 * hidden_size)
        self.code_head = CodeHead(codebook_size, in_channels, cosine_codes) if codebook_size > 0 else None
        self.out_channels = codebook_size if codebook_size > 0 else in_channels
        self.final_linear = nn.Linear(hidden_size, self.out_channels * patch_size ** len(spatial))
        self._init_weights()

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> DiT:
        """``DiT.from_preset("S", input_size=8, in_channels=4, patch_size=2, num_classes=10)``."""
        if name not in PRESETS:
            raise ValueError(f"unknown DiT preset {name!r}; valid: {', '.join(PRESETS)}")
        depth, hidden_size, num_heads = PRESETS[name]
        return cls(depth=depth, hidden_size=hidden_size, num_heads=num_heads, preset=name, **kwargs)

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def conditional(self) -> bool:
        """Whether the model reads a condition (classes or prompts)."""
        return self.num_classes > 0 or self.prompt_encoder is not None

    def null_condition(self, y: torch.Tensor) -> torch.Tensor:
        """The learned null condition in place of every row of ``y`` (what guidance contrasts with)."""
        if self.prompt_encoder is not None:
            return torch.zeros_like(y)
        return torch.full_like(y, self.null_class)

    def drop_condition(self, y: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """``y`` with the rows where ``drop`` (bool, ``(B,)``) is true replaced by the null condition."""
        return torch.where(drop.view(-1, *[1] * (y.ndim - 1)), self.null_condition(y), y)

    def empty_condition(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """``batch`` null conditions (a trial forward, an unconditional draw); None for an unconditional model."""
        if self.prompt_encoder is not None:
            return torch.zeros(batch, self.prompt_encoder.in_channels + 1, self.prompt_encoder.length, device=device)
        if self.num_classes:
            return torch.full((batch,), self.null_class, dtype=torch.long, device=device)
        return None

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        if self.y_embed is not None:
            nn.init.normal_(self.y_embed.weight, std=0.02)
        cross_outputs = [block.cross_attn.proj for block in self.blocks if block.cross_attn is not None]
        for layer in [*(block.modulation for block in self.blocks), *cross_outputs, self.final_modulation, self.final_linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> ``(B, tokens, C * p^d)``."""
        p, batch = self.patch_size, x.shape[0]
        padding = [pad for size, cells in zip(reversed(self.spatial), reversed(self.grid)) for pad in (0, cells * p - size)]
        if any(padding):
            x = F.pad(x, padding)
        if len(self.spatial) == 1:
            return x.reshape(batch, self.in_channels, self.grid[0], p).permute(0, 2, 1, 3).reshape(batch, self.num_tokens, -1)
        h, w = self.grid
        x = x.reshape(batch, self.in_channels, h, p, w, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(batch, h * w, -1)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, tokens, out_channels * p^d)`` -> ``(B, out_channels, *spatial)``."""
        p, batch, channels = self.patch_size, tokens.shape[0], self.out_channels
        if len(self.spatial) == 1:
            x = tokens.reshape(batch, self.grid[0], channels, p).permute(0, 2, 1, 3)
            return x.reshape(batch, channels, -1)[..., : self.spatial[0]]
        h, w = self.grid
        x = tokens.reshape(batch, h, w, channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(batch, channels, h * p, w * p)[..., : self.spatial[0], : self.spatial[1]]

    def condition(self, t: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The adaLN conditioning vector, and the cross-attention tokens of a prompt model (else None)."""
        c, context = self.t_embed(t), None
        if y is None:
            y = self.empty_condition(t.shape[0], t.device)
        if self.y_embed is not None:
            c = c + self.y_embed(y)
        elif self.prompt_encoder is not None:
            context, pooled = self.prompt_encoder(y.to(c.dtype))
            c = c + pooled
        return F.silu(c), context

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, x_self: torch.Tensor | None = None, logits: bool = False,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """``x_self``: the previous clean-latent estimate, read only by a self-conditioning model.
        ``logits``: a code-predicting DiT's logits ``(B, K, *spatial)`` instead of its clean estimate;
        ``temperature``: the softmax temperature of that estimate (see :meth:`CodeHead.expected`)."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        c, context = self.condition(t, y)
        tokens = self.patchify(x)
        if self.self_condition:
            tokens = torch.cat([tokens, self.patchify(x_self if x_self is not None else torch.zeros_like(x))], dim=-1)
        h = self.patch_embed(tokens) + self.pos_embed
        for block in self.blocks:
            h = block(h, c, context)
        shift, scale = self.final_modulation(c).chunk(2, dim=-1)
        out = self.unpatchify(self.final_linear(modulate(self.final_norm(h), shift, scale)))
        if self.code_head is None:
            if logits or temperature != 1.0:
                raise ValueError("logits and temperature are for a DiT that predicts codes (codebook_size > 0)")
            return out
        return out if logits else self.code_head.expected(out, temperature)

    def flops_per_sample(self) -> int:
        """Forward matmul FLOPs for one sample (2 per multiply-add); training costs about 3x this."""
        cfg, tokens = self.config, self.num_tokens
        dim = cfg["hidden_size"]
        per_token = sum(m.weight.numel() for block in self.blocks for m in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2))
        per_token += self.patch_embed.weight.numel() + self.final_linear.weight.numel()
        attention = cfg["depth"] * 2 * tokens * tokens * dim
        per_sample = sum(block.modulation.weight.numel() for block in self.blocks) + self.final_modulation.weight.numel()
        per_sample += sum(m.weight.numel() for m in self.t_embed.mlp if isinstance(m, nn.Linear))
        flops = 2 * (tokens * per_token + per_sample) + 2 * attention
        if self.prompt_encoder is not None:
            context = self.prompt_encoder.num_tokens
            cross = [block.cross_attn for block in self.blocks if block.cross_attn is not None]
            flops += 2 * sum(tokens * (m.q.weight.numel() + m.proj.weight.numel()) + context * m.kv.weight.numel() for m in cross)
            flops += 2 * len(cross) * 2 * tokens * context * dim + self.prompt_encoder.flops_per_sample()
        return flops
