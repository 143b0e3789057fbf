"""What the benchmarks share: the model they time, the machine line, tables, spawned ranks,
resident memory."""

from __future__ import annotations

import os
import platform
import sys
import threading
import warnings
from typing import Optional


def chatglm3_style_config(args, vocab_size: int):
    """A ChatGLM3/GLM-4-architecture model (RMSNorm, SwiGLU, GQA, partial RoPE, QKV bias,
    untied output layer) of the sizes in `args`, no dropout."""
    from glm_megatron.config import GLMConfig
    from glm_megatron.presets import PRESETS

    values = dict(PRESETS["chatglm3-tiny"])
    values.update(num_layers=args.num_layers, hidden_size=args.hidden_size,
                  num_attention_heads=args.num_attention_heads,
                  num_query_groups=args.num_query_groups, ffn_hidden_size=args.ffn_hidden_size,
                  kv_channels=args.hidden_size // args.num_attention_heads,
                  vocab_size=vocab_size, max_position_embeddings=args.seq_length,
                  rotary_base=10000.0, hidden_dropout=0.0, attention_dropout=0.0)
    return GLMConfig(**values)


def cpus() -> str:
    """'N CPUs (model name)', for the machine line of a result."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu})"


def load_average() -> str:
    """1-minute load average: other work on the machine while this runs."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


def print_table(header: list[str], rows: list[list[str]]):
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a markdown table."""
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows])


def write_markdown(path: str, lines: list[str]):
    """A markdown report headed by the command that made it, into `path` ('-': stdout)."""
    command = " ".join(["python", "benchmarks/" + os.path.basename(sys.argv[0]), *sys.argv[1:]])
    text = "\n".join([f"Command: `{command}`", "", *lines]) + "\n"
    if path == "-":
        print("\n" + text)
        return
    with open(path, "w") as f:
        f.write(text)
    print(f"\nmarkdown written to {path}")


def become_rank(rank: int, world_size: int, port: int, threads: int):
    """In a spawned process: the torchrun-style environment of `rank`, and quiet imports."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      OMP_NUM_THREADS=str(threads))
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed")
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident set size of this process in bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class RssSampler:
    """Highest RSS seen while the context is open, sampled by a background thread. Torch ops
    release the GIL while they compute, so the thread samples during them too."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self):
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, current_rss())

    def __enter__(self):
        self.peak = current_rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())
