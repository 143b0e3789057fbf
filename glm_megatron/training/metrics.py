"""Per-iteration log lines and TensorBoard scalars under Megatron-LM's names, and model FLOPs."""

from __future__ import annotations

import datetime
import math
import resource
import sys
from typing import Optional

import torch

from ..config import GLMConfig


def model_flops_per_iteration(config: GLMConfig, batch_size: int, seq_length: int) -> float:
    """Megatron-LM's model FLOPs for one forward+backward (num_floating_point_operations)."""
    h, layers = config.hidden_size, config.num_layers
    gated = 1.5 if config.gated_mlp else 1.0
    attention = ((1 + config.num_query_groups / config.num_attention_heads + seq_length / h)
                 * config.query_projection_size / h)
    mlp = config.ffn_hidden_size / h * gated
    logits = config.vocab_size / (2 * layers * h)
    return 12 * batch_size * seq_length * layers * h * h * (attention + mlp + logits)


def memory_megabytes(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "max allocated"
    # ru_maxrss is KiB on Linux: the process's peak resident set.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak RSS"


class TrainingLogger:
    """Accumulates per-iteration values and prints Megatron-style lines every `interval`, and
    after the run's first iteration (a sign of life before the first interval ends), each with
    the time left at the run's average pace so far."""

    def __init__(self, interval: int, train_iters: int, writer=None):
        self.interval, self.train_iters, self.writer = interval, train_iters, writer
        self._losses: list[float] = []
        self._elapsed = 0.0
        self._run_elapsed, self._run_iterations = 0.0, 0  # since this process started
        self.skipped = self.nan = 0

    def _time_left(self, it: int) -> str:
        left = max(self.train_iters - it, 0)
        seconds = round(self._run_elapsed / self._run_iterations * left)
        return f"time left: {datetime.timedelta(seconds=seconds)} ({left} iterations)"

    def iteration(self, it: int, *, loss: float, lr: float, grad_norm: float, loss_scale: float,
                  applied: bool, elapsed: float, consumed_samples: int, batch_size: int,
                  tokens: int, flops: float, world_size: int, device: torch.device):
        if not applied:
            self.skipped += 1
        if loss != loss or loss in (float("inf"), float("-inf")):
            self.nan += 1
        self._losses.append(loss)
        self._elapsed += elapsed
        self._run_elapsed += elapsed
        self._run_iterations += 1
        if self.writer is not None:
            for tag, value in (("lm loss", loss), ("learning-rate", lr), ("grad-norm", grad_norm),
                               ("loss-scale", loss_scale), ("batch-size", batch_size),
                               ("iteration-time", elapsed)):
                self.writer.add_scalar(tag, value, it)
            self.writer.add_scalar("lm loss vs samples", loss, consumed_samples)
        if it % self.interval and it != self.train_iters and self._run_iterations > 1:
            return
        n = len(self._losses)
        per_iter = self._elapsed / n
        mem, mem_kind = memory_megabytes(device)
        fields = [
            f"iteration {it:8d}/{self.train_iters:8d}",
            f"consumed samples: {consumed_samples:12d}",
            f"elapsed time per iteration (ms): {per_iter * 1000:.1f}",
            f"throughput per rank (TFLOP/s/rank): {flops / per_iter / world_size / 1e12:.3f}",
            f"tokens/s: {tokens / per_iter:.0f}",
            f"learning rate: {lr:.6E}",
            f"global batch size: {batch_size:5d}",
            f"lm loss: {sum(self._losses) / n:.6E}",
            f"loss scale: {loss_scale:.1f}",
            f"grad norm: {grad_norm:.3f}",
            f"number of skipped iterations: {self.skipped:3d}",
            f"number of nan iterations: {self.nan:3d}",
            f"mem ({mem_kind}): {mem:.0f} MB",
            self._time_left(it),
        ]
        if self.writer is not None:
            self.writer.add_scalar("throughput", flops / per_iter / world_size / 1e12, it)
            self.writer.add_scalar("tokens-per-second", tokens / per_iter, it)
            self.writer.add_scalar("mem-MB", mem, it)
            self.writer.flush()
        print_line(" | ".join(fields) + " |")
        self._losses, self._elapsed = [], 0.0
        self.skipped = self.nan = 0

    def validation(self, it: int, loss: float, consumed_samples: int,
                   parts: Optional[dict[str, float]] = None, split: str = "validation"):
        """`parts`: the loss of each part of the objective (blank infilling: of each span
        kind), also logged, under `lm loss validation (PART)`. `split`: validation or test."""
        parts = parts or {}
        if self.writer is not None:
            self.writer.add_scalar(f"lm loss {split}", loss, it)
            self.writer.add_scalar(f"lm loss {split} vs samples", loss, consumed_samples)
            for part, value in parts.items():
                self.writer.add_scalar(f"lm loss {split} ({part})", value, it)
            self.writer.flush()
        bar = "-" * 80
        details = "".join(f" {part} loss: {value:.6E} |" for part, value in parts.items())
        print_line(f"{bar}\n {split} loss at iteration {it} | lm loss value: {loss:.6E} | "
                   f"lm loss PPL: {_ppl(loss):.6E} |{details}\n{bar}")


    def evaluation(self, it: int, split: str, loss: float, metrics: dict, examples: int):
        """A finetuning evaluation: the loss and the task's metrics over a whole split, as
        TensorBoard tags `{split} loss`, `{split} accuracy`, ... (split: validation, test)."""
        if self.writer is not None:
            for name, value in {"loss": loss, **metrics}.items():
                self.writer.add_scalar(f"{split} {name}", value, it)
            self.writer.flush()
        values = " | ".join(f"{name}: {value:.4f}" for name, value in metrics.items())
        bar = "-" * 80
        print_line(f"{bar}\n {split} at iteration {it} | loss: {loss:.6E} | {values} | "
                   f"examples: {examples} |\n{bar}")


def _ppl(loss: float) -> float:
    # Megatron-LM caps the exponent at 20; min() would turn a nan loss into that cap.
    return math.nan if math.isnan(loss) else math.exp(min(20.0, loss))


def print_line(text: str, stream=None):
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    print(f" [{stamp}] {text}", file=stream or sys.stdout, flush=True)


def open_tensorboard(log_dir: Optional[str]):
    if not log_dir:
        return None
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(log_dir=log_dir, max_queue=1000)
