"""Which pipeline stages a rank holds, and which transformer layers each stage holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import ConfigError


@dataclass(frozen=True)
class PlacementFlags:
    """The flags that place layers on stages, as the tool at hand names them in errors."""
    pipeline: str = "--pipeline-model-parallel-size"
    per_virtual_stage: str = "--num-layers-per-virtual-pipeline-stage"
    ends: str = "--decoder-first/last-pipeline-num-layers"


def virtual_stage_count(num_layers: int, pp_size: int, layers_per_virtual_stage: Optional[int],
                        uneven_ends: bool, flags: PlacementFlags = PlacementFlags()) -> int:
    """Model chunks per pipeline rank (1 unless interleaved), checked: interleaving needs a
    pipeline, even stages, and a layer count that pp x layers-per-virtual-stage divides."""
    if layers_per_virtual_stage is None:
        return 1
    if pp_size == 1:
        raise ConfigError(f"{flags.per_virtual_stage} needs {flags.pipeline} > 1")
    if uneven_ends:
        raise ConfigError(f"{flags.ends} cannot be combined with {flags.per_virtual_stage}")
    if layers_per_virtual_stage < 1 or num_layers % (pp_size * layers_per_virtual_stage):
        raise ConfigError(f"the model's {num_layers} layers are not divisible by {flags.pipeline} "
                          f"{pp_size} x {flags.per_virtual_stage} {layers_per_virtual_stage}")
    return num_layers // (pp_size * layers_per_virtual_stage)


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
