"""The pretraining job, top to bottom: layout, tokenizer, config, data, model, optimizer, loop.

Every check that can fail on user input runs before the first iteration and before anything is
written to --save or --tensorboard-dir (--save is only created to hold the run's lock, and
removed again when the run stops before saving), so a bad flag never leaves a half-made run
directory behind. The loop stops early, on every rank together, when training diverges or an
exit condition (signal, time limit) is met.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import shlex
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from .. import arguments, effective_config
from ..checkpoint_format import (CheckpointMetadata, Layout, latest_iteration,
                                 recorded_tokenizer)
from ..config import ConfigError, GLMConfig
from ..data.builtin import ensure_builtin_data
from ..data.datasets import (DataError, build_datasets, parse_data_path, read_sequence_lengths,
                             split_weights)
from ..data.inputs import InputError
from ..data.preprocess import load_tokenizer
from ..data.sampler import build_data_loader
from ..data.tokenizer import GLMTokenizer, padded_vocab_size
from ..data.tokenizer_record import dataset_tokenizer, record_path, tokenizer_record
from ..model.builder import build_model_chunks
from ..model.chunks import ModelChunks
from ..model.options import ExecutionOptions
from ..objectives import (BLANK_MODES, BlankInfillingConfig, SpecialTokenIds, build_collator,
                          sentence_end_table)
from ..parallel.agreement import raised_together
from ..parallel.context import ParallelContext, all_reduce, initialize_distributed, shutdown
from ..parallel.layer_split import virtual_stage_count
from ..parallel.param_roles import role_of
from ..parallel.sharding import full_shape
from ..parallel.random import seed_all
from ..presets import matching_preset
from . import checkpointing, profiling, run_records, save_directory
from .checkpointing import TrainingState
from .divergence import TrainingDiverged, divergence
from .exit_conditions import EXIT_SIGNALS, ExitConditions
from .losses import language_model_loss, mode_report_keys
from .metrics import TrainingLogger, model_flops_per_iteration, print_line
from .optimizer import DynamicLossScaler
from .resume_checks import check_resume
from .trainer import Trainer
from .writers import open_writers

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def log(text: str):
    if not dist.is_initialized() or dist.get_rank() == 0:
        print_line(text)


def microbatches_per_rank(args, ctx: ParallelContext) -> int:
    per_step = args.micro_batch_size * ctx.dp_size
    if args.global_batch_size % per_step:
        raise ConfigError(
            f"--global-batch-size {args.global_batch_size} is not divisible by "
            f"--micro-batch-size {args.micro_batch_size} x data-parallel size {ctx.dp_size}; "
            f"use a multiple of {per_step}")
    return args.global_batch_size // per_step


def _resolve_data(args, saved: CheckpointMetadata | None = None
                  ) -> tuple[list[str], GLMTokenizer]:
    """--data-path (default: the built-in corpus) and its tokenizer: --tokenizer-model, which
    must be the one the data records; else the recorded one; else, for data without a record,
    the tokenizer of the checkpoint being loaded (the resume checks compare it with the
    checkpoint's in every case)."""
    data_path = args.data_path if args.data_path is not None else [ensure_builtin_data()[0]]
    prefixes = parse_data_path(data_path)[0]
    for prefix in prefixes:  # missing or damaged data is named before its tokenizer
        read_sequence_lengths(prefix)
    try:
        # A tokenizer given is checked for itself before it is compared with the data's.
        given = load_tokenizer(args.tokenizer_model) if args.tokenizer_model else None
        model = dataset_tokenizer(prefixes, args.tokenizer_model)
        if model is None and saved is not None:
            model = recorded_tokenizer(saved)
        if model is None:
            raise ConfigError(f"--data-path {prefixes[0]} does not record its tokenizer (no "
                              f"{record_path(prefixes[0])}: not written by "
                              "tools/preprocess_data.py); give --tokenizer-model the "
                              "SentencePiece model it was preprocessed with")
        return data_path, given or load_tokenizer(model)
    except InputError as error:  # missing, not SentencePiece, or unusable for GLM
        raise ConfigError(str(error)) from None


def _check_validation_split(args):
    """Validation asked for but given no data would silently never run."""
    if args.eval_interval and args.eval_iters and split_weights(args.split)[1:2] in ([], [0.0]):
        raise ConfigError(f"--split {args.split} gives the validation split no share, but "
                          f"--eval-interval {args.eval_interval} asks for validation; give its "
                          "second weight a share (e.g. 98,2,0) or pass --eval-interval 0")


def _vocab_size(args, tokenizer: GLMTokenizer, saved: CheckpointMetadata | None) -> int:
    if saved is not None:
        vocab = saved.config["vocab_size"]
        source = f"the checkpoint in --load {args.load}"
    elif args.vocab_size is not None:
        vocab, source = args.vocab_size, "--vocab-size"
    else:
        return padded_vocab_size(tokenizer.vocab_size, args.make_vocab_size_divisible_by,
                                 args.tensor_model_parallel_size)
    if tokenizer.vocab_size > vocab:
        raise ConfigError(f"the tokenizer {tokenizer.model_path} has {tokenizer.vocab_size} "
                          f"tokens but {source} holds {vocab}; use the model's tokenizer or a "
                          "larger vocabulary")
    return vocab


def virtual_stages(args, config: GLMConfig, num_microbatches: int) -> int:
    pp = args.pipeline_model_parallel_size
    virtual = virtual_stage_count(
        config.num_layers, pp, args.num_layers_per_virtual_pipeline_stage,
        bool(args.decoder_first_pipeline_num_layers or args.decoder_last_pipeline_num_layers))
    if virtual > 1 and num_microbatches % pp:
        raise ConfigError(f"interleaved pipelining needs the number of micro-batches "
                          f"({num_microbatches}) divisible by --pipeline-model-parallel-size "
                          f"{pp}; adjust --global-batch-size")
    return virtual


def _collator(args, tokenizer: GLMTokenizer):
    """The objective's collator and, for GLM's blank infilling, the sentence-end table that
    both it and the sentence-aligned samples use."""
    config = BlankInfillingConfig.from_args(args) if args.objective != "causal" else None
    table = None
    if args.objective == "blank-infilling":
        table = sentence_end_table(tokenizer.pieces(), tokenizer.vocab_size)
    collator = build_collator(args.objective, config, SpecialTokenIds.from_tokenizer(tokenizer),
                              table, args.seq_length)
    return collator, table


def _execution_options(args, length: int) -> ExecutionOptions:
    if args.sequence_parallel and length % args.tensor_model_parallel_size:
        raise ConfigError(f"--sequence-parallel needs the batch length {length} (--seq-length "
                          f"{args.seq_length} with --objective {args.objective}) divisible by "
                          f"--tensor-model-parallel-size {args.tensor_model_parallel_size}")
    return arguments.execution_options(args)


def _saved_checkpoint(args) -> CheckpointMetadata | None:
    """The metadata of the checkpoint --load names; None (said) when the folder holds none.
    A --load that does not exist is a typo, never a fresh start."""
    if not args.load:
        return None
    if not os.path.isdir(args.load):
        raise ConfigError(f"--load {args.load} does not exist; give the --save folder of an "
                          "earlier run, or leave --load out to start from scratch")
    metadata = checkpointing.read_metadata(args.load, args.ckpt_step)
    if metadata is None:
        if args.exit_on_missing_checkpoint:
            raise ConfigError(f"--load {args.load} holds no checkpoint (no "
                              f"{checkpointing.TRACKER}) and --exit-on-missing-checkpoint is "
                              "given")
        log(f"no checkpoint found in --load {args.load}: starting from scratch")
    return metadata


def build_scheduler(args, optimizer) -> OptimizerParamScheduler:
    if args.lr_decay_style == "WSD" and args.lr_wsd_decay_iters is None:
        raise ConfigError("--lr-decay-style WSD needs --lr-wsd-decay-iters")
    if args.lr_warmup_iters >= args.lr_decay_iters:
        raise ConfigError(f"--lr-warmup-iters {args.lr_warmup_iters} must be smaller than "
                          f"--lr-decay-iters {args.lr_decay_iters}")
    return OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=args.lr, min_lr=args.min_lr,
        lr_warmup_steps=args.lr_warmup_iters, lr_decay_steps=args.lr_decay_iters,
        lr_decay_style=args.lr_decay_style, start_wd=args.weight_decay,
        end_wd=args.weight_decay, wd_incr_steps=args.train_iters, wd_incr_style="constant",
        wsd_decay_steps=args.lr_wsd_decay_iters, lr_wsd_decay_style=args.lr_wsd_decay_style,
        override_opt_param_scheduler=args.override_opt_param_scheduler,
        use_checkpoint_opt_param_scheduler=args.use_checkpoint_opt_param_scheduler)


def params_dtype(args) -> torch.dtype:
    return _DTYPES.get("bf16" if args.bf16 else "fp16" if args.fp16 else "", torch.float32)


def build_trainer(args, model: ModelChunks, ctx: ParallelContext, num_microbatches: int,
                  loss_fn) -> Trainer:
    """The optimizer, loss scaling and forward-backward that the optimizer flags describe."""
    scaler = None
    if args.fp16:
        scaler = DynamicLossScaler(args.loss_scale or args.initial_loss_scale,
                                   args.min_loss_scale, args.loss_scale_window, args.hysteresis,
                                   dynamic=args.loss_scale is None)
    return Trainer(
        model, ctx, num_microbatches=num_microbatches, loss_fn=loss_fn, lr=args.lr,
        weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_eps, clip_grad=args.clip_grad, loss_scaler=scaler,
        distributed_optimizer=args.use_distributed_optimizer)


@dataclass
class Job:
    args: argparse.Namespace
    ctx: ParallelContext
    config: GLMConfig
    model: ModelChunks
    trainer: Trainer
    scheduler: OptimizerParamScheduler
    datasets: tuple
    collator: object  # (samples, rng) -> batch of static length collator.length
    records: dict  # what checkpoints record beside the weights (CheckpointMetadata fields)
    arguments: dict = field(default_factory=dict)  # the effective configuration
    arguments_text: str = ""  # ... as printed at start-up
    # Per split (1: validation, 2: test), made at the first evaluation and reused after.
    evaluation_batches: dict = field(default_factory=dict)
    last_checkpoint: tuple[str, int] | None = None  # (directory, iteration) loaded or saved

    def last_checkpoint_text(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint of this run precedes it"
        root, iteration = self.last_checkpoint
        return (f"the last good checkpoint is iteration {iteration} in {os.path.abspath(root)} "
                f"(--load {root}, e.g. with a lower --lr)")


def setup(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> tuple[Job, TrainingState]:
    """Everything before the first iteration; `cleanup` gets what must be undone at exit."""
    ctx = initialize_distributed(args.tensor_model_parallel_size,
                                 args.pipeline_model_parallel_size, args.device,
                                 timeout_minutes=args.distributed_timeout_minutes)
    check_output_folders(args)
    layout = ctx.layout
    num_microbatches = microbatches_per_rank(args, ctx)
    seed_all(ctx, args.seed)
    _check_validation_split(args)
    saved = _saved_checkpoint(args)
    if args.skip_train and (saved is None or not args.eval_iters):
        raise ConfigError("--skip-train evaluates a checkpoint on --eval-iters batches of the "
                          "validation and test splits: give --load with a checkpoint and "
                          "--eval-iters of at least 1")
    architecture, implied = effective_config.architecture(
        args, set(args.given_flags), saved.config if saved is not None else None)
    data_path, tokenizer = _resolve_data(args, saved)
    collator, sentence_end = _collator(args, tokenizer)
    options = _execution_options(args, collator.length)
    config = effective_config.model_config(args, architecture,
                                           _vocab_size(args, tokenizer, saved))
    config.check_tensor_parallel(layout.tensor)
    virtual = virtual_stages(args, config, num_microbatches)
    records = {"layout": Layout(layout.tensor, layout.pipeline, layout.data, virtual,
                                args.decoder_first_pipeline_num_layers,
                                args.decoder_last_pipeline_num_layers),
               "tokenizer": tokenizer_record(tokenizer),
               "data": run_records.data_record(args, data_path),
               "schedule": run_records.schedule_record(args),
               "precision": run_records.precision(args)}
    if saved is not None:
        check_resume(args.load, saved, args, config=config.to_dict(), data=records["data"],
                     schedule=records["schedule"], tokenizer_path=tokenizer.model_path,
                     tokenizer_sha256=records["tokenizer"].sha256,
                     flag="--save" if getattr(args, "load_from_save", False) else "--load")
    # Every evaluation reads the same first validation samples, so losses are comparable.
    evaluates = args.eval_interval or args.skip_train
    eval_samples = args.eval_iters * args.global_batch_size if evaluates else 0
    train_samples = 0 if args.skip_train else args.train_iters * args.global_batch_size
    datasets = build_datasets(
        data_path=data_path, split=args.split, seq_length=args.seq_length, seed=args.seed,
        num_samples=(train_samples, eval_samples, eval_samples),
        tokenizer=tokenizer, sentence_end=sentence_end)
    log(f"layout {layout} on {ctx.device} ({torch.get_num_threads()} threads per rank), "
        f"{num_microbatches} micro-batches of "
        f"{args.micro_batch_size} x {collator.length} tokens per rank per iteration, objective "
        f"{args.objective}; data {' '.join(data_path)}; "
        f"tokenizer {tokenizer.model_path} ({tokenizer.vocab_size} tokens, padded to "
        f"{config.vocab_size})")

    dtype = params_dtype(args)
    model = build_model_chunks(
        config, ctx, args.seed, params_dtype=dtype, options=options, virtual_stages=virtual,
        first_stage_layers=args.decoder_first_pipeline_num_layers,
        last_stage_layers=args.decoder_last_pipeline_num_layers)
    trainer = build_trainer(args, model, ctx, num_microbatches, language_model_loss)
    optimizer = trainer.optimizer
    scheduler = build_scheduler(args, optimizer)
    if not args.skip_train:
        own_save_directory(args, ctx, cleanup)
    progress = TrainingState()
    if saved is not None:
        progress = checkpointing.load_checkpoint(
            args.load, model, optimizer, None if args.skip_train else scheduler, ctx,
            iteration=args.ckpt_step,
            load_optim=not (args.no_load_optim or args.skip_train),
            load_rng=not args.no_load_rng,
            finetune=args.finetune, log=log)
        log(f"loaded {args.load} at iteration {progress.iteration} "
            f"({progress.consumed_samples} samples consumed)")
    preset = args.model_preset or matching_preset(config.to_dict()) or "(custom)"
    log(f"model {preset}: {config.num_layers} layers x {config.hidden_size}, "
        f"{_parameter_count(model, ctx) / 1e6:.2f}M parameters in all, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M on this rank, {dtype}")
    settings = effective_config.effective_arguments(
        args, config, data_path=data_path, tokenizer_model=tokenizer.model_path)
    job = Job(args, ctx, config, model, trainer, scheduler, datasets, collator, records,
              arguments=settings, arguments_text=effective_config.format_arguments(
                  settings, args.implied + implied))
    log(job.arguments_text)
    if saved is not None and not args.finetune:
        job.last_checkpoint = (args.load, progress.iteration)
    return job, progress


def _parameter_count(model: ModelChunks, ctx: ParallelContext) -> int:
    """The model's parameters over all ranks: each tensor-parallel shard counted at its full
    size once, the last stage's copy of tied embeddings not at all, pipeline stages summed."""
    local = sum(math.prod(full_shape(p, ctx.tp_size)) for p in model.parameters()
                if role_of(p).tied_copy_of is None)
    total = torch.tensor([local], dtype=torch.float64, device=ctx.device)
    all_reduce(total, ctx.pp_group)
    return int(total.item())


def check_output_folders(args):
    """The folders a run writes, found unusable before its first iteration, not at its first
    save."""
    save_directory.check_writable(args.save, "--save")
    save_directory.check_writable(args.tensorboard_dir, "--tensorboard-dir")
    if args.profile:
        save_directory.check_writable(profiling.trace_dir(args), "--profile-dir")


def own_save_directory(args, ctx: ParallelContext, cleanup: contextlib.ExitStack):
    """Rank 0 locks --save for this run (released at exit) and clears what crashed saves left;
    a refusal stops every rank."""
    if not args.save:
        return
    with raised_together(ctx, (checkpointing.CheckpointError,)):
        if ctx.is_rank_zero:
            lock = save_directory.SaveLock(args.save)
            note = lock.acquire()
            cleanup.callback(lock.release)
            for text in ([note] if note else []) + save_directory.remove_leftovers(args.save):
                log(text)


def _loader(job: Job, split: int, consumed: int):
    return build_data_loader(job.datasets[split], job.collator, consumed,
                             job.args.micro_batch_size, job.ctx.dp_rank, job.ctx.dp_size,
                             seed=job.args.seed, split=split, num_workers=job.args.num_workers,
                             workers_ignore=EXIT_SIGNALS if job.args.exit_signal_handler else ())


def _save(job: Job, progress: TrainingState):
    if not job.args.save or job.last_checkpoint == (job.args.save, progress.iteration):
        return
    checkpointing.save_checkpoint(job.args.save, progress, job.model, job.trainer.optimizer,
                                  job.scheduler, job.config, job.ctx, **job.records)
    job.last_checkpoint = (job.args.save, progress.iteration)
    if job.args.keep_last_checkpoints and job.ctx.is_rank_zero:
        save_directory.prune(job.args.save, job.args.keep_last_checkpoints, log)
    log(f"saved checkpoint at iteration {progress.iteration} to "
        f"{os.path.abspath(checkpointing.iteration_dir(job.args.save, progress.iteration))}")


_SPLIT_NAMES = {1: "validation", 2: "test"}


def _validate(job: Job, logger: TrainingLogger, progress: TrainingState, split: int = 1):
    """The loss on --eval-iters batches of a split (1: validation, 2: test), logged."""
    if job.datasets[split] is None or job.args.eval_iters == 0:
        return
    # The same samples (and masks) every time, so successive values are comparable: read and
    # collated once.
    if split not in job.evaluation_batches:
        count = job.args.eval_iters * job.trainer.num_microbatches
        job.evaluation_batches[split] = list(itertools.islice(_loader(job, split, 0), count))
    outputs = job.trainer.evaluate(iter(job.evaluation_batches[split]), job.args.eval_iters)
    loss = sum(output.mean_loss(job.ctx) for output in outputs) / len(outputs)
    parts = _span_kind_losses(job, outputs)
    if job.ctx.is_rank_zero:
        logger.validation(progress.iteration, loss, progress.consumed_samples, parts,
                          split=_SPLIT_NAMES[split])


def evaluate_checkpoint(job: Job, progress: TrainingState) -> TrainingState:
    """--skip-train: the loaded checkpoint's loss and perplexity on the validation and test
    splits; nothing trained, nothing saved."""
    writer = open_writers(job.args, job.arguments) if job.ctx.is_rank_zero else None
    logger = TrainingLogger(job.args.log_interval, job.args.train_iters, writer)
    for split in _SPLIT_NAMES:
        _validate(job, logger, progress, split)
    if writer is not None:
        writer.close()
    return progress


# How the validation log names each span kind of blank infilling.
_SPAN_KIND_NAMES = {"token": "token spans", "sentence": "sentences", "document": "documents"}


def _span_kind_losses(job: Job, outputs) -> dict[str, float]:
    """Blank infilling: the token-weighted validation loss of each span kind drawn, so a user
    sees which kind learns (`lm loss validation` stays the total)."""
    if job.args.objective != "blank-infilling":
        return {}
    keys = mode_report_keys()
    totals = dict.fromkeys(keys, 0.0)
    for output in outputs:
        for key, value in output.summed_reports(job.ctx, keys).items():
            totals[key] += value
    return {_SPAN_KIND_NAMES[kind]: totals[f"{kind} loss sum"] / totals[f"{kind} tokens"]
            for kind in BLANK_MODES if totals[f"{kind} tokens"]}


def train(job: Job, progress: TrainingState, exits: ExitConditions) -> TrainingState:
    try:
        return _train(job, progress, exits)
    except TrainingDiverged as error:
        raise TrainingDiverged(f"{error}; {job.last_checkpoint_text()}") from None


def training_iteration(trainer: Trainer, scheduler: OptimizerParamScheduler, batches,
                       logger: TrainingLogger, progress: TrainingState, *, batch_size: int,
                       tokens: int, flops: float, check_for_nan: bool):
    """One optimizer step and its bookkeeping: the schedule, the progress, the log line and
    the divergence check."""
    ctx = trainer.ctx
    started = time.perf_counter()
    output, applied, grad_norm = trainer.train_step(batches)
    loss = output.mean_loss(ctx)
    if applied:
        scheduler.step(1)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    progress.iteration += 1
    progress.consumed_samples += batch_size
    scaler = trainer.optimizer.loss_scaler
    if ctx.is_rank_zero:
        logger.iteration(
            progress.iteration, loss=loss, lr=trainer.optimizer.param_groups[0]["lr"],
            grad_norm=grad_norm, loss_scale=scaler.scale if scaler else 1.0, applied=applied,
            elapsed=elapsed, consumed_samples=progress.consumed_samples, batch_size=batch_size,
            tokens=tokens, flops=flops, world_size=ctx.world_size, device=ctx.device)
    reason = divergence(loss, grad_norm, scaler) if check_for_nan else None
    if reason is not None:
        raise TrainingDiverged(f"iteration {progress.iteration}: {reason}")


def _train(job: Job, progress: TrainingState, exits: ExitConditions) -> TrainingState:
    args = job.args
    ctx = job.ctx
    writer = open_writers(args, job.arguments) if ctx.is_rank_zero else None
    if writer is not None:  # preformatted, as printed (Markdown would reflow it)
        writer.add_text("arguments", "    " + job.arguments_text.replace("\n", "\n    "),
                        progress.iteration)
    logger = TrainingLogger(args.log_interval, args.train_iters, writer)
    # Counted over the rows the model runs: blank infilling's are longer than --seq-length.
    flops = model_flops_per_iteration(job.config, args.global_batch_size, job.collator.length)
    tokens = args.global_batch_size * job.collator.length
    stop_at = min(args.train_iters, args.exit_interval or args.train_iters)
    stopping = None
    if progress.iteration >= stop_at:
        log(f"iteration {progress.iteration} already reached (--train-iters {args.train_iters}"
            f"{f', --exit-interval {args.exit_interval}' if args.exit_interval else ''}): "
            "nothing to train; raise --train-iters (with --override-opt_param-scheduler) to "
            "train on")
    if progress.iteration == 0 and args.eval_interval:
        _validate(job, logger, progress)
    # Closed on the way out, errors included: its workers are shut down, not left to the
    # interpreter's exit (which signals them with SIGTERM, ignored under --exit-signal-handler).
    with contextlib.closing(iter(_loader(job, 0, progress.consumed_samples))) as batches, \
            profiling.profiled_iterations(args, ctx) as profile_step:
        while progress.iteration < stop_at and stopping is None:
            training_iteration(job.trainer, job.scheduler, batches, logger, progress,
                               batch_size=args.global_batch_size, tokens=tokens, flops=flops,
                               check_for_nan=args.check_for_nan_in_loss_and_grad)
            profile_step()
            if args.eval_interval and progress.iteration % args.eval_interval == 0:
                _validate(job, logger, progress)
            if args.save_interval and progress.iteration % args.save_interval == 0:
                _save(job, progress)
            stopping = exits.reason(ctx)
    if stopping is not None:
        log(f"{stopping}: saving iteration {progress.iteration} and exiting")
    elif args.eval_interval and progress.iteration % args.eval_interval:
        _validate(job, logger, progress)
    _save(job, progress)
    if writer is not None:
        writer.close()
    if writer is not None and args.tensorboard_dir:
        log(f"TensorBoard logs in {os.path.abspath(args.tensorboard_dir)}")
    return progress


# Raised alike on every rank (agreed where a rank could meet them alone): the ranks leave together.
RUN_ERRORS = (ConfigError, DataError, checkpointing.CheckpointError, TrainingDiverged)


def _announce_run_directories(args):
    """First of all, what the run continues or keeps: rank 0 speaks for the job."""
    resumed = save_directory.resume_from_save(args)
    if int(os.environ.get("RANK", "0")) == 0:
        if resumed:
            print_line(resumed)
        elif not args.save:
            print_line("no --save: this run keeps no checkpoint")


class Interrupted(Exception):
    """Ctrl-C: the message says where the run stopped, what was saved and how to resume."""


# Flags a resume command leaves out: --save continues its own checkpoint.
_NOT_RESUMED = {"--load": 1, "--ckpt-step": 1, "--finetune": 0}


def resume_command(argv: list[str], script: str = "pretrain_glm.py",
                   load: str | None = None) -> str:
    """The command that continues this run from its --save: the same flags, less those that
    chose another starting point (plus `--load load` for scripts that do not continue --save
    by themselves)."""
    kept, skip = [], 0
    for arg in argv:
        name = arg.split("=", 1)[0]
        if skip:
            skip -= 1
        elif name in _NOT_RESUMED:
            skip = _NOT_RESUMED[name] if "=" not in arg else 0
        else:
            kept.append(arg)
    launcher = "python" if int(os.environ.get("WORLD_SIZE", "1")) == 1 else \
        f"torchrun --nproc_per_node {os.environ.get('LOCAL_WORLD_SIZE', '?')}"
    return shlex.join([*launcher.split(), script, *kept, *(["--load", load] if load else [])])


def interrupted(args, progress: TrainingState | None, argv: list[str],
                script: str = "pretrain_glm.py", load_flag: bool = False) -> Interrupted:
    """What a Ctrl-C says: where the run stopped, its last save and the command that resumes
    it (with `--load` for scripts that need it, `load_flag`)."""
    where = f"interrupted at iteration {progress.iteration}" if progress else \
        "interrupted during set-up"
    saved = latest_iteration(args.save) if args.save and os.path.isdir(args.save) else None
    if saved is None:
        return Interrupted(f"{where}; nothing saved" + ("" if args.save else " (no --save)"))
    command = resume_command(argv, script, args.save if load_flag else None)
    return Interrupted(f"{where}; the last saved iteration is {saved} in {args.save}; resume "
                       f"with: {command}")


def pretrain(args: argparse.Namespace | None = None) -> TrainingState:
    """The whole job for parsed flags (arguments.parse_args; default: sys.argv's)."""
    started = time.time()  # --exit-duration-in-mins counts from here, set-up included
    args = args if args is not None else arguments.parse_args()
    _announce_run_directories(args)
    exits = ExitConditions(handle_signals=args.exit_signal_handler,
                           duration_minutes=args.exit_duration_in_mins, started=started)
    together, progress = False, None
    try:
        with exits, contextlib.ExitStack() as cleanup:
            job, progress = setup(args, cleanup)
            if args.skip_train:
                progress = evaluate_checkpoint(job, progress)
            else:
                progress = train(job, progress, exits)
        together = True
        return progress
    except RUN_ERRORS:
        together = True
        raise
    except KeyboardInterrupt:
        raise interrupted(args, progress, args.argv) from None
    finally:
        shutdown(barrier=together)
