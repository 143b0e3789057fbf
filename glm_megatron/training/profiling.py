"""--profile: torch.profiler over a window of training iterations, as Megatron-LM's
--use-pytorch-profiler mode records it (steps counted from 0 in this run: wait until one step
before --profile-step-start, warm the profiler up for that step, record up to
--profile-step-end), with one trace file per profiled rank."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Callable, Iterator

from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

from ..config import ConfigError
from ..parallel.context import ParallelContext
from .metrics import print_line


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
    folder = trace_dir(args)
    write = tensorboard_trace_handler(folder, worker_name=f"rank{ctx.rank}")

    def on_trace_ready(profiler):
        write(profiler)
        print_line(f"rank {ctx.rank}: torch.profiler trace of iterations {start} to {end - 1} "
                   f"(from 0) written to {os.path.abspath(folder)}")

    with profile(activities=activities, record_shapes=True, on_trace_ready=on_trace_ready,
                 schedule=schedule(wait=max(start - 1, 0), warmup=min(start, 1),
                                   active=end - start, repeat=1)) as profiler:
        yield profiler.step
