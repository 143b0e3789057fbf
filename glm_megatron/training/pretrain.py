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
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from .. import arguments
from ..checkpoint_format import CheckpointMetadata, Layout
from ..config import ConfigError, GLMConfig
from ..data.builtin import ensure_builtin_data
from ..data.datasets import DataError, build_datasets, split_weights
from ..data.inputs import InputError
from ..data.preprocess import load_tokenizer
from ..data.sampler import build_data_loader
from ..data.tokenizer import GLMTokenizer, padded_vocab_size
from ..model.builder import build_model_chunks
from ..model.chunks import ModelChunks
from ..model.options import ExecutionOptions
from ..objectives import (BLANK_MODES, BlankInfillingConfig, SpecialTokenIds, build_collator,
                          sentence_end_table)
from ..parallel.agreement import raised_together
from ..parallel.context import ParallelContext, initialize_distributed, shutdown
from ..parallel.random import seed_all
from . import checkpointing, profiling, run_records, save_directory
from .checkpointing import TrainingState
from .divergence import TrainingDiverged, divergence
from .exit_conditions import ExitConditions, ignore_exit_signals
from .losses import language_model_loss, mode_report_keys
from .metrics import TrainingLogger, model_flops_per_iteration, open_tensorboard, print_line
from .optimizer import DynamicLossScaler
from .resume_checks import check_resume
from .trainer import Trainer

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


def _resolve_data(args) -> tuple[list[str], GLMTokenizer]:
    if args.data_path is None or args.tokenizer_model is None:
        builtin_prefix, builtin_tokenizer = ensure_builtin_data()
    data_path = args.data_path if args.data_path is not None else [builtin_prefix]
    try:
        return data_path, load_tokenizer(args.tokenizer_model or builtin_tokenizer)
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
    per_chunk = args.num_layers_per_virtual_pipeline_stage
    if per_chunk is None:
        return 1
    pp = args.pipeline_model_parallel_size
    if pp == 1:
        raise ConfigError("--num-layers-per-virtual-pipeline-stage needs "
                          "--pipeline-model-parallel-size > 1")
    if args.decoder_first_pipeline_num_layers or args.decoder_last_pipeline_num_layers:
        raise ConfigError("--decoder-first/last-pipeline-num-layers cannot be combined with "
                          "--num-layers-per-virtual-pipeline-stage")
    if config.num_layers % (pp * per_chunk):
        raise ConfigError(f"--num-layers {config.num_layers} is not divisible by "
                          f"--pipeline-model-parallel-size {pp} x "
                          f"--num-layers-per-virtual-pipeline-stage {per_chunk}")
    if num_microbatches % pp:
        raise ConfigError(f"interleaved pipelining needs the number of micro-batches "
                          f"({num_microbatches}) divisible by --pipeline-model-parallel-size "
                          f"{pp}; adjust --global-batch-size")
    return config.num_layers // (pp * per_chunk)


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
    if not args.load:
        return None
    metadata = (checkpointing.read_metadata(args.load, args.ckpt_step)
                if os.path.isdir(args.load) else None)
    if metadata is None:
        log(f"no checkpoint found in --load {args.load}: starting from scratch")
    return metadata


def _check_config_matches(config: GLMConfig, saved: CheckpointMetadata | None, args):
    if saved is None:
        return
    differing = {k: (v, config.to_dict().get(k)) for k, v in saved.config.items()
                 if config.to_dict().get(k) != v}
    if differing:
        details = ", ".join(f"{k}: saved {a}, flags {b}" for k, (a, b) in differing.items())
        raise ConfigError(f"--load {args.load} holds a different architecture ({details}); "
                          "pass the same --model-preset and architecture flags")


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
    validation_batches: list | None = None  # made at the first evaluation, reused after
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
    save_directory.check_writable(args.save, "--save")
    save_directory.check_writable(args.tensorboard_dir, "--tensorboard-dir")
    if args.profile:
        save_directory.check_writable(profiling.trace_dir(args), "--profile-dir")
    layout = ctx.layout
    num_microbatches = microbatches_per_rank(args, ctx)
    seed_all(ctx, args.seed)
    _check_validation_split(args)
    data_path, tokenizer = _resolve_data(args)
    collator, sentence_end = _collator(args, tokenizer)
    options = _execution_options(args, collator.length)
    saved = _saved_checkpoint(args)
    config = arguments.model_config(args, _vocab_size(args, tokenizer, saved))
    config.check_tensor_parallel(layout.tensor)
    _check_config_matches(config, saved, args)
    virtual = virtual_stages(args, config, num_microbatches)
    records = {"layout": Layout(layout.tensor, layout.pipeline, layout.data, virtual,
                                args.decoder_first_pipeline_num_layers,
                                args.decoder_last_pipeline_num_layers),
               "tokenizer": run_records.tokenizer_record(tokenizer),
               "data": run_records.data_record(args, data_path),
               "schedule": run_records.schedule_record(args),
               "precision": run_records.precision(args)}
    if saved is not None:
        check_resume(args.load, saved, args, data=records["data"], schedule=records["schedule"],
                     tokenizer_path=tokenizer.model_path,
                     tokenizer_sha256=records["tokenizer"].sha256)
    # Every evaluation reads the same first validation samples, so losses are comparable.
    eval_samples = args.eval_iters * args.global_batch_size if args.eval_interval else 0
    datasets = build_datasets(
        data_path=data_path, split=args.split, seq_length=args.seq_length, seed=args.seed,
        num_samples=(args.train_iters * args.global_batch_size, eval_samples, eval_samples),
        tokenizer=tokenizer, sentence_end=sentence_end)
    log(f"layout {layout} on {ctx.device}, {num_microbatches} micro-batches of "
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
    _own_save_directory(args, ctx, cleanup)
    progress = TrainingState()
    if saved is not None:
        progress = checkpointing.load_checkpoint(
            args.load, model, optimizer, scheduler, ctx, iteration=args.ckpt_step,
            load_optim=not args.no_load_optim, load_rng=not args.no_load_rng,
            finetune=args.finetune, log=log)
        log(f"loaded {args.load} at iteration {progress.iteration} "
            f"({progress.consumed_samples} samples consumed)")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {args.model_preset}: {config.num_layers} layers x {config.hidden_size}, "
        f"{n_params / 1e6:.2f}M parameters on this rank, {dtype}")
    job = Job(args, ctx, config, model, trainer, scheduler, datasets, collator, records)
    if saved is not None and not args.finetune:
        job.last_checkpoint = (args.load, progress.iteration)
    return job, progress


def _own_save_directory(args, ctx: ParallelContext, cleanup: contextlib.ExitStack):
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
                             worker_init_fn=ignore_exit_signals if job.args.exit_signal_handler
                             else None)


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


def _validate(job: Job, logger: TrainingLogger, progress: TrainingState):
    if job.datasets[1] is None or job.args.eval_iters == 0:
        return
    # The same validation samples (and masks) every time, so successive values are comparable:
    # read and collated once.
    if job.validation_batches is None:
        count = job.args.eval_iters * job.trainer.num_microbatches
        job.validation_batches = list(itertools.islice(_loader(job, 1, 0), count))
    outputs = job.trainer.evaluate(iter(job.validation_batches), job.args.eval_iters)
    loss = sum(output.mean_loss(job.ctx) for output in outputs) / len(outputs)
    parts = _span_kind_losses(job, outputs)
    if job.ctx.is_rank_zero:
        logger.validation(progress.iteration, loss, progress.consumed_samples, parts)


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
    writer = open_tensorboard(args.tensorboard_dir) if ctx.is_rank_zero else None
    logger = TrainingLogger(args.log_interval, args.train_iters, writer)
    batches = iter(_loader(job, 0, progress.consumed_samples))
    # Counted over the rows the model runs: blank infilling's are longer than --seq-length.
    flops = model_flops_per_iteration(job.config, args.global_batch_size, job.collator.length)
    tokens = args.global_batch_size * job.collator.length
    stop_at = min(args.train_iters, args.exit_interval or args.train_iters)
    stopping = None
    if progress.iteration == 0 and args.eval_interval:
        _validate(job, logger, progress)
    with profiling.profiled_iterations(args, ctx) as profile_step:
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
        log(f"TensorBoard logs in {os.path.abspath(args.tensorboard_dir)}")
    return progress


# Raised alike on every rank (agreed where a rank could meet them alone): the ranks leave together.
RUN_ERRORS = (ConfigError, DataError, checkpointing.CheckpointError, TrainingDiverged)


def pretrain(argv=None) -> TrainingState:
    started = time.time()  # --exit-duration-in-mins counts from here, set-up included
    args = arguments.parse_args(argv)
    exits = ExitConditions(handle_signals=args.exit_signal_handler,
                           duration_minutes=args.exit_duration_in_mins, started=started)
    together = False
    try:
        with exits, contextlib.ExitStack() as cleanup:
            job, progress = setup(args, cleanup)
            progress = train(job, progress, exits)
        together = True
        return progress
    except RUN_ERRORS:
        together = True
        raise
    finally:
        shutdown(barrier=together)
