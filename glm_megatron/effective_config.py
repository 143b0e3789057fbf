"""What the flags mean once the preset, its published recipe, the objective and a checkpoint
have had their say, resolved in one place and printed at start-up. No flag silently changes
another: every implication below that changes a value is returned as a line, and
pretrain_glm.py prints it.

Documented implications (tests/test_effective_config.py asserts each):
1. Preset: `--model-preset P` (default glm4-small) gives every architecture field no flag gives.
2. Recipe: a preset with a published pretraining recipe (presets.PRETRAINING_RECIPES) gives
   the defaults of the flags it names (--objective, the blank-infilling flags, --seq-length);
   flags given win.
3. Checkpoint: with --use-checkpoint-args, or when --load (or a --save that is continued)
   holds a checkpoint and no architecture flag is given, the architecture is the checkpoint's
   (Megatron-LM's --use-checkpoint-args). Architecture flags given with --use-checkpoint-args
   are an error; given without it, the resume checks compare them with the checkpoint's.
4. Block positions: --objective blank-infilling or prefix-lm on a RoPE architecture without
   block positions of its own that rotates at most half of each head (ChatGLM2/3, GLM-4) turns
   --block-position-encoding on: the block ids rotate the next slice of the head, as in
   ChatGLM-6B. --no-block-position (block ids only tell Part B from Part A) or
   --no-block-position-encoding keeps the architecture exactly the preset's, which is what
   exports to transformers' glm/glm4. An architecture with block positions keeps them.
5. --no-group-query-attention: one key/value group per head, whatever the preset;
   --group-query-attention needs --num-query-groups from the flag or the preset.
6. --swiglu / --geglu (or their --no- forms) set the MLP activation; --disable-bias-linear
   (or --no-disable-bias-linear) the linear biases.

No torch here: this runs before pretrain_glm.py imports the training code.
"""

from __future__ import annotations

import argparse
from typing import Optional

from .config import ConfigError, GLMConfig
from .presets import PRESETS, PRETRAINING_RECIPES

DEFAULT_PRESET = "glm4-small"

# Flag destination -> GLMConfig field, for the flags that map one to one.
DIRECT_FIELDS = ["num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads",
                 "num_query_groups", "kv_channels", "max_position_embeddings", "normalization",
                 "norm_epsilon", "position_embedding_type", "block_position_encoding",
                 "rotary_percent", "rotary_interleaved", "rotary_base", "openai_gelu",
                 "add_qkv_bias", "untie_embeddings_and_output_weights",
                 "apply_residual_connection_post_layernorm", "deepnorm", "post_sublayer_norms",
                 "hidden_dropout", "attention_dropout", "init_method_std",
                 "embedding_gradient_shrink_alpha", "rotary_fp16_frequencies"]
# Every flag that says something about the architecture (destinations).
ARCHITECTURE_FLAGS = ["model_preset", *DIRECT_FIELDS, "group_query_attention", "swiglu", "geglu",
                      "disable_bias_linear", "vocab_size"]


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def apply_recipe(args: argparse.Namespace, given: set) -> list[str]:
    """Implication 2, on `args` in place: the preset's recipe for every flag it names that is
    not in `given` (the destinations given on the command line). Returns what it set."""
    recipe = PRETRAINING_RECIPES.get(args.model_preset or "", {})
    notes = []
    for dest, value in recipe.items():
        if dest not in given and getattr(args, dest) != value:
            setattr(args, dest, value)
            notes.append(f"{_flag(dest)} {value} (the published recipe of --model-preset "
                         f"{args.model_preset})")
    return notes


def _uses_checkpoint(args: argparse.Namespace, given: set, saved: Optional[dict]) -> bool:
    architecture_given = [_flag(d) for d in ARCHITECTURE_FLAGS if d in given]
    if args.use_checkpoint_args:
        if saved is None:
            raise ConfigError("--use-checkpoint-args takes the architecture from a checkpoint: "
                              "give --load (or a --save) that holds one")
        if architecture_given:
            raise ConfigError(f"--use-checkpoint-args takes the architecture from the "
                              f"checkpoint; drop {', '.join(architecture_given[:3])} or drop "
                              "--use-checkpoint-args")
        return True
    return args.use_checkpoint_args is None and saved is not None and not architecture_given


def _block_positions_implied(args: argparse.Namespace, values: dict) -> bool:
    rope = values.get("position_embedding_type", GLMConfig.position_embedding_type) == "rope"
    room = 2 * values.get("rotary_percent", GLMConfig.rotary_percent) <= 1.0
    return (args.objective != "causal" and rope and room and not args.no_block_position
            and args.block_position_encoding is None
            and not values.get("block_position_encoding", False))


def architecture(args: argparse.Namespace, given: set, saved: Optional[dict]
                 ) -> tuple[dict, list[str]]:
    """Implications 1 and 3-6: (GLMConfig field values without the vocabulary, the lines that
    say what was implied). `saved`: the config of the checkpoint the run would load."""
    if _uses_checkpoint(args, given, saved):
        values = {k: v for k, v in saved.items() if k != "vocab_size"}
        how = "--use-checkpoint-args" if args.use_checkpoint_args else \
            "--use-checkpoint-args, implied: no architecture flag given"
        return values, [f"architecture from the checkpoint in --load {args.load} ({how})"]
    preset = args.model_preset or DEFAULT_PRESET
    values = dict(PRESETS[preset])
    values.update({k: getattr(args, k) for k in DIRECT_FIELDS if getattr(args, k) is not None})
    notes = []
    if args.group_query_attention is False:
        values["num_query_groups"] = None
    elif args.group_query_attention and values.get("num_query_groups") is None:
        raise ConfigError("--group-query-attention needs --num-query-groups")
    if args.swiglu is not None or args.geglu is not None:
        values["activation"] = "swiglu" if args.swiglu else "geglu" if args.geglu else "gelu"
    if args.disable_bias_linear is not None:
        values["add_bias_linear"] = not args.disable_bias_linear
    if _block_positions_implied(args, values):
        values["block_position_encoding"] = True
        notes.append(f"--block-position-encoding (--objective {args.objective} on the RoPE of "
                     f"{preset}: block ids rotate the next slice of each head; "
                     "--no-block-position keeps the architecture)")
    return values, notes


def model_config(args: argparse.Namespace, values: dict, vocab_size: int) -> GLMConfig:
    config = GLMConfig(**values, vocab_size=vocab_size)
    if args.seq_length > config.max_position_embeddings:
        raise ConfigError(
            f"--seq-length {args.seq_length} exceeds --max-position-embeddings "
            f"{config.max_position_embeddings}; shorten the sequence or raise the maximum")
    return config


# What parse_args adds beside the flags; not configuration.
_BOOKKEEPING = {"argv", "given_flags", "implied", "load_from_save"}
_TITLE, _END = " arguments ", " end of arguments "


def effective_arguments(args: argparse.Namespace, config: GLMConfig, **resolved) -> dict:
    """Every setting the run uses, by flag destination: the flags, with the architecture as
    resolved (the model config's fields in place of the architecture flags) and `resolved`
    inputs (data_path, tokenizer_model) in place of their flags."""
    values = {k: v for k, v in vars(args).items()
              if k not in _BOOKKEEPING and k not in ARCHITECTURE_FLAGS}
    values.update(config.to_dict())
    values["model_preset"] = args.model_preset
    values.update(resolved)
    return dict(sorted(values.items()))


def format_arguments(values: dict, implied: list[str]) -> str:
    """Megatron-LM's argument block: one setting per line, then what was implied."""
    width = 48
    lines = [f"{_TITLE:-^60}"]
    for name, value in values.items():
        shown = " ".join(map(str, value)) if isinstance(value, list) else value
        lines.append(f"  {name} {'.' * max(3, width - len(name))} {shown}")
    lines += [f"  implied: {line}" for line in implied]
    lines.append(f"{_END:-^60}")
    return "\n".join(lines)
