"""How a model executes, as opposed to what it computes (GLMConfig): parallel and memory
choices that can change between runs of the same checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import ConfigError


@dataclass(frozen=True)
class ExecutionOptions:
    sequence_parallel: bool = False
    recompute_granularity: Optional[str] = None  # None | "full" | "selective"
    recompute_method: Optional[str] = None  # "uniform" | "block" (full granularity)
    recompute_num_layers: Optional[int] = None
    # torch.compile backend applied to each transformer layer (--compile: "inductor"); None
    # runs eagerly.
    compile_backend: Optional[str] = None

    def __post_init__(self):
        if self.recompute_granularity not in (None, "full", "selective"):
            raise ConfigError("--recompute-granularity must be full or selective")
        if self.recompute_granularity == "full":
            if self.recompute_method not in ("uniform", "block"):
                raise ConfigError("--recompute-granularity full needs --recompute-method "
                                  "uniform or block")
            if not self.recompute_num_layers or self.recompute_num_layers < 1:
                raise ConfigError("--recompute-granularity full needs --recompute-num-layers "
                                  ">= 1")
        elif self.recompute_method is not None:
            raise ConfigError("--recompute-method applies only to --recompute-granularity full")
