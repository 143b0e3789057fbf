"""What a resumed run must share with its checkpoint, checked before anything is loaded: the one
place that decides whether a checkpoint belongs to this experiment.

- The architecture (the model config): another one is always an error, naming the first few
  differences and the preset the checkpoint matches.
- The sample stream (--global-batch-size, --micro-batch-size, --seq-length, --data-path with
  its weights, --split, --seed, --objective): with the checkpoint's values and consumed
  samples a resumed run reads exactly the samples of a run that never stopped; other values
  need --override-data-settings.
- The learning-rate schedule: as Megatron-LM, a difference needs
  --override-opt_param-scheduler (follow the flags) or --use-checkpoint-opt_param-scheduler
  (keep the checkpoint's).
- The tokenizer (its file's content): another one needs --override-tokenizer.

Errors name the flags as the user gives them: a --lr-decay-iters or --lr-warmup-iters that
only follows a changed --train-iters is not reported separately. A value the checkpoint did not
record (format 1, imported checkpoints) is not compared.
"""

from __future__ import annotations

import argparse
from typing import Optional

from ..checkpoint_format import CheckpointError, CheckpointMetadata, DataRecord, ScheduleRecord
from ..presets import matching_preset

# Record field -> the flag that sets it.
DATA_FLAGS = {"global_batch_size": "--global-batch-size", "micro_batch_size": "--micro-batch-size",
              "seq_length": "--seq-length", "sources": "--data-path", "split": "--split",
              "seed": "--seed", "objective": "--objective", "prepend_cls": "--prepend-cls"}
SCHEDULE_FLAGS = {"train_iters": "--train-iters", "lr": "--lr", "min_lr": "--min-lr",
                  "lr_decay_style": "--lr-decay-style", "lr_decay_iters": "--lr-decay-iters",
                  "lr_warmup_iters": "--lr-warmup-iters",
                  "lr_wsd_decay_iters": "--lr-wsd-decay-iters",
                  "lr_wsd_decay_style": "--lr-wsd-decay-style", "weight_decay": "--weight-decay"}


def _show(field: str, value) -> str:
    if field == "sources":
        return " ".join(f"{s.weight:g} {s.prefix}" if s.weight is not None else s.prefix
                        for s in value)
    return str(value)


def _same(field: str, saved, current) -> bool:
    if field == "sources":  # the content and weights, wherever the files lie now
        if any(s.fingerprint is None for s in saved):
            return True
        return [(s.weight, s.fingerprint) for s in saved] == \
            [(s.weight, s.fingerprint) for s in current]
    return saved == current


def _differences(saved, current, flags: dict) -> list[tuple[str, object, object]]:
    return [(field, getattr(saved, field), getattr(current, field)) for field in flags
            if getattr(saved, field) is not None and
            not _same(field, getattr(saved, field), getattr(current, field))]


def _follows_train_iters(field: str, current: ScheduleRecord, changed: set) -> bool:
    """Whether a schedule value differs only because it is derived from a changed flag (the
    defaults: decay over --train-iters, warm-up 10% of the decay)."""
    if field == "lr_decay_iters":
        return "train_iters" in changed and current.lr_decay_iters == current.train_iters
    if field == "lr_warmup_iters":
        return ("train_iters" in changed or "lr_decay_iters" in changed) and \
            current.lr_warmup_iters == current.lr_decay_iters // 10
    return False


def _listing(differences, flags: dict) -> str:
    return ", ".join(f"{flags[f]} {_show(f, now)} (checkpoint: {_show(f, then)})"
                     for f, then, now in differences)


# Architecture differences named in an error; the rest are counted.
SHOWN_DIFFERENCES = 3


def architecture_differences(saved: dict, current: dict) -> list[str]:
    """'--flag value (checkpoint: value)' for each config field that differs (flags spelled as
    the config field, which for most fields is the flag's name)."""
    return [f"--{name.replace('_', '-')} {current.get(name)} (checkpoint: {value})"
            for name, value in saved.items() if current.get(name) != value]


def check_architecture(where: str, saved: dict, current: dict):
    differences = architecture_differences(saved, current)
    if not differences:
        return
    more = len(differences) - SHOWN_DIFFERENCES
    listed = ", ".join(differences[:SHOWN_DIFFERENCES]) + (f" and {more} more" if more > 0
                                                          else "")
    preset = matching_preset(saved)
    flags = f"--model-preset {preset}" if preset else "its architecture flags"
    raise CheckpointError(
        f"{where}: the checkpoint is of another architecture ({listed}); leave the "
        f"architecture flags out to take the checkpoint's (--use-checkpoint-args), or pass "
        f"{flags}")


def check_data(where: str, saved: Optional[DataRecord], current: DataRecord,
               override: bool):
    if saved is None or override:
        return
    differences = _differences(saved, current, DATA_FLAGS)
    if differences:
        raise CheckpointError(
            f"{where}: {_listing(differences, DATA_FLAGS)}: the resumed run would not "
            "continue the sample stream of a run that never stopped; pass the checkpoint's "
            "values, or --override-data-settings to accept the change")


def check_schedule(where: str, saved: Optional[ScheduleRecord], current: ScheduleRecord,
                   override: bool):
    if saved is None or override:
        return
    differences = _differences(saved, current, SCHEDULE_FLAGS)
    changed = {field for field, _, _ in differences}
    differences = [d for d in differences if not _follows_train_iters(d[0], current, changed)]
    if differences:
        raise CheckpointError(
            f"{where}: {_listing(differences, SCHEDULE_FLAGS)}: the learning-rate "
            "schedule differs from the checkpoint's; pass the checkpoint's values, "
            "--override-opt_param-scheduler to follow these flags, or "
            "--use-checkpoint-opt_param-scheduler to keep the checkpoint's schedule")


def check_tokenizer(where: str, saved: CheckpointMetadata, path: str, sha256: str,
                    override: bool):
    recorded = saved.tokenizer
    if override or recorded is None or recorded.sha256 is None or recorded.sha256 == sha256:
        return
    raise CheckpointError(
        f"{where}: --tokenizer-model {path} is not the tokenizer the checkpoint was "
        f"trained with ({recorded.path}, another file content); pass that one, or "
        "--override-tokenizer to continue with this one")


def check_resume(root: str, saved: CheckpointMetadata, args: argparse.Namespace, *,
                 config: dict, data: DataRecord, schedule: ScheduleRecord, tokenizer_path: str,
                 tokenizer_sha256: str, flag: str = "--load"):
    """Every check above that applies: a --finetune run starts its data and schedule afresh,
    and --skip-train continues neither, but both keep the architecture and the tokenizer. `flag`: how the run came to this checkpoint
    (--load, or --save when it continues the checkpoint its --save holds)."""
    where = f"{flag} {root}"
    check_architecture(where, saved.config, config)
    check_tokenizer(where, saved, tokenizer_path, tokenizer_sha256, args.override_tokenizer)
    if args.finetune or getattr(args, "skip_train", False):  # no sample stream to continue
        return
    check_data(where, saved.data, data, args.override_data_settings)
    check_schedule(where, saved.schedule, schedule,
                   args.override_opt_param_scheduler or args.use_checkpoint_opt_param_scheduler)
