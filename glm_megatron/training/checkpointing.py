"""Checkpoints in Megatron-LM's directory layout, written atomically.

    SAVE/latest_checkpointed_iteration.txt      tracker: the newest complete iteration
    SAVE/iter_0000100/metadata.json             iteration, consumed samples, layout, config, args
    SAVE/iter_0000100/mp_rank_TT[_PPP]/model_optim_rng.pt
        model: this rank's shards; partition: {name: [dim, stride]} (how shards form full
        tensors); opt_param_scheduler
    SAVE/iter_0000100/mp_rank_TT[_PPP]/optimizer_dpDDD.pt
        optimizer state per parameter name as element ranges: one file (DP rank 0) without
        the distributed optimizer, one per DP rank with it; loads at any DP size
    SAVE/iter_0000100/rng/rank_RRRRR.pt         each rank's RNG states

Everything is written into a hidden temporary directory that is renamed into place only once
every rank has finished, and the tracker is replaced by rename: a crash at any moment leaves
the previous checkpoint loadable and the tracker pointing at a complete one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from ..parallel import random as prandom
from ..parallel.context import ParallelContext, all_reduce
from ..parallel.param_roles import role_of
from .divergence import TrainingDiverged

TRACKER = "latest_checkpointed_iteration.txt"
METADATA = "metadata.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be used; the message says what to do."""


def iteration_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def _rank_dir(tp_rank: int, pp_rank: int, pp_size: int) -> str:
    return f"mp_rank_{tp_rank:02d}" + (f"_{pp_rank:03d}" if pp_size > 1 else "")


def _write(obj, path: str):
    torch.save(obj, path)


def _replace_file(path: str, text: str):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class TrainingState:
    iteration: int = 0
    consumed_samples: int = 0


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
                    args_dict: dict, ctx: ParallelContext):
    """Write iteration `state.iteration` atomically. A model or optimizer holding non-finite
    values is never written (TrainingDiverged)."""
    if not _all_finite(model, optimizer, ctx):
        raise TrainingDiverged(f"iteration {state.iteration}: the weights hold non-finite "
                               f"values (training diverged), so nothing was saved to {root}")
    rank = ctx.rank
    final = iteration_dir(root, state.iteration)
    staging = os.path.join(root, f".staging_iter_{state.iteration:07d}")
    if rank == 0:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(os.path.join(staging, "rng"))
    dist.barrier()

    dp_rank = ctx.dp_rank
    rank_dir = os.path.join(staging, _rank_dir(ctx.tp_rank, ctx.pp_rank, ctx.pp_size))
    if dp_rank == 0:
        os.makedirs(rank_dir, exist_ok=True)
        _write({
            "model": model.state_dict(),
            "partition": {n: role_of(p).partition for n, p in model.named_parameters()},
            "opt_param_scheduler": scheduler.state_dict() if scheduler is not None else None,
        }, os.path.join(rank_dir, "model_optim_rng.pt"))
    dist.barrier()
    if optimizer is not None and (dp_rank == 0 or optimizer.distributed):
        _write(optimizer.state_dict(), os.path.join(rank_dir, f"optimizer_dp{dp_rank:03d}.pt"))
    _write(prandom.rng_state_dict(ctx), os.path.join(staging, "rng", f"rank_{rank:05d}.pt"))
    dist.barrier()

    if rank == 0:
        metadata = {
            "format_version": FORMAT_VERSION,
            "iteration": state.iteration,
            "consumed_samples": state.consumed_samples,
            "layout": {"tensor": ctx.tp_size, "pipeline": ctx.pp_size, "data": ctx.dp_size},
            "config": config.to_dict(),
            "args": args_dict,
        }
        _replace_file(os.path.join(staging, METADATA), json.dumps(metadata, indent=2))
        if os.path.exists(final):  # re-saving an iteration: keep the old copy until replaced
            displaced = final + ".replaced"
            shutil.rmtree(displaced, ignore_errors=True)
            os.rename(final, displaced)
            os.rename(staging, final)
            shutil.rmtree(displaced)
        else:
            os.rename(staging, final)
        _replace_file(os.path.join(root, TRACKER), str(state.iteration))
    dist.barrier()


def latest_iteration(root: str) -> Optional[int]:
    """The tracker's iteration, or None when `root` holds no checkpoint."""
    tracker = os.path.join(root, TRACKER)
    if not os.path.isfile(tracker):
        return None
    text = open(tracker).read().strip()
    if not text.isdigit():
        raise CheckpointError(f"{tracker} is not an iteration number; fix or delete it")
    return int(text)


def _resolve_dir(root: str, iteration: int) -> str:
    path = iteration_dir(root, iteration)
    if not os.path.isdir(path) and os.path.isdir(path + ".replaced"):
        return path + ".replaced"  # a crash interrupted a re-save of this same iteration
    if not os.path.isfile(os.path.join(path, METADATA)):
        raise CheckpointError(f"--load {root}: {path} is missing or incomplete; point the "
                              f"tracker {TRACKER} at a complete iteration")
    return path


def read_metadata(root: str) -> Optional[dict]:
    iteration = latest_iteration(root)
    if iteration is None:
        return None
    with open(os.path.join(_resolve_dir(root, iteration), METADATA)) as f:
        return json.load(f)


def _load_scheduler(root: str, scheduler, saved: dict):
    """megatron-core asserts when a schedule value differs from the checkpoint's (unless told
    which to use): turn that into Megatron-LM's choice of flags, in one line."""
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


def load_checkpoint(root: str, model, optimizer, scheduler, ctx: ParallelContext, *,
                    load_optim: bool = True, load_rng: bool = True,
                    finetune: bool = False) -> TrainingState:
    metadata = read_metadata(root)
    path = _resolve_dir(root, metadata["iteration"])
    layout = metadata["layout"]
    here = (ctx.tp_size, ctx.pp_size)
    if (layout["tensor"], layout["pipeline"]) != here:
        raise CheckpointError(
            f"--load {root} was saved at TP={layout['tensor']} x PP={layout['pipeline']} but "
            f"this run is TP={here[0]} x PP={here[1]}; launch with the saved layout or reshard "
            f"it first: python tools/checkpoint/reshard.py --load-dir {root} --save-dir NEW "
            f"--target-tensor-parallel-size {here[0]} --target-pipeline-parallel-size {here[1]}")
    rank_dir = os.path.join(path, _rank_dir(ctx.tp_rank, ctx.pp_rank, ctx.pp_size))
    shard = torch.load(os.path.join(rank_dir, "model_optim_rng.pt"), map_location="cpu",
                       weights_only=False)
    model.load_state_dict(shard["model"])
    if finetune:
        return TrainingState()
    files = sorted(f for f in os.listdir(rank_dir) if f.startswith("optimizer_dp"))
    if load_optim and optimizer is not None and not files:
        raise CheckpointError(f"--load {root} holds weights only (no optimizer state: an imported "
                              "or --no-optimizer checkpoint); add --finetune or --no-load-optim")
    if load_optim and optimizer is not None:
        optimizer.load_state_dict([torch.load(os.path.join(rank_dir, f), weights_only=False)
                                   for f in files])
    if scheduler is not None and shard["opt_param_scheduler"] is not None:
        _load_scheduler(root, scheduler, shard["opt_param_scheduler"])
    rng_file = os.path.join(path, "rng", f"rank_{ctx.rank:05d}.pt")
    if load_rng and os.path.isfile(rng_file):
        prandom.load_rng_state_dict(ctx, torch.load(rng_file, weights_only=False))
    return TrainingState(metadata["iteration"], metadata["consumed_samples"])
