"""--profile: torch.profiler over a window of training iterations, as Megatron-LM's
--use-pytorch-profiler mode records it (steps counted from 0 in this run: wait until one step
before --profile-step-start, warm the profiler up for that step, record up to
--profile-step-end), with one trace file per profiled rank."""

from __future__ import annotations

import argparse
import contextlib
from typing import Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

from ..config import ConfigError
from ..parallel.context import ParallelContext


def trace_dir(args: argparse.Namespace) -> str:
    folder = args.profile_dir or args.tensorboard_dir
    if not folder:
        raise ConfigError("--profile writes a trace: give --profile-dir or --tensorboard-dir")
    return folder


@contextlib.contextmanager
def profiled_iterations(args: argparse.Namespace, ctx: ParallelContext
                        ) -> Iterator[Callable[[], None]]:
    """Yields the function to call after every training iteration."""
    if not args.profile or ctx.rank not in args.profile_ranks:
        yield lambda: None
        return
    start, end = args.profile_step_start, args.profile_step_end
    activities = [ProfilerActivity.CPU]
    if ctx.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=True,
                 schedule=schedule(wait=max(start - 1, 0), warmup=min(start, 1),
                                   active=end - start, repeat=1),
                 on_trace_ready=tensorboard_trace_handler(trace_dir(args),
                                                          worker_name=f"rank{ctx.rank}")
                 ) as profiler:
        yield profiler.step
