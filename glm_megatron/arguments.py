"""Command-line flags: Megatron-LM's names for everything Megatron-LM has, GLM's for the rest.

Architecture flags default to None so that `--model-preset` fills them and explicit flags win.
"""

from __future__ import annotations

import argparse
import math
from typing import Optional, Sequence

from . import objectives
from .config import ConfigError, GLMConfig
from .model.options import ExecutionOptions
from .presets import PRESETS, PRETRAINING_RECIPES, preset_names

DEFAULT_PRESET = "glm4-small"
# Where the built-in run (no --data-path) writes when --save / --tensorboard-dir are not given.
BUILTIN_RUN_DIR = "runs/builtin"

_BOOL = argparse.BooleanOptionalAction


def _model_args(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("model (a --model-preset fills these; explicit flags override)")
    g.add_argument("--model-preset", default=DEFAULT_PRESET, choices=preset_names(),
                   help=f"architecture preset (default {DEFAULT_PRESET})")
    g.add_argument("--num-layers", type=int)
    g.add_argument("--hidden-size", type=int)
    g.add_argument("--ffn-hidden-size", type=int)
    g.add_argument("--num-attention-heads", type=int)
    g.add_argument("--group-query-attention", action=_BOOL,
                   help="use --num-query-groups key/value groups (GQA)")
    g.add_argument("--num-query-groups", type=int)
    g.add_argument("--kv-channels", type=int, help="head dimension")
    g.add_argument("--max-position-embeddings", type=int)
    g.add_argument("--normalization", choices=["LayerNorm", "RMSNorm"])
    g.add_argument("--norm-epsilon", type=float)
    g.add_argument("--position-embedding-type", choices=["learned_absolute", "rope"])
    g.add_argument("--block-position-encoding", action=_BOOL,
                   help="GLM 2D positions: block position ids feed a second learned table "
                        "(learned_absolute) or the next rotary slice of the head (rope)")
    g.add_argument("--rotary-percent", type=float, help="fraction of the head dim rotated")
    g.add_argument("--rotary-interleaved", action=_BOOL, help="rotate pairs (2i, 2i+1)")
    g.add_argument("--rotary-base", type=float, help="RoPE base; ChatGLM's rope_ratio x 10000")
    g.add_argument("--swiglu", action=_BOOL, help="SwiGLU MLP (ChatGLM2/3, GLM-4)")
    g.add_argument("--geglu", action=_BOOL, help="GeGLU MLP (GLM-130B)")
    g.add_argument("--openai-gelu", action=_BOOL, help="tanh-approximated GeLU (GLM, ChatGLM-6B)")
    g.add_argument("--add-qkv-bias", action=_BOOL)
    g.add_argument("--disable-bias-linear", action=_BOOL, help="no biases in linear layers")
    g.add_argument("--untie-embeddings-and-output-weights", action=_BOOL)
    g.add_argument("--apply-residual-connection-post-layernorm", action=_BOOL)
    g.add_argument("--deepnorm", action=_BOOL,
                   help="DeepNorm (ChatGLM-6B, GLM-130B): scale the post-layernorm residual by "
                        "sqrt(2 * num_layers) and initialise as GLM-130B (Xavier normal, times "
                        "(2 * num_layers)^-1/2 on the FFN, value and output projections)")
    g.add_argument("--embedding-gradient-shrink-alpha", type=float,
                   help="scale the embedding output's gradient by this, its value unchanged "
                        "(GLM-130B: 0.1; default 1: off)")
    g.add_argument("--rotary-fp16-frequencies", action=_BOOL,
                   help="compute the rotary frequencies and angles in fp16 as ChatGLM-6B's "
                        "published code does (exact fp16 parity with it)")
    g.add_argument("--post-sublayer-norms", action=_BOOL,
                   help="GLM-4-0414's extra norms after attention and after the MLP")
    g.add_argument("--hidden-dropout", type=float)
    g.add_argument("--attention-dropout", type=float)
    g.add_argument("--init-method-std", type=float)
    g.add_argument("--make-vocab-size-divisible-by", type=int, default=128)
    g.add_argument("--vocab-size", type=int,
                   help="model vocabulary; default: the tokenizer's, padded to a multiple of "
                        "--make-vocab-size-divisible-by x TP")


def _training_args(parser: argparse.ArgumentParser, pretraining: bool = True):
    g = parser.add_argument_group("training")
    if pretraining:
        g.add_argument("--objective", default="causal", choices=objectives.OBJECTIVES,
                       help="causal: next-token LM (ChatGLM2/3, GLM-4); prefix-lm: a "
                            "bidirectional prefix, [gMASK], then <sop> and the rest generated "
                            "(GLM's document-level blank with the span always the suffix); "
                            "blank-infilling: GLM's autoregressive blank infilling (GLM and "
                            "ChatGLM-6B were pretrained with it; a preset's published recipe "
                            "sets it)")
    g.add_argument("--seq-length", type=int, default=256)
    g.add_argument("--micro-batch-size", type=int, default=4)
    g.add_argument("--global-batch-size", type=int, default=16)
    if pretraining:  # finetuning counts --epochs
        g.add_argument("--train-iters", type=int, default=100)
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--bf16", action="store_true", help="bf16 weights and compute, fp32 master")
    g.add_argument("--fp16", action="store_true",
                   help="fp16 weights and compute, fp32 master, dynamic loss scaling")
    g.add_argument("--loss-scale", type=float, help="static loss scale (fp16); default dynamic")
    g.add_argument("--initial-loss-scale", type=float, default=2.0 ** 32)
    g.add_argument("--min-loss-scale", type=float, default=1.0)
    g.add_argument("--loss-scale-window", type=int, default=1000)
    g.add_argument("--hysteresis", type=int, default=2,
                   help="fp16: overflows before the loss scale is halved, and overflows in a row "
                        "at the smallest scale that stop the run")
    g.add_argument("--check-for-nan-in-loss-and-grad", action=_BOOL, default=True,
                   help="stop the run (every rank, exit status 3) at a non-finite loss or "
                        "gradient norm; under --fp16 at overflows the loss scale cannot answer "
                        "(--hysteresis in a row at its smallest) or all-zero gradients. Off: "
                        "such steps are skipped. A checkpoint with non-finite weights is never "
                        "written either way")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="cuda (NCCL) when available, else cpu (gloo)")


def _optimizer_args(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("optimizer and learning rate")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--min-lr", type=float, default=1e-4)
    g.add_argument("--lr-decay-style", default="cosine",
                   choices=["constant", "linear", "cosine", "WSD"])
    g.add_argument("--lr-warmup-iters", type=int,
                   help="default: 10%% of --lr-decay-iters")
    g.add_argument("--lr-decay-iters", type=int, help="default --train-iters")
    g.add_argument("--lr-wsd-decay-iters", type=int, help="WSD: iterations of the final decay")
    g.add_argument("--lr-wsd-decay-style", default="linear",
                   choices=["linear", "cosine", "exponential", "minus_sqrt"])
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--adam-beta1", type=float, default=0.9)
    g.add_argument("--adam-beta2", type=float, default=0.95)
    g.add_argument("--adam-eps", type=float, default=1e-8)
    g.add_argument("--clip-grad", type=float, default=1.0, help="0 disables clipping")
    g.add_argument("--override-opt_param-scheduler", action="store_true",
                   help="on --load, take the learning-rate schedule from these flags")
    g.add_argument("--use-checkpoint-opt_param-scheduler", action="store_true",
                   help="on --load, keep the checkpoint's learning-rate schedule; without either "
                        "flag a schedule that differs from the checkpoint's is an error")


def _parallel_args(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("parallelism and memory")
    g.add_argument("--tensor-model-parallel-size", type=int, default=1)
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    g.add_argument("--num-layers-per-virtual-pipeline-stage", type=int,
                   help="interleaved 1F1B: layers per model chunk")
    g.add_argument("--decoder-first-pipeline-num-layers", type=int,
                   help="layers on the first pipeline stage (the rest split evenly)")
    g.add_argument("--decoder-last-pipeline-num-layers", type=int,
                   help="layers on the last pipeline stage (the rest split evenly)")
    g.add_argument("--sequence-parallel", action="store_true",
                   help="norms, dropout and residuals on sequence shards (needs TP > 1)")
    g.add_argument("--use-distributed-optimizer", action="store_true",
                   help="shard fp32 master weights and Adam moments over DP ranks (ZeRO-1)")
    g.add_argument("--recompute-granularity", choices=["full", "selective"])
    g.add_argument("--recompute-method", choices=["uniform", "block"])
    g.add_argument("--recompute-num-layers", type=int)
    g.add_argument("--compile", action="store_true",
                   help="compile each transformer layer with torch.compile (inductor), as "
                        "torchtitan's compile does: layer by layer, so compilation takes one "
                        "layer's time whatever the depth; the first iterations include it")
    g.add_argument("--distributed-timeout-minutes", type=float, default=10,
                   help="a collective that waits longer for a rank (stalled, or dead without "
                        "closing its connections) fails the job")


def _data_args(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("data")
    g.add_argument("--data-path", nargs="*",
                   help="PREFIX, or a weighted blend W1 PREFIX1 W2 PREFIX2 ...; default: the "
                        "built-in corpus (Python's own documentation)")
    g.add_argument("--split", default="969,30,1", help="train,valid,test weights")
    g.add_argument("--tokenizer-model", help="SentencePiece model; default: the built-in one")
    g.add_argument("--num-workers", type=int, default=2,
                   help="DataLoader workers per rank; they read and collate the micro-batches "
                        "(0: in the training process)")


def _checkpoint_and_logging_args(parser: argparse.ArgumentParser, pretraining: bool = True):
    g = parser.add_argument_group("checkpointing")
    g.add_argument("--save", help="checkpoint directory")
    g.add_argument("--load", help="resume from this checkpoint directory")
    g.add_argument("--ckpt-step", type=int,
                   help="with --load: the iteration to load instead of the tracker's latest "
                        "(e.g. the complete one an error about a damaged checkpoint names)")
    g.add_argument("--save-interval", type=int, help="default: save only at the end")
    g.add_argument("--keep-last-checkpoints", type=int, metavar="K",
                   help="after each save, delete all but the K newest iterations in --save "
                        "(default: keep all). Megatron-LM has no such flag; this is torchtitan's "
                        "checkpoint.keep_latest_k under a name in Megatron-LM's flag style")
    g.add_argument("--no-load-optim", action="store_true",
                   help="on --load, start a fresh optimizer (also accepts a checkpoint whose "
                        "optimizer files are missing)")
    g.add_argument("--no-load-rng", action="store_true",
                   help="on --load, start from fresh random states (also accepts a checkpoint "
                        "whose RNG files are missing; dropout then differs from a non-stop run)")
    g.add_argument("--override-data-settings", action="store_true",
                   help="on --load, accept --global-batch-size, --micro-batch-size, "
                        "--seq-length, --data-path, --split, --seed or --objective different "
                        "from the checkpoint's (the samples then differ from a non-stop run's)")
    g.add_argument("--override-tokenizer", action="store_true",
                   help="on --load, accept a --tokenizer-model other than the checkpoint's")
    if pretraining:  # finetune_glm.py starts from --pretrained-checkpoint instead
        g.add_argument("--finetune", action="store_true",
                       help="load weights only; start at iteration 0 with fresh optimizer and "
                            "data")
    g.add_argument("--exit-interval", type=int, help="save and exit after this iteration")
    g.add_argument("--exit-signal-handler", action="store_true",
                   help="on SIGTERM or SIGUSR1 (Slurm's --signal=USR1@SECONDS), received by any "
                        "rank: every rank finishes the iteration, saves to --save and exits 0")
    g.add_argument("--exit-duration-in-mins", type=float,
                   help="save and exit 0 after the first iteration that ends this many minutes "
                        "after the start (leave a save's time before the job's limit)")
    g = parser.add_argument_group("logging and evaluation")
    g.add_argument("--log-interval", type=int, default=10)
    g.add_argument("--eval-interval", type=int, default=50)
    if pretraining:  # finetuning evaluates the whole validation set
        g.add_argument("--eval-iters", type=int, default=5)
    g.add_argument("--tensorboard-dir")
    g = parser.add_argument_group("profiling (torch.profiler, as Megatron-LM's "
                                  "--use-pytorch-profiler)")
    g.add_argument("--profile", action="store_true",
                   help="record iterations --profile-step-start to --profile-step-end - 1 "
                        "(counted from 0 in this run) on --profile-ranks; the trace goes to "
                        "--profile-dir (TensorBoard's profiler plugin, Perfetto or "
                        "chrome://tracing read it)")
    g.add_argument("--profile-step-start", type=int, default=10)
    g.add_argument("--profile-step-end", type=int, default=12)
    g.add_argument("--profile-ranks", type=int, nargs="+", default=[0],
                   help="global ranks to profile (default 0)")
    g.add_argument("--profile-dir", help="where traces go (default --tensorboard-dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pretrain_glm.py",
        description="Pretrain a GLM model. Run with torchrun for several processes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for add in (_model_args, _training_args, objectives.add_arguments, _optimizer_args,
                _parallel_args, _data_args, _checkpoint_and_logging_args):
        add(parser)
    return parser


# Numeric flags and their smallest allowed value (None: unset is fine). Integers are counts;
# floats must also be finite.
_AT_LEAST = {
    "micro_batch_size": 1, "global_batch_size": 1, "train_iters": 1, "seq_length": 1,
    "log_interval": 1, "eval_interval": 0, "eval_iters": 0, "save_interval": 1,
    "exit_interval": 1, "num_workers": 0, "tensor_model_parallel_size": 1,
    "pipeline_model_parallel_size": 1, "num_layers_per_virtual_pipeline_stage": 1,
    "decoder_first_pipeline_num_layers": 1, "decoder_last_pipeline_num_layers": 1,
    "recompute_num_layers": 1, "make_vocab_size_divisible_by": 1, "vocab_size": 1,
    "lr_warmup_iters": 0, "lr_decay_iters": 1, "lr_wsd_decay_iters": 1, "loss_scale_window": 1,
    "hysteresis": 1, "keep_last_checkpoints": 1, "ckpt_step": 0, "profile_step_start": 0,
    "lr": 0.0, "min_lr": 0.0, "weight_decay": 0.0, "clip_grad": 0.0, "adam_beta1": 0.0,
    "adam_beta2": 0.0,
}
_POSITIVE = ("adam_eps", "loss_scale", "initial_loss_scale", "min_loss_scale",
             "exit_duration_in_mins", "distributed_timeout_minutes")
_BELOW_ONE = ("adam_beta1", "adam_beta2")
_MEANING = {"save_interval": " (leave it out to save only at the end)",
            "eval_interval": " (0 turns validation off)", "num_workers": " (0 reads in the "
            "training process)", "eval_iters": " (0 turns validation off)"}


def check_ranges(args: argparse.Namespace):
    """Every numeric flag within its range, before anything runs: one line naming the flag."""
    for name, value in vars(args).items():
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        flag = f"--{name.replace('_', '-')} {value}"
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag}: give a finite number")
        if name in _AT_LEAST and value < _AT_LEAST[name]:
            raise ConfigError(f"{flag}: must be at least {_AT_LEAST[name]}"
                              f"{_MEANING.get(name, '')}")
        if name in _POSITIVE and value <= 0:
            raise ConfigError(f"{flag}: must be greater than 0")
        if name in _BELOW_ONE and value >= 1:
            raise ConfigError(f"{flag}: must be smaller than 1")


def add_shared_arguments(parser: argparse.ArgumentParser):
    """The flags finetune_glm.py shares with pretraining: batch and precision, optimizer and
    learning rate, parallelism, checkpointing and logging."""
    _training_args(parser, pretraining=False)
    _optimizer_args(parser)
    _parallel_args(parser)
    _checkpoint_and_logging_args(parser, pretraining=False)


def check_shared_arguments(args: argparse.Namespace):
    """Ranges and combinations of the shared flags that cannot work."""
    check_ranges(args)
    if args.bf16 and args.fp16:
        raise ConfigError("--bf16 and --fp16 are exclusive; pick one")
    if args.override_opt_param_scheduler and args.use_checkpoint_opt_param_scheduler:
        raise ConfigError("--override-opt_param-scheduler and --use-checkpoint-opt_param-scheduler "
                          "are exclusive; pick one")
    if args.profile_step_end <= args.profile_step_start:
        raise ConfigError(f"--profile-step-end {args.profile_step_end} must be greater than "
                          f"--profile-step-start {args.profile_step_start}")
    for flag in ("exit_signal_handler", "exit_duration_in_mins"):
        if getattr(args, flag) not in (None, False) and not args.save:
            raise ConfigError(f"--{flag.replace('_', '-')} saves before exiting: give --save")


def set_schedule_defaults(args: argparse.Namespace):
    """Decay over the whole run and warm up for its first 10%, unless the flags say otherwise."""
    if args.lr_decay_iters is None:
        args.lr_decay_iters = args.train_iters
    if args.lr_warmup_iters is None:
        args.lr_warmup_iters = args.lr_decay_iters // 10


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The flags; a preset's published pretraining recipe (presets.PRETRAINING_RECIPES) gives
    the defaults of the flags it names, so explicit flags still win."""
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].model_preset
    parser.set_defaults(**PRETRAINING_RECIPES.get(preset, {}))
    args = parser.parse_args(argv)
    check_shared_arguments(args)
    set_schedule_defaults(args)
    if args.data_path is None:
        args.save = args.save or f"{BUILTIN_RUN_DIR}/checkpoints"
        args.tensorboard_dir = args.tensorboard_dir or f"{BUILTIN_RUN_DIR}/tensorboard"
    return args


# Flag -> GLMConfig field for flags that map one to one.
_DIRECT = ["num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads",
           "num_query_groups", "kv_channels", "max_position_embeddings", "normalization",
           "norm_epsilon", "position_embedding_type", "block_position_encoding", "rotary_percent",
           "rotary_interleaved", "rotary_base", "openai_gelu", "add_qkv_bias",
           "untie_embeddings_and_output_weights", "apply_residual_connection_post_layernorm",
           "deepnorm", "post_sublayer_norms", "hidden_dropout", "attention_dropout",
           "init_method_std", "embedding_gradient_shrink_alpha", "rotary_fp16_frequencies"]


def execution_options(args: argparse.Namespace) -> ExecutionOptions:
    return ExecutionOptions(args.sequence_parallel, args.recompute_granularity,
                            args.recompute_method, args.recompute_num_layers,
                            compile_backend="inductor" if args.compile else None)


def model_config(args: argparse.Namespace, vocab_size: int) -> GLMConfig:
    """The preset's values, overridden by every architecture flag given explicitly."""
    values = dict(PRESETS[args.model_preset])
    values.update({k: getattr(args, k) for k in _DIRECT if getattr(args, k) is not None})
    if args.group_query_attention is False:
        values["num_query_groups"] = None
    elif args.group_query_attention and args.num_query_groups is None and (
            "num_query_groups" not in values):
        raise ConfigError("--group-query-attention needs --num-query-groups")
    if args.swiglu is not None or args.geglu is not None:
        values["activation"] = "swiglu" if args.swiglu else "geglu" if args.geglu else "gelu"
    if args.disable_bias_linear is not None:
        values["add_bias_linear"] = not args.disable_bias_linear
    rope = values.get("position_embedding_type", GLMConfig.position_embedding_type) == "rope"
    room = 2 * values.get("rotary_percent", GLMConfig.rotary_percent) <= 1.0
    if args.objective != "causal" and rope and room and args.block_position_encoding is None:
        # ChatGLM2/3 and GLM-4 have no block positions of their own: GLM's objectives feed the
        # block ids to the next rotary slice of the head, as ChatGLM-6B does, unless
        # --no-block-position, which leaves the architecture (and its exports) unchanged.
        # GLM-130B rotates the whole head with 1D positions: nothing is left for block ids.
        values["block_position_encoding"] = not args.no_block_position
    values["vocab_size"] = vocab_size
    config = GLMConfig(**values)
    if args.seq_length > config.max_position_embeddings:
        raise ConfigError(
            f"--seq-length {args.seq_length} exceeds --max-position-embeddings "
            f"{config.max_position_embeddings}; shorten the sequence or raise the maximum")
    return config
