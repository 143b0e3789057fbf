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

from typing import Optional

import torch

from ..config import GLMConfig


def _rotate(x: torch.Tensor, interleaved: bool) -> torch.Tensor:
    if interleaved:
        return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryEmbedding(torch.nn.Module):
    def __init__(self, config: GLMConfig):
        super().__init__()
        self.dim = config.rotary_dim
        self.interleaved = config.rotary_interleaved
        self.two_dimensional = config.block_position_encoding
        # ChatGLM-6B's published code: inv_freq, positions and angles in fp16.
        self.frequency_dtype = torch.float16 if config.rotary_fp16_frequencies else torch.float32
        exponent = torch.arange(0, self.dim, 2, dtype=torch.float32) / self.dim
        self.register_buffer("inv_freq", 1.0 / (config.rotary_base ** exponent), persistent=False)

    def _cos_sin(self, positions: torch.Tensor, dtype: torch.dtype):
        # positions [b, s] -> cos/sin [s, b, 1, dim] broadcasting over heads.
        inv_freq = self.inv_freq.to(positions.device, self.frequency_dtype)
        freqs = positions.transpose(0, 1).to(self.frequency_dtype)[..., None] * inv_freq
        if self.interleaved:
            freqs = freqs.repeat_interleave(2, dim=-1)
        else:
            freqs = torch.cat((freqs, freqs), dim=-1)
        return freqs.cos()[:, :, None].to(dtype), freqs.sin()[:, :, None].to(dtype)

    def forward(self, position_ids: torch.Tensor, block_position_ids: Optional[torch.Tensor],
                dtype: torch.dtype):
        """Per-forward tables, computed once and shared by every layer."""
        tables = [self._cos_sin(position_ids, dtype)]
        if self.two_dimensional:
            tables.append(self._cos_sin(block_position_ids, dtype))
        return tables

    def apply(self, x: torch.Tensor, tables) -> torch.Tensor:
        """Rotate x [s, b, heads, head_dim] slice by slice; dims past the tables pass through."""
        pieces, start = [], 0
        for cos, sin in tables:
            part = x[..., start:start + self.dim]
            pieces.append(part * cos + _rotate(part, self.interleaved) * sin)
            start += self.dim
        pieces.append(x[..., start:])
        return torch.cat(pieces, dim=-1)
