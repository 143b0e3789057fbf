"""Saving and loading training checkpoints (the format: glm_megatron/checkpoint_format.py).

Saves are atomic and durable: every rank writes its files into a hidden staging directory
and fsyncs them; once all have finished, rank 0 writes the metadata, fsyncs the directories,
renames the staging directory into place and only then moves the tracker (a temporary file
renamed over it). A crash at any moment leaves the tracker pointing at a complete checkpoint.
A model or optimizer holding non-finite values is never written.

Loading verifies every file a rank reads (zip checksums) before unpickling it. What one rank
finds wrong (a damaged file, a full disk) stops every rank with the same one-line error, which
names the file and the newest complete earlier iteration to fall back to.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.distributed as dist

from ..atomic_write import fsync_dir, write_atomically
from ..checkpoint_format import (METADATA, MODEL_FILE, REPLACED_SUFFIX, TRACKER,  # noqa: F401
                                 CheckpointError, CheckpointMetadata, Contents, Layout,
                                 fallback_hint, file_damage, find_checkpoint, iteration_dir,
                                 optimizer_file_name, rank_dir_name, rng_file_name, staging_dir)
from ..parallel import random as prandom
from ..parallel.agreement import raised_together
from ..parallel.context import ParallelContext, all_reduce
from ..parallel.param_roles import role_of
from .divergence import TrainingDiverged

@dataclass
class TrainingState:
    iteration: int = 0
    consumed_samples: int = 0


def _os_error(path: str, error: OSError) -> CheckpointError:
    return CheckpointError(f"cannot write {path}: {(error.strerror or str(error)).lower()}; "
                           "free space or point --save elsewhere (earlier checkpoints are "
                           "intact)")


def _write(obj, path: str):
    """torch.save through a Python file, fsynced. A full disk fails a write with an OSError
    naming its cause, which torch's zip writer may bury under its own 'unexpected pos'
    RuntimeError when it closes the archive: the OSError is what is reported (and a Ctrl-C
    stays a KeyboardInterrupt)."""
    try:
        with open(path, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as error:
        cause = error if isinstance(error, OSError) else error.__context__
        if isinstance(cause, KeyboardInterrupt):  # Ctrl-C mid-write: the zip writer's error on top
            raise cause from None
        if not isinstance(cause, OSError):
            raise
        raise _os_error(path, cause) from None


def _replace_file(path: str, text: str):
    try:
        write_atomically(path, text.encode())
    except OSError as error:
        raise _os_error(path, error) from None


@torch.no_grad()
def _all_finite(model, optimizer, ctx: ParallelContext) -> bool:
    """Whether every rank's weights (and fp32 masters) are finite."""
    tensors = list(model.parameters()) + (optimizer.masters() if optimizer is not None else [])
    bad = torch.tensor([float(any(not torch.isfinite(t).all() for t in tensors))],
                       device=ctx.device)
    all_reduce(bad, ctx.model_parallel_group, op=dist.ReduceOp.MAX)
    all_reduce(bad, ctx.dp_group, op=dist.ReduceOp.MAX)
    return not bad.item()


def save_checkpoint(root: str, state: TrainingState, model, optimizer, scheduler, config,
                    ctx: ParallelContext, *, layout: Optional[Layout] = None, **records):
    """Write iteration `state.iteration`. `records`: the remaining CheckpointMetadata fields
    (tokenizer, data, schedule, precision). A model or optimizer holding non-finite values is
    never written (TrainingDiverged); a failed write (CheckpointError) leaves the previous
    checkpoint current."""
    if not _all_finite(model, optimizer, ctx):
        raise TrainingDiverged(f"iteration {state.iteration}: the weights hold non-finite "
                               f"values (training diverged), so nothing was saved to {root}")
    layout = layout or Layout(ctx.tp_size, ctx.pp_size, ctx.dp_size)
    distributed = optimizer is not None and optimizer.distributed
    metadata = CheckpointMetadata(
        state.iteration, state.consumed_samples, config.to_dict(),
        layout=dataclasses.replace(layout, distributed_optimizer=distributed),
        contents=Contents(optimizer=optimizer is not None, rng=True), **records)
    staging = staging_dir(root, state.iteration)
    rank_dir = os.path.join(staging, rank_dir_name(ctx.tp_rank, ctx.pp_rank, ctx.pp_size))
    try:
        with raised_together(ctx, (CheckpointError,)):
            if ctx.is_rank_zero:
                _prepare(root, staging, layout)
        with raised_together(ctx, (CheckpointError,)):
            if ctx.dp_rank == 0:
                _write({"model": model.state_dict(),
                        "partition": {n: role_of(p).partition for n, p in model.named_parameters()},
                        "opt_param_scheduler": scheduler.state_dict() if scheduler else None},
                       os.path.join(rank_dir, MODEL_FILE))
            if optimizer is not None and (ctx.dp_rank == 0 or distributed):
                _write(optimizer.state_dict(),
                       os.path.join(rank_dir, optimizer_file_name(ctx.dp_rank)))
            _write(prandom.rng_state_dict(ctx), os.path.join(staging, rng_file_name(ctx.rank)))
            fsync_dir(rank_dir)
        with raised_together(ctx, (CheckpointError,)):
            if ctx.is_rank_zero:
                _publish(root, staging, metadata)
    except CheckpointError:
        if ctx.is_rank_zero:
            shutil.rmtree(staging, ignore_errors=True)
        raise


def _prepare(root: str, staging: str, layout: Layout):
    try:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(os.path.join(staging, os.path.dirname(rng_file_name(0))))
        for pp_rank in range(layout.pipeline):
            for tp_rank in range(layout.tensor):
                os.makedirs(os.path.join(staging, rank_dir_name(tp_rank, pp_rank,
                                                                layout.pipeline)))
    except OSError as error:
        raise _os_error(staging, error) from None


def _publish(root: str, staging: str, metadata: CheckpointMetadata):
    """Metadata, directory fsyncs, rename into place, then the tracker."""
    _replace_file(os.path.join(staging, METADATA), metadata.to_json())
    fsync_dir(os.path.join(staging, os.path.dirname(rng_file_name(0))))
    fsync_dir(staging)
    final = iteration_dir(root, metadata.iteration)
    try:
        if os.path.exists(final):  # saving an iteration again: keep the old copy until replaced
            displaced = final + REPLACED_SUFFIX
            shutil.rmtree(displaced, ignore_errors=True)
            os.rename(final, displaced)
            os.rename(staging, final)
            shutil.rmtree(displaced)
        else:
            os.rename(staging, final)
    except OSError as error:
        raise _os_error(final, error) from None
    fsync_dir(root)
    _replace_file(os.path.join(root, TRACKER), str(metadata.iteration))


def read_metadata(root: str, iteration: Optional[int] = None) -> Optional[CheckpointMetadata]:
    """The metadata `load_checkpoint` would load (`iteration`, or the tracker's), None when
    `root` holds no checkpoint; CheckpointError when what it names is missing or damaged."""
    if iteration is None and not os.path.isfile(os.path.join(root, TRACKER)):
        return None
    return find_checkpoint(root, iteration)[1]


def _load_scheduler(root: str, scheduler, saved: dict):
    """megatron-core asserts when a schedule value differs from the checkpoint's (unless told
    which to use); resume checks name such flags first, so this is what they cannot see
    (values a format-1 checkpoint did not record)."""
    try:
        scheduler.load_state_dict(saved)
    except AssertionError as error:
        found = re.search(r"class input value (\S+) and checkpoint\s*value (\S+) for (.+) do not "
                          r"match", str(error))
        what = (f"{found.group(3)}: flags {found.group(1)}, checkpoint {found.group(2)}"
                if found else str(error))
        raise CheckpointError(
            f"--load {root}: the learning-rate schedule differs from the checkpoint's ({what}); "
            "pass the flags it was trained with, --override-opt_param-scheduler to use these "
            "flags' schedule, or --use-checkpoint-opt_param-scheduler to keep its own") from None


class _RankFiles:
    """This rank's files of one saved iteration, checked (zip checksums) and loaded; a problem
    is a CheckpointError naming the file, the fallback iteration and `remedy`."""

    def __init__(self, root: str, iter_dir: str, iteration: int):
        self.root, self.iter_dir, self.iteration = root, iter_dir, iteration

    def load(self, name: str, remedy: str = ""):
        path = os.path.join(self.iter_dir, name)
        problem = file_damage(path, deep=True)
        if problem is None:
            try:
                return torch.load(path, map_location="cpu", weights_only=False)
            except Exception as error:  # whole as a zip, but not what torch.save wrote
                problem = f"unreadable ({type(error).__name__}: {error})"
        raise CheckpointError(f"--load {self.root}: {path} is {problem}; "
                              f"{fallback_hint(self.root, self.iteration)}{remedy}")


def load_checkpoint(root: str, model, optimizer, scheduler, ctx: ParallelContext, *,
                    iteration: Optional[int] = None, load_optim: bool = True,
                    load_rng: bool = True, finetune: bool = False,
                    log: Callable[[str], None] = lambda _text: None) -> TrainingState:
    """Load `iteration` (default: the tracker's) into this rank's model, optimizer, schedule
    and random generators; what cannot be restored is an error, or said through `log`."""
    iter_dir, metadata = find_checkpoint(root, iteration)
    layout = metadata.layout
    here = (ctx.tp_size, ctx.pp_size)
    if (layout.tensor, layout.pipeline) != here:
        raise CheckpointError(
            f"--load {root} was saved at TP={layout.tensor} x PP={layout.pipeline} but "
            f"this run is TP={here[0]} x PP={here[1]}; launch with the saved layout or reshard "
            f"it first: python tools/checkpoint/reshard.py --load-dir {root} --save-dir NEW "
            f"--target-tensor-parallel-size {here[0]} --target-pipeline-parallel-size {here[1]}")
    load_optim = load_optim and optimizer is not None and not finetune
    if load_optim and not metadata.contents.optimizer:
        raise CheckpointError(f"--load {root} holds weights only (no optimizer state: an "
                              "imported, or resharded with --no-optimizer, checkpoint); add "
                              "--finetune or --no-load-optim")
    load_rng = load_rng and not finetune and _rng_restorable(metadata, ctx, log)
    files = _RankFiles(root, iter_dir, metadata.iteration)
    rank_dir = rank_dir_name(ctx.tp_rank, ctx.pp_rank, ctx.pp_size)
    with raised_together(ctx, (CheckpointError,)):
        shard = files.load(os.path.join(rank_dir, MODEL_FILE))
        optimizer_states = [
            files.load(os.path.join(rank_dir, optimizer_file_name(d)),
                       ", or pass --no-load-optim to continue with a fresh optimizer")
            for d in range(layout.optimizer_files)] if load_optim else []
        rng_state = files.load(rng_file_name(ctx.rank), ", or pass --no-load-rng to continue "
                               "with fresh random states (no longer bit-exact)") \
            if load_rng else None
    model.load_state_dict(shard["model"])
    if finetune:
        return TrainingState()
    if load_optim:
        optimizer.load_state_dict(optimizer_states)
    if scheduler is not None and shard["opt_param_scheduler"] is not None:
        _load_scheduler(root, scheduler, shard["opt_param_scheduler"])
    if rng_state is not None:
        # The tensor-parallel generator's state is the saving device's kind (a CUDA state
        # holds a CUDA generator's): it restores only on that kind of device.
        if (rng_state["device"] is not None) == (ctx.device.type == "cuda"):
            prandom.load_rng_state_dict(ctx, rng_state)
        else:
            log("note: random states were saved on another kind of device and are not "
                "restored; the run continues from --seed's generators")
    return TrainingState(metadata.iteration, metadata.consumed_samples)


def _rng_restorable(metadata: CheckpointMetadata, ctx: ParallelContext,
                    log: Callable[[str], None]) -> bool:
    if not metadata.contents.rng:
        log("note: the checkpoint holds no random states (imported or resharded): dropout "
            "masks differ from those of a run that never stopped")
        return False
    if metadata.world_size != ctx.world_size:
        log(f"note: random states are per rank and the checkpoint has {metadata.world_size} "
            f"ranks, this run {ctx.world_size}: starting from fresh random states")
        return False
    return True

