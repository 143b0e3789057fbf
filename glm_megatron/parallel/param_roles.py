"""What the rest of the code must know about a parameter, recorded once where it is created.

Initialisation, gradient reductions, the gradient norm, checkpoints and converters all read a
parameter's `ParamRole` (through `role_of`) instead of ad-hoc attributes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Union

import torch

_ATTRIBUTE = "glm_role"


@dataclass(frozen=True)
class ParamRole:
    # (dim, stride) of the split over tensor-parallel ranks; None = replicated. A stride of s
    # means the full dimension is s equal blocks (SwiGLU's [gate; up]), each split separately.
    partition: Optional[tuple[int, int]] = None
    # N(0, init_std), one std or one per row of the full tensor; None: config.init_method_std
    init_std: Optional[Union[float, torch.Tensor]] = None
    init_constant: Optional[float] = None  # a constant instead (norm weights 1, biases 0)
    # The last pipeline stage's copy of tied word embeddings: drawn as `init_name`, its
    # gradient summed with the original's, counted once in norms and written once in exports.
    tied_copy_of: Optional[str] = None
    # Under sequence parallelism a parameter applied to sequence shards (norms) gets a partial
    # gradient on each TP rank, summed over TP after the backward pass.
    sequence_parallel: bool = False

    @property
    def tensor_parallel(self) -> bool:
        return self.partition is not None


def role_of(param: torch.Tensor) -> ParamRole:
    return getattr(param, _ATTRIBUTE, ParamRole())


def set_role(param: torch.Tensor, **changes) -> torch.Tensor:
    """Record (or update) fields of `param`'s role; returns `param`."""
    setattr(param, _ATTRIBUTE, dataclasses.replace(role_of(param), **changes))
    return param
