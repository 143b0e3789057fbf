"""The finetuning job, top to bottom: pretrained checkpoint, layout, data, model, then training
over epochs with validation, the best checkpoint and predictions, or, with --epochs 0, an
evaluation of the pretrained checkpoint as it is (GLM's zero-shot setting).

It runs on pretraining's machinery: the same Trainer (gradient buffer, mixed-precision AdamW,
forward-backward function of any layout), LR schedule, sampler, checkpoints and log lines.
Every check that can fail on user input runs before anything is written to --save,
--tensorboard-dir or --predictions.

--save holds the run's checkpoints (resume with --load) and, in `best/`, the weights of the
best validation result so far (by the task's first metric), which export and --predictions use.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from typing import Optional

import torch.distributed as dist

from ..arguments import execution_options
from ..checkpoint_format import CheckpointMetadata, DataRecord
from ..config import ConfigError
from ..convert.checkpoint import CheckpointReader
from ..model.chunks import ModelChunks
from ..parallel.context import ParallelContext, initialize_distributed, shutdown
from ..parallel.random import seed_all
from ..parallel.schedules import get_forward_backward_func
from ..data.tokenizer_record import tokenizer_record
from ..training import checkpointing, run_records
from ..training.checkpointing import CheckpointError, TrainingState
from ..training.metrics import TrainingLogger, model_flops_per_iteration
from ..training.profiling import profiled_iterations
from ..training.writers import open_writers
from ..training.exit_conditions import ExitConditions
from ..training.pretrain import (build_scheduler, build_trainer, check_output_folders,
                                 interrupted, log, microbatches_per_rank, own_save_directory,
                                 params_dtype, training_iteration, virtual_stages)
from ..data.sampler import build_data_loader
from . import arguments
from .data import EpochStream, FinetuneData, prepare_data
from .evaluation import SPLIT_NAMES, Evaluation, SplitEvaluator, write_predictions
from .heads import build_finetune_model, loss_function
from .metrics import LOWER_IS_BETTER
from .pretrained import Pretrained, load_weights, read_pretrained
from .settings import BestResult, FinetuneSettings, saved_settings

BEST_DIR = "best"


@dataclass
class FinetuneJob:
    args: argparse.Namespace
    ctx: ParallelContext
    pretrained: Pretrained
    data: FinetuneData
    settings: FinetuneSettings
    model: ModelChunks
    forward_backward: object  # parallel.schedules.ForwardBackward
    evaluators: dict  # "valid" / "test" -> SplitEvaluator
    trainer: object = None  # training.trainer.Trainer; None for --epochs 0
    scheduler: object = None
    stream: Optional[EpochStream] = None
    # The latest validation: its iteration (every rank) and result (rank 0), reused for
    # predictions of the validation data by the same weights.
    validated_at: Optional[int] = None
    validation: Optional[Evaluation] = None


def _check_head_flags(args, head: str, pretrained: Pretrained):
    if head == "seq-cls":
        if args.pipeline_model_parallel_size > 1:
            raise ConfigError("--head seq-cls runs without pipeline parallelism; use "
                              "--pipeline-model-parallel-size 1 (or --head cloze)")
        cloze_only = [flag for flag, given in (("--multi-token", args.multi_token is not None),
                                               ("--length-penalty", args.length_penalty),
                                               ("--pattern", args.pattern),
                                               ("--verbalizer", args.verbalizer)) if given]
        if cloze_only:
            raise ConfigError(f"{cloze_only[0]} applies to --head cloze; drop it for --head "
                              "seq-cls")
        if args.epochs == 0 and not pretrained.is_classifier:
            raise ConfigError(f"--epochs 0 evaluates --pretrained-checkpoint as it is, but "
                              f"{pretrained.path} has no trained classifier for --head seq-cls; "
                              "use --head cloze (zero-shot) or train with --epochs")
    if args.sequence_parallel and args.seq_length % args.tensor_model_parallel_size:
        raise ConfigError(f"--sequence-parallel needs --seq-length {args.seq_length} divisible "
                          f"by --tensor-model-parallel-size {args.tensor_model_parallel_size}")


def _resumed(args, pretrained: Pretrained, head: str) -> Optional[CheckpointMetadata]:
    """The metadata of the --load checkpoint this run continues, checked against the flags."""
    if not args.load:
        return None
    if args.epochs == 0:
        raise ConfigError("--load resumes training; --epochs 0 evaluates "
                          "--pretrained-checkpoint (drop --load)")
    saved = checkpointing.read_metadata(args.load) if os.path.isdir(args.load) else None
    if saved is None:
        log(f"no checkpoint found in --load {args.load}: starting from "
            f"--pretrained-checkpoint {pretrained.path}")
        return None
    settings = saved_settings(saved)
    if settings is None:
        raise CheckpointError(f"--load {args.load} holds a pretraining checkpoint; start from it "
                              f"with --pretrained-checkpoint {args.load}")
    if (settings.task, settings.head) != (args.task, head):
        raise CheckpointError(f"--load {args.load} is a run of --task {settings.task} --head "
                              f"{settings.head}; resume it with those flags or --save elsewhere")
    if saved.config != pretrained.config.to_dict():
        raise CheckpointError(f"--load {args.load} holds another architecture than "
                              f"--pretrained-checkpoint {pretrained.path}; give the checkpoint "
                              "that run started from")
    return saved


def _prior_settings(args, pretrained: Pretrained, saved: Optional[CheckpointMetadata]):
    """Settings of an earlier run whose label ids this run keeps: the resumed run's, or those of
    a finetuned --pretrained-checkpoint of the same task."""
    if saved is not None:
        return saved_settings(saved)
    if pretrained.settings is not None and pretrained.settings.task == args.task:
        return pretrained.settings
    return None


def _iterations_per_epoch(args, data: FinetuneData) -> int:
    count = len(data.splits["train"].examples) if "train" in data.splits else 0
    if args.epochs and count < args.global_batch_size:
        raise ConfigError(f"--global-batch-size {args.global_batch_size} is larger than the "
                          f"{count} examples of --train-data {args.train_data}; lower it")
    return count // args.global_batch_size


def setup(args: argparse.Namespace, cleanup: contextlib.ExitStack
          ) -> tuple[FinetuneJob, TrainingState]:
    """Everything before the first iteration; `cleanup` gets what must be undone at exit."""
    pretrained = read_pretrained(args.pretrained_checkpoint, args.tokenizer_model)
    config = pretrained.config
    head = args.head or ("seq-cls" if pretrained.is_classifier else "cloze")
    _check_head_flags(args, head, pretrained)
    check_output_folders(args)
    if args.seq_length > config.max_position_embeddings:
        raise ConfigError(f"--seq-length {args.seq_length} exceeds the "
                          f"{config.max_position_embeddings} positions of "
                          f"--pretrained-checkpoint {pretrained.path}; shorten it")
    ctx = initialize_distributed(args.tensor_model_parallel_size,
                                 args.pipeline_model_parallel_size, args.device,
                                 timeout_minutes=args.distributed_timeout_minutes)
    num_microbatches = microbatches_per_rank(args, ctx)
    seed_all(ctx, args.seed)
    config.check_tensor_parallel(ctx.tp_size)
    virtual = virtual_stages(args, config, num_microbatches)
    saved = _resumed(args, pretrained, head)
    prior = _prior_settings(args, pretrained, saved)
    data = prepare_data(args, head, pretrained.tokenizer, pretrained.prepend_cls,
                        prior.label_set if prior is not None else None)
    per_epoch = _iterations_per_epoch(args, data)
    arguments.set_schedule(args, args.epochs * per_epoch)
    args.tokenizer_model = pretrained.tokenizer.model_path  # recorded, found by exports
    settings = FinetuneSettings(args.task, head, data.scoring, data.task.label_set,
                                args.length_penalty, args.seq_length, pretrained.prepend_cls,
                                prior.best if saved is not None else None)
    for split, encoded in data.splits.items():
        cut = f", {encoded.num_truncated} cut to fit (--truncate)" if encoded.num_truncated \
            else ""
        log(f"{split}: {len(encoded.examples)} examples of {encoded.source}{cut}")
    length = (f"{args.epochs} epochs of {per_epoch} iterations" if args.epochs
              else "evaluation only (--epochs 0)")
    log(f"layout {ctx.layout} on {ctx.device}; task {args.task}, head {head} "
        f"({data.scoring}), {length}, {num_microbatches} micro-batches of "
        f"{args.micro_batch_size} examples per rank per iteration")

    label_set = data.task.label_set
    model = build_finetune_model(
        head, config, ctx, args.seed, params_dtype=params_dtype(args),
        options=execution_options(args),
        virtual_stages=virtual, first_stage_layers=args.decoder_first_pipeline_num_layers,
        last_stage_layers=args.decoder_last_pipeline_num_layers,
        num_labels=label_set.num_labels if label_set is not None else None,
        pad_token_id=pretrained.tokenizer.pad)
    loss_fn = loss_function(head, data.problem_type, args.length_penalty)
    if saved is None:  # before the optimizer copies the weights into its fp32 masters
        fresh = load_weights(model, pretrained.reader, ctx)
        log(f"loaded the weights of {pretrained.path} (iteration {pretrained.reader.iteration})"
            + (f"; new: {', '.join(fresh)}" if fresh else ""))
    job = FinetuneJob(args, ctx, pretrained, data, settings, model, None, {})
    progress = TrainingState()
    if args.epochs:
        job.trainer = build_trainer(args, model, ctx, num_microbatches, loss_fn)
        job.scheduler = build_scheduler(args, job.trainer.optimizer)
        own_save_directory(args, ctx, cleanup)
        job.forward_backward = job.trainer.forward_backward
        job.stream = EpochStream(data.splits["train"].examples, args.epochs,
                                 args.global_batch_size, args.seed)
    else:
        job.forward_backward = get_forward_backward_func(
            model.chunks, ctx, num_microbatches=num_microbatches, loss_fn=loss_fn)
    if saved is not None:
        progress = checkpointing.load_checkpoint(
            args.load, model, job.trainer.optimizer, job.scheduler, ctx,
            load_optim=not args.no_load_optim, load_rng=not args.no_load_rng)
        log(f"loaded {args.load} at iteration {progress.iteration}")
    for split in ("valid", "test"):
        if split in data.splits:
            job.evaluators[split] = SplitEvaluator(data, split, model, job.forward_backward, ctx,
                                                   args.micro_batch_size, args.seed)
    return job, progress


def _records(job: FinetuneJob) -> dict:
    """What the checkpoints record beside the weights: the tokenizer, the input convention, the
    schedule and precision, and the finetuning settings (settings.py)."""
    args = job.args
    data = DataRecord(seq_length=args.seq_length, seed=args.seed,
                      global_batch_size=args.global_batch_size,
                      micro_batch_size=args.micro_batch_size,
                      prepend_cls=job.settings.prepend_cls)
    return {"tokenizer": tokenizer_record(job.pretrained.tokenizer), "data": data,
            "schedule": run_records.schedule_record(args),
            "precision": run_records.precision(args), "finetune": job.settings.to_dict()}


def _save(job: FinetuneJob, progress: TrainingState):
    if not job.args.save:
        return
    checkpointing.save_checkpoint(job.args.save, progress, job.model, job.trainer.optimizer,
                                  job.scheduler, job.pretrained.config, job.ctx,
                                  **_records(job))
    log(f"saved checkpoint at iteration {progress.iteration} to "
        f"{os.path.abspath(checkpointing.iteration_dir(job.args.save, progress.iteration))}")


def _save_best(job: FinetuneJob, progress: TrainingState):
    """The weights alone into --save/best, replacing the previous best."""
    root = os.path.join(job.args.save, BEST_DIR)
    checkpointing.save_checkpoint(root, progress, job.model, None, None, job.pretrained.config,
                                  job.ctx, **_records(job))
    if job.ctx.is_rank_zero:
        current = os.path.basename(checkpointing.iteration_dir(root, progress.iteration))
        for name in os.listdir(root):
            if name.startswith("iter_") and name != current:
                shutil.rmtree(os.path.join(root, name))
    best = job.settings.best
    log(f"best validation {best.metric} so far ({best.value:.4f} at iteration {best.iteration}): "
        f"saved to {os.path.abspath(root)}")


def _evaluate(job: FinetuneJob, split: str, logger: TrainingLogger,
              iteration: int) -> Optional[Evaluation]:
    """Score a split; log its loss and metrics (when it is labelled). On rank 0 only."""
    result = job.evaluators[split].run()
    if result is not None and result.metrics:
        logger.evaluation(iteration, SPLIT_NAMES[split], result.loss, result.metrics,
                          job.evaluators[split].num_examples)
    return result


def _improves(best: Optional[BestResult], metric: str, value: float) -> bool:
    if value != value:  # NaN (e.g. Pearson of constant predictions)
        return False
    if best is None:
        return True
    return value < best.value if metric in LOWER_IS_BETTER else value > best.value


def _validate(job: FinetuneJob, logger: TrainingLogger, progress: TrainingState):
    if "valid" not in job.evaluators:
        return
    result = _evaluate(job, "valid", logger, progress.iteration)
    job.validated_at, job.validation = progress.iteration, result
    metric = job.data.task.metric_names[0]
    # Rank 0 decides; every rank takes part in saving.
    decision = [None]
    if result is not None and _improves(job.settings.best, metric, result.metrics[metric]):
        decision = [result.metrics[metric]]
    dist.broadcast_object_list(decision, src=0)
    if decision[0] is None:
        return
    job.settings.best = BestResult(progress.iteration, metric, decision[0])
    if job.args.save:
        _save_best(job, progress)


def _predict(job: FinetuneJob, logger: TrainingLogger, iteration: int):
    """Score --test-data (metrics when labelled) and write --predictions, with the best
    checkpoint's weights when --save kept one from another iteration."""
    best = job.settings.best
    if job.args.save and best is not None and best.iteration != iteration and \
            (job.args.predictions or "test" in job.evaluators):
        root = os.path.join(job.args.save, BEST_DIR)
        load_weights(job.model, CheckpointReader(root, flag="--save"), job.ctx, flag="--save")
        log(f"scoring with the best checkpoint (iteration {best.iteration}) from "
            f"{os.path.abspath(root)}")
        iteration = best.iteration
    test = _evaluate(job, "test", logger, iteration) if "test" in job.evaluators else None
    if not job.args.predictions:
        return
    if "test" in job.evaluators:
        split, result = "test", test
    elif job.validated_at == iteration:  # these weights' validation scores
        split, result = "valid", job.validation
    else:
        split, result = "valid", job.evaluators["valid"].run()
    if result is not None:
        write_predictions(job.args.predictions, job.data, result.scores)
        log(f"wrote the predictions for {len(result.scores.index)} examples of "
            f"{job.data.splits[split].source} to {os.path.abspath(job.args.predictions)}")


def train(job: FinetuneJob, progress: TrainingState, exits: ExitConditions):
    args, ctx = job.args, job.ctx
    writer = open_writers(args, vars(args)) if ctx.is_rank_zero else None
    logger = TrainingLogger(args.log_interval, args.train_iters, writer)
    batches = iter(build_data_loader(job.stream, lambda items, _rng: job.data.collate(items),
                                     progress.consumed_samples, args.micro_batch_size,
                                     ctx.dp_rank, ctx.dp_size, seed=args.seed))
    rows = args.global_batch_size * job.data.rows_per_example
    flops = model_flops_per_iteration(job.pretrained.config, rows, args.seq_length)
    eval_interval = args.eval_interval or job.stream.per_epoch // args.global_batch_size
    stop_at = min(args.train_iters, args.exit_interval or args.train_iters)
    if progress.iteration == 0:
        _validate(job, logger, progress)
    stopping = None
    with profiled_iterations(args, ctx) as profile_step:
        while progress.iteration < stop_at and stopping is None:
            training_iteration(job.trainer, job.scheduler, batches, logger, progress,
                               batch_size=args.global_batch_size,
                               tokens=rows * args.seq_length, flops=flops,
                               check_for_nan=args.check_for_nan_in_loss_and_grad)
            profile_step()
            finished = progress.iteration == args.train_iters
            if progress.iteration % eval_interval == 0 or finished:
                _validate(job, logger, progress)
            if args.save_interval and progress.iteration % args.save_interval == 0 and \
                    progress.iteration < stop_at:
                _save(job, progress)
            stopping = exits.reason(ctx)
    if stopping is not None:
        log(f"{stopping}: saving iteration {progress.iteration} and exiting")
    _save(job, progress)
    if progress.iteration == args.train_iters:
        _predict(job, logger, progress.iteration)
        best = job.settings.best
        if best is not None:
            log(f"best validation {best.metric}: {best.value:.4f} at iteration {best.iteration}")
    if writer is not None:
        writer.close()
    if writer is not None and args.tensorboard_dir:
        log(f"TensorBoard logs in {os.path.abspath(args.tensorboard_dir)}")


def evaluate_only(job: FinetuneJob):
    """--epochs 0: the pretrained checkpoint's validation metrics and predictions."""
    writer = open_writers(job.args, vars(job.args)) if job.ctx.is_rank_zero else None
    logger = TrainingLogger(job.args.log_interval, 0, writer)
    if "valid" in job.evaluators:
        job.validated_at, job.validation = 0, _evaluate(job, "valid", logger, 0)
    _predict(job, logger, 0)
    if writer is not None:
        writer.close()


def finetune(args: argparse.Namespace):
    """The whole job for parsed flags (finetune.arguments.parse_args)."""
    started = time.time()  # --exit-duration-in-mins counts from here, set-up included
    exits = ExitConditions(handle_signals=args.exit_signal_handler,
                           duration_minutes=args.exit_duration_in_mins, started=started)
    progress = None
    try:
        with exits, contextlib.ExitStack() as cleanup:
            job, progress = setup(args, cleanup)
            if args.epochs:
                train(job, progress, exits)
            else:
                evaluate_only(job)
    except KeyboardInterrupt:
        raise interrupted(args, progress, args.argv, "finetune_glm.py", load_flag=True) \
            from None
    finally:
        shutdown()
