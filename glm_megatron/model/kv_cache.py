"""Keys and values of the tokens already processed, kept per layer for incremental decoding.

Blank filling encodes Part A once and then runs one new token at a time: each layer appends the
new token's (rotated) key and value here and attends over everything stored.
"""

from __future__ import annotations

import torch


class LayerKVCache:
    """One layer's keys and values, [s, b, query groups, head dim] as the attention makes them."""

    def __init__(self):
        self.key = self.value = None

    def append(self, key: torch.Tensor, value: torch.Tensor):
        """Store the new tokens' key and value; returns those of every token so far."""
        if self.key is not None:
            key, value = torch.cat((self.key, key)), torch.cat((self.value, value))
        self.key, self.value = key, value
        return key, value


class KVCache:
    """Per-layer caches of one decoding sequence (batch), keyed by global layer number."""

    def __init__(self):
        self._layers: dict[int, LayerKVCache] = {}

    def layer(self, number: int) -> LayerKVCache:
        return self._layers.setdefault(number, LayerKVCache())

    @property
    def length(self) -> int:
        """Tokens stored (the same in every layer between forwards)."""
        for cache in self._layers.values():
            return 0 if cache.key is None else cache.key.shape[0]
        return 0
