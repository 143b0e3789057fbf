"""Leaving a run early and cleanly (Megatron-LM's --exit-signal-handler and
--exit-duration-in-mins): finish the iteration, save, exit 0.

A scheduler that preempts a job or reaches its time limit signals the processes (SIGTERM, then
SIGKILL after a grace period; Slurm's `--signal=USR1@SECONDS` sends SIGUSR1 that many seconds
before the limit), often not all ranks at the same moment. After every iteration the ranks
agree with one all-reduce (MAX) of [signal received, minutes elapsed], so every rank stops
after the same iteration and takes part in the same save.

DataLoader workers ignore those signals (data.sampler): the training process shuts them down
when it leaves, instead of finding them dead mid-iteration.
"""

from __future__ import annotations

import signal
import time
from typing import Optional

import torch
import torch.distributed as dist

from ..parallel.context import ParallelContext, all_reduce

EXIT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class ExitConditions:
    """Use as a context manager around the run (signals during set-up count too);
    `reason(ctx)` after every iteration."""

    def __init__(self, *, handle_signals: bool, duration_minutes: Optional[float],
                 started: float):
        self.handle_signals = handle_signals
        self.duration_minutes, self.started = duration_minutes, started
        self.received = 0  # the number of the last exit signal received, 0 for none
        self._previous = {}

    @property
    def active(self) -> bool:
        return self.handle_signals or self.duration_minutes is not None

    def _on_signal(self, number, _frame):
        self.received = number

    def __enter__(self) -> "ExitConditions":
        if self.handle_signals:
            self._previous = {n: signal.signal(n, self._on_signal) for n in EXIT_SIGNALS}
        return self

    def __exit__(self, *_):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def reason(self, ctx: ParallelContext) -> Optional[str]:
        """Why every rank stops after this iteration, or None. Collective over all ranks."""
        if not self.active:
            return None
        state = torch.tensor([float(self.received), (time.time() - self.started) / 60.0],
                             dtype=torch.float64, device=ctx.device)
        all_reduce(state, ctx.model_parallel_group, op=dist.ReduceOp.MAX)
        all_reduce(state, ctx.dp_group, op=dist.ReduceOp.MAX)
        received, minutes = int(state[0].item()), state[1].item()
        if received:
            return f"{signal.Signals(received).name} received (--exit-signal-handler)"
        if self.duration_minutes is not None and minutes >= self.duration_minutes:
            return (f"{minutes:.1f} minutes since the start reached --exit-duration-in-mins "
                    f"{self.duration_minutes:g}")
        return None
