"""finetune_glm.py's flags: Megatron-LM's `tasks/` names for the task and its data, GLM's for
the cloze head, and pretraining's own flag groups for batches, precision, the optimizer and
learning rate, parallelism, checkpointing and logging (glm_megatron/arguments.py).

The architecture and tokenizer are not flags: they come from --pretrained-checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .. import arguments
from ..config import ConfigError
from .labels import PROBLEM_TYPES
from .tasks import HEADS, TASKS

# GLM's finetuning recipe (config_tasks/task_*.sh): lr 1e-5, linear decay, batch 16.
FINETUNE_DEFAULTS = dict(lr=1e-5, min_lr=0.0, lr_decay_style="linear", eval_interval=None)


def _task_args(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("task and data")
    g.add_argument("--task", required=True, choices=TASKS,
                   help="text-classification and multiple-choice read JSON lines "
                        "({text, text_pair, label} / {context, choices, label}); the SuperGLUE "
                        "tasks read SuperGLUE's own files")
    g.add_argument("--train-data", help="JSON-lines training file")
    g.add_argument("--valid-data", help="JSON-lines validation file (metrics, best checkpoint)")
    g.add_argument("--test-data", help="JSON-lines test file (labels optional): --predictions "
                                       "are written for it")
    g.add_argument("--pretrained-checkpoint", required=True,
                   help="checkpoint to start from (pretrain_glm.py --save, an import of "
                        "tools/checkpoint/convert.py, or a finetune_glm.py --save); its "
                        "architecture and tokenizer are used")
    g.add_argument("--tokenizer-model",
                   help="SentencePiece model; default: the one the checkpoint records")
    g.add_argument("--truncate", action="store_true",
                   help="cut the text of examples longer than --seq-length instead of stopping")
    g.add_argument("--predictions",
                   help="write one JSON line per example ({index, label, scores}) of "
                        "--test-data (else --valid-data) here, scored by the best checkpoint")


def _head_args(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("head")
    g.add_argument("--head", choices=HEADS,
                   help="cloze: GLM's blank filling scores each answer (default for language "
                        "models); seq-cls: a classifier on the rightmost token (transformers' "
                        "GlmForSequenceClassification; default for a classifier checkpoint)")
    g.add_argument("--multi-token", action=argparse.BooleanOptionalAction,
                   help="cloze: score answers of several tokens by the sum of their "
                        "log-probabilities; default: single-token scoring when every answer is "
                        "one token; --no-multi-token insists on it")
    g.add_argument("--length-penalty", type=float, default=0.0,
                   help="cloze, multi-token: divide a score by (answer tokens + 1) ** this")
    g.add_argument("--pattern", help="text-classification, cloze: a template with {text}, "
                                     "{text_pair} and [MASK]")
    g.add_argument("--pattern-id", type=int, help="SuperGLUE: GLM's pattern number")
    g.add_argument("--verbalizer", action="append", metavar="LABEL=WORDS",
                   help="the answer that stands for LABEL (repeatable); default: the label")
    g.add_argument("--problem-type", choices=PROBLEM_TYPES,
                   help="seq-cls: default from the labels (strings, numbers or lists)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune_glm.py",
        description="Finetune and evaluate a GLM model on a classification or multiple-choice "
                    "task. Run with torchrun for several processes.",
        formatter_class=arguments.HelpFormatter)
    _task_args(parser)
    _head_args(parser)
    g = parser.add_argument_group("length of the run")
    g.add_argument("--epochs", type=int, default=3,
                   help="passes over --train-data; 0 evaluates --pretrained-checkpoint as it is "
                        "(zero-shot with the cloze head)")
    g.add_argument("--lr-warmup-fraction", type=float,
                   help="warm up for this fraction of --lr-decay-iters (instead of "
                        "--lr-warmup-iters)")
    arguments.add_shared_arguments(parser)
    parser.set_defaults(**FINETUNE_DEFAULTS)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """finetune_glm.py's flags, checked; `args.argv` keeps the command line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    arguments.check_shared_arguments(args)
    if args.epochs < 0:
        raise ConfigError(f"--epochs {args.epochs} must be 0 (evaluate only) or more")
    if args.lr_warmup_fraction is not None:
        if args.lr_warmup_iters is not None:
            raise ConfigError("--lr-warmup-fraction and --lr-warmup-iters are exclusive; pick "
                              "one")
        if not 0 <= args.lr_warmup_fraction < 1:
            raise ConfigError(f"--lr-warmup-fraction {args.lr_warmup_fraction} must be in "
                              "[0, 1)")
    if args.epochs and not args.train_data:
        raise ConfigError("--epochs > 0 trains on --train-data; give it (or --epochs 0 to "
                          "evaluate only)")
    if not (args.valid_data or args.test_data):
        raise ConfigError("give --valid-data or --test-data to evaluate on")
    return args


def set_schedule(args: argparse.Namespace, train_iters: int):
    """The learning-rate schedule's lengths once the run's length in iterations is known."""
    args.train_iters = train_iters
    if args.lr_decay_iters is None:
        args.lr_decay_iters = max(train_iters, 1)
    if args.lr_warmup_fraction is not None:
        args.lr_warmup_iters = int(args.lr_warmup_fraction * args.lr_decay_iters)
    arguments.set_schedule_defaults(args)
