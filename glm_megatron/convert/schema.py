"""Our model's parameters as data: full shapes and tensor-parallel split of every name.

Derived from the model itself, built once per config on the meta device (no memory, no weights
drawn) in one process: names and shapes are its `named_parameters()`, the split is each
parameter's role (`parallel.param_roles`). So the converters can never disagree with the model.

Import and resharding use it to write checkpoints that `load_state_dict(strict=True)` accepts at
any layout; export uses it to check that a checkpoint agrees with its own config. The model is
imported only when a schema is asked for: reading a checkpoint's metadata needs no megatron-core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import GLMConfig
from ..param_names import LAYER_PREFIX

# megatron-core's linear layers carry an `_extra_state` entry (None) in their state dict.
EXTRA_STATE = "._extra_state"


@dataclass(frozen=True)
class Param:
    shape: tuple[int, ...]
    partition: Optional[tuple[int, int]]  # (dim, stride) over TP ranks; None = replicated


@dataclass(frozen=True)
class Head:
    """What sits on top of the decoder: the LM head, or a classifier with `num_labels`."""
    num_labels: Optional[int] = None

    @property
    def is_classifier(self) -> bool:
        return self.num_labels is not None


@dataclass(frozen=True)
class _Part:
    params: dict
    extra_state: tuple


_PARTS: dict[tuple, _Part] = {}


def _part(cfg: GLMConfig, head: Head, which: str) -> _Part:
    """The parameters of one part of the model: "pre" (the embedding), "layer" (layer 0), or
    "post" / "post-copy" (final norm and head on the embedding's stage, or on a later pipeline
    stage, where a tied head keeps its own copy of the word embeddings)."""
    key = (repr(cfg), head, which)
    if key not in _PARTS:
        import torch

        from ..model.glm import GLMForCausalLM, GLMForSequenceClassification
        from ..parallel.context import single_process_context
        from ..parallel.param_roles import role_of

        ctx = single_process_context()
        with torch.device("meta"):
            if which.startswith("post") and head.is_classifier:
                model = GLMForSequenceClassification(cfg, ctx, head.num_labels, pad_token_id=0)
            else:
                model = GLMForCausalLM(cfg, ctx, layer_numbers=range(int(which == "layer")),
                                       pre_process=which in ("pre", "post"),
                                       post_process=which.startswith("post"))

        def belongs(name: str) -> bool:
            in_layer = name.startswith("decoder.layers.")
            if which == "layer":
                return in_layer
            return (not in_layer) and name.startswith("embedding.") == (which == "pre")

        params = {name: Param(tuple(p.shape), role_of(p).partition)
                  for name, p in model.named_parameters() if belongs(name)}
        extra = tuple(name for name in model.state_dict(keep_vars=True)
                      if name.endswith(EXTRA_STATE) and belongs(name))
        _PARTS[key] = _Part(params, extra)
    return _PARTS[key]


def _in_layer(names, i: int):
    """Layer 0's names renamed to layer i (every layer has the same parameters)."""
    first, target = LAYER_PREFIX.format(i=0), LAYER_PREFIX.format(i=i)
    return ((target + name[len(first):], value) for name, value in names)


def pre_params(cfg: GLMConfig) -> dict[str, Param]:
    """Parameters of the first pipeline stage outside the layers (the embedding)."""
    return dict(_part(cfg, Head(), "pre").params)


def layer_params(cfg: GLMConfig, i: int) -> dict[str, Param]:
    return dict(_in_layer(_part(cfg, Head(), "layer").params.items(), i))


def post_params(cfg: GLMConfig, head: Head, *, holds_embedding: bool = True) -> dict[str, Param]:
    """Parameters of the last stage outside the layers. A tied LM head on a stage without the
    embedding keeps a copy of the word embeddings as `output_layer.weight` (Megatron-LM)."""
    which = "post" if holds_embedding or head.is_classifier else "post-copy"
    return dict(_part(cfg, head, which).params)


def layer_extra_state(cfg: GLMConfig, i: int) -> list[str]:
    extra = _part(cfg, Head(), "layer").extra_state
    return [name for name, _ in _in_layer(((n, None) for n in extra), i)]


def post_extra_state(cfg: GLMConfig, head: Head) -> list[str]:
    return list(_part(cfg, head, "post").extra_state)


def layer_of(name: str) -> Optional[int]:
    """The global layer number of a `decoder.layers.N.` name, None for the others."""
    if not name.startswith("decoder.layers."):
        return None
    return int(name.split(".")[2])


def full_model_params(cfg: GLMConfig, head: Head) -> dict[str, Param]:
    out = pre_params(cfg)
    for i in range(cfg.num_layers):
        out.update(layer_params(cfg, i))
    out.update(post_params(cfg, head))
    return out
