"""Key-mapping tables and how they are applied, in both directions.

A layout is three tables of rules (embedding stage, one transformer layer, head stage). A rule
maps a tuple of our tensor names to a tuple of Hugging Face names through a named transform;
`{i}` in a name stands for the global layer number. The same table drives export (ours -> HF),
import (HF -> ours) and the planning pass that runs the transforms on `meta` tensors to learn
every output name and shape without reading weights. A tensor that no rule consumes is an error,
never a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..config import GLMConfig
from .errors import ConversionError
from .schema import Head, Param, layer_params, post_params, pre_params
from .transforms import IDENTITY, Transform


def always(_cfg: GLMConfig, _head: Head) -> bool:
    return True


@dataclass(frozen=True)
class Rule:
    ours: tuple[str, ...]
    hf: tuple[str, ...]
    transform: Transform = IDENTITY
    when: Callable[[GLMConfig, Head], bool] = always

    def at(self, i: Optional[int]) -> "Rule":
        if i is None:
            return self
        return Rule(tuple(n.format(i=i) for n in self.ours),
                    tuple(n.format(i=i) for n in self.hf), self.transform, self.when)


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    pre: tuple[Rule, ...]
    layer: tuple[Rule, ...]
    post: tuple[Rule, ...]
    # config.json <-> GLMConfig, and which of our configs the layout can hold (layouts/).
    detect: Callable[[dict], bool]
    config_from_hf: Callable[[dict], tuple]
    config_to_hf: Callable[..., dict]
    unsupported: Callable[[GLMConfig, Head], list[str]]
    # Names in published files that are not weights (saved buffers), skipped on import.
    ignorable: tuple[str, ...] = ()
    # Our own remote code (glm_megatron/hf_remote) shipped with the export, if the layout
    # has no class in transformers: (configuration module, modeling module).
    remote_code: Optional[tuple[str, ...]] = None

    def rules(self, group, cfg: GLMConfig, head: Head) -> list[Rule]:
        table = self.pre if group == "pre" else self.post if group == "post" else self.layer
        index = group if isinstance(group, int) else None
        return [r.at(index) for r in table if r.when(cfg, head)]


def groups(cfg: GLMConfig) -> list:
    """Stage groups in the order export streams them: the embedding, each layer, the head."""
    return ["pre", *range(cfg.num_layers), "post"]


def our_params(group, cfg: GLMConfig, head: Head) -> dict[str, Param]:
    """Our full-model parameters of one group (a tied head keeps no copy in the full model)."""
    if group == "pre":
        return pre_params(cfg)
    if group == "post":
        return post_params(cfg, head)
    return layer_params(cfg, group)


def to_hf(layout: Layout, group, tensors: dict[str, torch.Tensor], cfg: GLMConfig,
          head: Head) -> dict[str, torch.Tensor]:
    out, used = {}, set()
    for rule in layout.rules(group, cfg, head):
        missing = [n for n in rule.ours if n not in tensors]
        if missing:
            raise ConversionError(f"the checkpoint lacks {', '.join(missing)}, which the "
                                  f"{layout.name} layout needs; is its config.json/metadata.json "
                                  "the one it was trained with?")
        produced = rule.transform.to_hf([tensors[n] for n in rule.ours], cfg)
        out.update(zip(rule.hf, produced))
        used.update(rule.ours)
    unmapped = sorted(set(tensors) - used)
    if unmapped:
        raise ConversionError(f"checkpoint parameters with no place in the {layout.name} layout: "
                              f"{', '.join(unmapped)}; export to a layout that has them "
                              "(--hf-layout)")
    return out


def from_hf(layout: Layout, group, read: Callable[[str], torch.Tensor], cfg: GLMConfig,
            head: Head) -> dict[str, torch.Tensor]:
    out = {}
    for rule in layout.rules(group, cfg, head):
        produced = rule.transform.from_hf([read(n) for n in rule.hf], cfg)
        out.update(zip(rule.ours, produced))
    return out


def hf_plan(layout: Layout, cfg: GLMConfig, head: Head,
            dtype_of: Callable[[str], torch.dtype]) -> list[tuple[str, tuple, torch.dtype, object]]:
    """Every HF tensor (name, shape, dtype, group) in the order export writes them, found by
    running the transforms on meta tensors (`dtype_of` gives each of our tensors' dtype)."""
    plan = []
    for group in groups(cfg):
        meta = {n: torch.empty(p.shape, dtype=dtype_of(n), device="meta")
                for n, p in our_params(group, cfg, head).items()}
        for name, tensor in to_hf(layout, group, meta, cfg, head).items():
            plan.append((name, tuple(tensor.shape), tensor.dtype, group))
    return plan


def to_hf_state_dict(layout: Layout, ours: dict[str, torch.Tensor], cfg: GLMConfig,
                     head: Head) -> dict[str, torch.Tensor]:
    """A whole single-process state dict of ours as the layout's Hugging Face tensors (what
    export writes, for a model in memory)."""
    out = {}
    for group in groups(cfg):
        names = our_params(group, cfg, head)
        out.update(to_hf(layout, group, {n: ours[n] for n in names}, cfg, head))
    return out
