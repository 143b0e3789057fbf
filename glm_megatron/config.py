"""One configuration for every GLM generation.

The three generations (GLM, ChatGLM-6B/GLM-130B, ChatGLM2/3/GLM-4) differ only in the knobs
below; presets are plain data that fill them. Field names follow megatron-core's
``TransformerConfig`` where a field exists there.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the flag and the fix."""


@dataclass
class GLMConfig:
    num_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    ffn_hidden_size: Optional[int] = None  # default 4 * hidden_size
    num_query_groups: Optional[int] = None  # None: multi-head attention (one group per head)
    kv_channels: Optional[int] = None  # head dim; default hidden_size // num_attention_heads
    vocab_size: int = 512  # padded vocabulary the embedding holds
    max_position_embeddings: int = 512

    normalization: str = "LayerNorm"  # LayerNorm | RMSNorm
    norm_epsilon: float = 1e-5

    position_embedding_type: str = "learned_absolute"  # learned_absolute | rope
    # GLM's 2D positions: block position ids feed a second learned table (learned_absolute) or
    # the next `rotary_percent` slice of the head dim (rope), as GLM and ChatGLM-6B do.
    block_position_encoding: bool = False
    rotary_percent: float = 1.0
    rotary_interleaved: bool = False  # rotate pairs (2i, 2i+1) instead of halves
    rotary_base: float = 10000.0
    # ChatGLM-6B's published code computes the rotary frequencies and angles in fp16; on for
    # exact fp16 parity with it (fp32 otherwise).
    rotary_fp16_frequencies: bool = False

    activation: str = "gelu"  # gelu | swiglu | geglu (gated: fc1 rows are [activated; linear])
    openai_gelu: bool = False  # tanh approximation of GeLU, as GLM and ChatGLM-6B use
    add_bias_linear: bool = True
    add_qkv_bias: bool = False  # bias on QKV even when add_bias_linear is off (ChatGLM2/3, GLM-4)
    untie_embeddings_and_output_weights: bool = False

    # ChatGLM-6B / GLM-130B DeepNorm: residual = norm output * sqrt(2 * num_layers), and GLM-130B's
    # initialisation (xavier_normal_std).
    apply_residual_connection_post_layernorm: bool = False
    deepnorm: bool = False
    # GLM-130B's embedding gradient shrink: the embedding output's gradient is scaled by this
    # (0.1 in GLM-130B), its value unchanged. 1.0: off.
    embedding_gradient_shrink_alpha: float = 1.0
    # GLM-4-0414: extra norms on the attention and MLP outputs before the residual add.
    post_sublayer_norms: bool = False

    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    init_method_std: float = 0.02

    def __post_init__(self):
        if self.ffn_hidden_size is None:
            self.ffn_hidden_size = 4 * self.hidden_size
        if self.num_query_groups is None:
            self.num_query_groups = self.num_attention_heads
        if self.kv_channels is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(
                    f"--hidden-size {self.hidden_size} is not divisible by --num-attention-heads "
                    f"{self.num_attention_heads}; set --kv-channels explicitly")
            self.kv_channels = self.hidden_size // self.num_attention_heads
        self.validate()

    def validate(self):
        choices = {
            "normalization": ("LayerNorm", "RMSNorm"),
            "position_embedding_type": ("learned_absolute", "rope"),
            "activation": ("gelu", "swiglu", "geglu"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name.replace('_', '-')} must be one of {allowed}, "
                                  f"got {getattr(self, name)!r}")
        if self.num_attention_heads % self.num_query_groups:
            raise ConfigError(
                f"--num-attention-heads {self.num_attention_heads} is not divisible by "
                f"--num-query-groups {self.num_query_groups}")
        if self.position_embedding_type == "rope":
            rotary_dims = self.rotary_dim * (2 if self.block_position_encoding else 1)
            if self.rotary_dim % 2 or rotary_dims > self.kv_channels:
                raise ConfigError(
                    f"--rotary-percent {self.rotary_percent} gives {self.rotary_dim} rotary dims per "
                    f"position kind, which must be even and fit the head dim {self.kv_channels}")
        if not 0.0 < self.embedding_gradient_shrink_alpha <= 1.0:
            raise ConfigError(f"--embedding-gradient-shrink-alpha "
                              f"{self.embedding_gradient_shrink_alpha} must be in (0, 1] "
                              "(GLM-130B: 0.1; 1: off)")
        if self.deepnorm and not self.apply_residual_connection_post_layernorm:
            raise ConfigError("--deepnorm needs --apply-residual-connection-post-layernorm "
                              "(DeepNorm scales the normalised residual)")

    # Derived sizes -----------------------------------------------------------------------
    @property
    def gated_mlp(self) -> bool:
        return self.activation in ("swiglu", "geglu")

    @property
    def rotary_dim(self) -> int:
        return int(self.kv_channels * self.rotary_percent)

    @property
    def query_projection_size(self) -> int:
        return self.num_attention_heads * self.kv_channels

    @property
    def kv_projection_size(self) -> int:
        return self.num_query_groups * self.kv_channels

    @property
    def residual_alpha(self) -> float:
        return math.sqrt(2 * self.num_layers) if self.deepnorm else 1.0

    def xavier_normal_std(self, fan_in: int, fan_out: int, deepnorm_scaled: bool) -> float:
        """GLM-130B's DeepNorm initialisation: Xavier normal, times (2 * num_layers)^-1/2 on the
        FFN, value and output projections (`deepnorm_scaled`)."""
        scale = (2.0 * self.num_layers) ** -0.5 if deepnorm_scaled else 1.0
        return scale * math.sqrt(2.0 / (fan_in + fan_out))

    @property
    def output_layer_init_std(self) -> float:
        # Scaled init of the projections that write into the residual stream (GLM, Megatron).
        return self.init_method_std / math.sqrt(2.0 * self.num_layers)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GLMConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def check_tensor_parallel(self, tp: int):
        """Raise a clear error when a dimension cannot be split over `tp` ranks."""
        checks = [
            ("--num-attention-heads", self.num_attention_heads),
            ("--num-query-groups", self.num_query_groups),
            ("--ffn-hidden-size", self.ffn_hidden_size),
            ("the padded vocabulary size", self.vocab_size),
        ]
        for flag, value in checks:
            if value % tp:
                raise ConfigError(f"{flag} ({value}) is not divisible by "
                                  f"--tensor-model-parallel-size {tp}; pick sizes that divide")
