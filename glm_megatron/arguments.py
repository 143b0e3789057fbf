"""Command-line flags: Megatron-LM's names for everything Megatron-LM has, GLM's for the rest.

Architecture flags default to None so that `--model-preset` fills them and explicit flags win.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from typing import Optional, Sequence

from . import objectives
from .config import ConfigError
from .effective_config import ARCHITECTURE_FLAGS, DEFAULT_PRESET, apply_recipe
from .presets import preset_names
from .training.writers import check_wandb_flags

# Where the run without arguments saves and logs (and resumes from, when run again).
BUILTIN_RUN_DIR = "runs/builtin"

_BOOL = argparse.BooleanOptionalAction


def _model_args(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("model (a --model-preset fills these; explicit flags override)")
    g.add_argument("--model-preset", choices=preset_names(),
                   help=f"architecture preset (default: {DEFAULT_PRESET}, or the checkpoint's "
                        "architecture when one is loaded and no architecture flag is given)")
    g.add_argument("--use-checkpoint-args", action=_BOOL,
                   help="take the architecture from the checkpoint --load holds (default: when "
                        "it holds one and no architecture flag is given)")
    g.add_argument("--num-layers", type=int)
    g.add_argument("--hidden-size", type=int)
    g.add_argument("--ffn-hidden-size", type=int)
    g.add_argument("--num-attention-heads", type=int)
    g.add_argument("--group-query-attention", action=_BOOL,
                   help="use --num-query-groups key/value groups (GQA)")
    g.add_argument("--num-query-groups", type=int)
    g.add_argument("--kv-channels", type=int,
                   help="head dimension (default: from --model-preset, else hidden size / heads)")
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
    g.add_argument("--tokenizer-model",
                   help="SentencePiece model (default: the one the data records, else the "
                        "checkpoint's)")
    g.add_argument("--num-workers", type=int, default=2,
                   help="DataLoader workers per rank; they read and collate the micro-batches "
                        "(0: in the training process)")


def _checkpoint_and_logging_args(parser: argparse.ArgumentParser, pretraining: bool = True):
    g = parser.add_argument_group("checkpointing")
    g.add_argument("--save", help="checkpoint directory; a run continues the checkpoint it "
                                  "holds (default: none, nothing is saved; the run without "
                                  "arguments: runs/builtin/checkpoints)")
    g.add_argument("--load", help="resume from this checkpoint directory (default: the "
                                  "checkpoint --save holds, if any)")
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
        g.add_argument("--exit-on-missing-checkpoint", action="store_true",
                       help="with --load: stop when it holds no checkpoint instead of starting "
                            "from scratch")
        g.add_argument("--skip-train", action="store_true",
                       help="evaluate the checkpoint --load holds on --eval-iters batches of "
                            "the validation and test splits (loss and perplexity) and exit: no "
                            "training, nothing saved")
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
    g.add_argument("--wandb-project", help="log to this Weights & Biases project as well (needs "
                                           "the wandb package)")
    g.add_argument("--wandb-exp-name", help="the W&B run's name (default: W&B's)")
    g.add_argument("--wandb-save-dir", help="W&B's local files (default: W&B's, ./wandb)")
    g.add_argument("--tensorboard-dir", help="TensorBoard logs (default: none, no logs; the "
                                             "run without arguments: runs/builtin/tensorboard)")
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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every flag's default once, at the end of its help: the value, 'from --model-preset' for
    what a preset fills, or nothing more when the help states its default itself."""

    _NO_HELP = "\x00"

    def _format_action(self, action):
        if action.option_strings and not (action.help and action.help.strip()):
            action = copy.copy(action)  # flags without help text still show their default
            action.help = self._NO_HELP
        return super()._format_action(action)

    def _get_help_string(self, action) -> str:
        text = "" if action.help == self._NO_HELP else action.help
        if action.default is argparse.SUPPRESS or "default" in text:
            return text
        if action.dest in PRESET_FILLED:
            default = "from --model-preset"
        elif action.default is None:
            default = "none"
        elif action.default is False and action.nargs == 0:
            default = "off"
        else:
            default = "%(default)s"
        return f"{text} (default: {default})".lstrip()


# Architecture flags whose default is the preset's value.
PRESET_FILLED = set(ARCHITECTURE_FLAGS) - {"model_preset", "vocab_size"}

EXAMPLES = """examples:
  python pretrain_glm.py
      the built-in run: Python's documentation, glm4-small, 100 iterations, saved to
      runs/builtin/checkpoints; run again, it continues from there
  torchrun --nproc_per_node 4 pretrain_glm.py --tensor-model-parallel-size 2 \\
      --model-preset chatglm3-tiny --train-iters 200 --save runs/tp2
      TP 2 x DP 2 on one machine; the same command again resumes from runs/tp2
  python pretrain_glm.py --objective blank-infilling --model-preset glm-large --bf16 \\
      --data-path data/corpus_text_document --save runs/glm-large
      GLM's blank infilling on your own data (tools/preprocess_data.py wrote it and recorded
      its tokenizer)
  python pretrain_glm.py --load runs/builtin/checkpoints --finetune --save runs/continued
      continue from a checkpoint (architecture and tokenizer from its metadata)
  python pretrain_glm.py --load runs/builtin/checkpoints --skip-train --eval-iters 20
      validation and test loss and perplexity of a checkpoint; nothing trained or saved
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pretrain_glm.py", usage="%(prog)s [-h] [FLAGS]  (torchrun ... pretrain_glm.py "
        "[FLAGS] for several processes)",
        description="Pretrain a GLM model (Megatron-LM's flag names).", epilog=EXAMPLES,
        formatter_class=HelpFormatter)
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
    check_wandb_flags(args)
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


def given_flags(argv: Sequence[str]) -> list[str]:
    """The destinations of the flags on the command line (sorted): a parser whose every
    default is 'absent' keeps only those."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return sorted(vars(parser.parse_args(argv)))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The flags; a preset's published pretraining recipe (presets.PRETRAINING_RECIPES) gives
    the defaults of the flags it names, so explicit flags still win. Beside the flags: the
    command line (argv), the destinations given (given_flags) and what the recipe set
    (implied); the architecture is
    resolved later, with the checkpoint in view (effective_config.architecture)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    args.given_flags = given_flags(argv)
    args.implied = apply_recipe(args, set(args.given_flags))
    check_shared_arguments(args)
    set_schedule_defaults(args)
    if not argv:
        # Only the run without arguments has folders of its own, which it continues on the
        # next such run; any other run saves nothing without --save (as Megatron-LM), so two
        # experiments never share a checkpoint or TensorBoard folder unasked.
        args.save = f"{BUILTIN_RUN_DIR}/checkpoints"
        args.tensorboard_dir = f"{BUILTIN_RUN_DIR}/tensorboard"
    return args


def execution_options(args: argparse.Namespace):
    """How the model runs (not what it is): sequence parallelism, recomputation, compilation."""
    from .model.options import ExecutionOptions  # imports torch: only when a model is built

    return ExecutionOptions(args.sequence_parallel, args.recompute_granularity,
                            args.recompute_method, args.recompute_num_layers,
                            compile_backend="inductor" if args.compile else None)
