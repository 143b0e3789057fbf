"""Which pipeline stages a rank holds, and which transformer layers each stage holds."""

from __future__ import annotations

from typing import Optional

from ..config import ConfigError


def stage_layer_ranges(num_layers: int, pp_size: int, first: Optional[int] = None,
                       last: Optional[int] = None) -> list[range]:
    """Global layer numbers per stage: `first`/`last` layers on the end stages (to balance the
    embedding and the head), the rest split evenly over the middle stages."""
    if pp_size == 1:
        return [range(num_layers)]
    counts = [None] * pp_size
    if first is not None:
        counts[0] = first
    if last is not None:
        counts[-1] = last
    fixed = sum(c for c in counts if c is not None)
    free = [i for i, c in enumerate(counts) if c is None]
    remaining = num_layers - fixed
    if remaining < 0 or (free and remaining % len(free)) or (not free and remaining):
        raise ConfigError(
            f"--num-layers {num_layers} cannot be split over --pipeline-model-parallel-size "
            f"{pp_size} (first stage {first}, last stage {last}); choose sizes that divide")
    for i in free:
        counts[i] = remaining // len(free)
    ranges, start = [], 0
    for count in counts:
        ranges.append(range(start, start + count))
        start += count
    return ranges


def stage_indices(pp_rank: int, pp_size: int, virtual: int) -> list[int]:
    """Model chunks of this rank: stages rank, rank + pp, ... (Megatron's interleaving)."""
    return [pp_rank + v * pp_size for v in range(virtual)]
