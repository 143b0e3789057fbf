"""Rotary position embeddings in the variants the GLM family uses.

- ChatGLM-6B: 2D RoPE. The head dim is split in two; the first `rotary_dim` dims rotate with the
  position ids, the next `rotary_dim` with the block position ids; halves are rotated
  (non-interleaved), base 10000 (angles in fp16 with rotary_fp16_frequencies, as its code).
- GLM-130B: 1D RoPE over the whole head (rotary_percent 1), rotate-half, base 10000; no block
  positions (Part B tokens take their mask's position).
- ChatGLM2/3, GLM-4: RoPE on the first `rotary_dim` = head_dim * rotary_percent dims, pairs
  (2i, 2i+1) rotated (interleaved), base 10000 * rope_ratio. With `block_position_encoding`
  (blank infilling on this architecture) the block ids feed the next slice, as ChatGLM-6B does.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ..config import GLMConfig


class RotaryTables(NamedTuple):
    """cos and sin of every rotary dim (all slices side by side) [s, b, 1, slices * dim], the
    sin carrying the rotation's sign, so rotating is x * cos + partner(x) * sin."""
    cos: torch.Tensor
    sin: torch.Tensor


class RotaryEmbedding(torch.nn.Module):
    def __init__(self, config: GLMConfig):
        super().__init__()
        self.dim = config.rotary_dim
        self.interleaved = config.rotary_interleaved
        self.two_dimensional = config.block_position_encoding
        self.slices = 2 if self.two_dimensional else 1
        # ChatGLM-6B's published code: inv_freq, positions and angles in fp16.
        self.frequency_dtype = torch.float16 if config.rotary_fp16_frequencies else torch.float32
        exponent = torch.arange(0, self.dim, 2, dtype=torch.float32) / self.dim
        self.register_buffer("inv_freq", 1.0 / (config.rotary_base ** exponent), persistent=False)
        # Rotation: out[j] = x[j] cos + sign[j] x[partner(j)] sin, the partner of a dim being
        # the other one of its pair: (2i, 2i + 1) interleaved, (i, i + dim/2) in rotate-half.
        pair = torch.tensor([-1.0, 1.0])
        signs = pair.repeat(self.dim // 2) if self.interleaved else \
            pair.repeat_interleave(self.dim // 2)
        self.register_buffer("signs", signs.repeat(self.slices), persistent=False)

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype):
        """The angles' cos and sin of one slice: positions [b, s] -> [s, b, 1, dim] each,
        broadcasting over heads."""
        inv_freq = self.inv_freq.to(positions.device, self.frequency_dtype)
        freqs = positions.transpose(0, 1).to(self.frequency_dtype)[..., None] * inv_freq
        if self.interleaved:
            freqs = freqs.repeat_interleave(2, dim=-1)
        else:
            freqs = torch.cat((freqs, freqs), dim=-1)
        return freqs.cos()[:, :, None].to(dtype), freqs.sin()[:, :, None].to(dtype)

    def forward(self, position_ids: torch.Tensor, block_position_ids: Optional[torch.Tensor],
                dtype: torch.dtype) -> RotaryTables:
        """Per-forward tables, computed once and shared by every layer: positions rotate the
        first slice, block positions (2D) the second."""
        slices = [self.cos_sin(position_ids, dtype)]
        if self.two_dimensional:
            slices.append(self.cos_sin(block_position_ids, dtype))
        cos = torch.cat([c for c, _ in slices], dim=-1)
        sin = torch.cat([s for _, s in slices], dim=-1)
        return RotaryTables(cos, sin * self.signs.to(sin.device, dtype))

    def _partners(self, x: torch.Tensor) -> torch.Tensor:
        if self.interleaved:
            return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
        return x.unflatten(-1, (self.slices, 2, self.dim // 2)).flip(-2).flatten(-3)

    def apply(self, x: torch.Tensor, tables: RotaryTables) -> torch.Tensor:
        """Rotate x [s, b, ..., head_dim] (any head dims between b and head_dim); dims past the
        rotary slices pass through. One split and one concatenation at most: slicing the head
        in pieces would cost a zero-filled copy of x per piece in the backward pass."""
        width = tables.cos.shape[-1]
        shape = (*tables.cos.shape[:2], *[1] * (x.dim() - 3), width)
        cos, sin = tables.cos.view(shape), tables.sin.view(shape)
        if width == x.shape[-1]:
            return x * cos + self._partners(x) * sin
        rotated, passed = x.split([width, x.shape[-1] - width], dim=-1)
        return torch.cat((rotated * cos + self._partners(rotated) * sin, passed), dim=-1)
