"""Peak memory per rank and step time, with and without activation recomputation and the
distributed optimizer, at DP=2 (two gloo processes, one CPU core each).

    python benchmarks/bench_memory.py                  # 8 x 512, seq 512, micro batch 4, bf16
    python benchmarks/bench_memory.py --quick          # tiny model, ~1 minute smoke run
    python benchmarks/bench_memory.py --dtypes bf16,fp32 --markdown-out mem.md

Every variant runs in a FRESH pair of processes, because a process's peak RSS (ru_maxrss) only
ever grows. Per rank it reports four memory figures, from the coarsest to the most exact:

- peak RSS: ru_maxrss of the rank's process over its whole life (imports, model build, warm-up
  and timed steps). What the operating system had to provide; it includes the interpreter,
  torch and megatron imports (a fixed few hundred MiB) and whatever the allocator keeps.
- step RSS rise: a sampling thread reads /proc/self/statm every millisecond during each timed
  step; the rise is the highest resident size seen minus the size just before the step (the
  median over timed steps). It is the transient memory of one step (activations, the gradient
  reduction and the optimizer's temporaries), approximately: memory that glibc's malloc keeps
  after a free is not seen as a rise.
- saved activations: the bytes of tensors autograd saves for backward during one micro-batch's
  forward, counted with torch.autograd.graph.saved_tensors_hooks over unique storages,
  parameters excluded (warm-up step). With one micro-batch in flight this is exactly the
  activation memory held when the forward ends, the quantity recomputation trades for compute.
  Inside a recomputed region torch.utils.checkpoint's own hooks take over, so only the region's
  inputs are counted, as they are the only thing kept.
- model + optimizer state: bytes of the tensors that live across steps, counted by walking them
  after the last step: parameters, the fp32 gradient buffer, fp32 master weights (separate
  tensors only: an fp32 parameter that is its own master counts once), Adam moments, and the
  reduce-scatter outputs the distributed optimizer keeps between steps.

Allocator: glibc's malloc keeps freed blocks below its mmap threshold (which grows up to 32 MiB
as large blocks are freed) and returns them to the system only from the top of its heap, so by
default RSS says more about the allocator's history than about live tensors. The ranks are
therefore started with MALLOC_MMAP_THRESHOLD_ fixed at --mmap-threshold-kib (128 KiB): every
tensor above it gets its own mapping, returned to the system when freed, and RSS follows live
memory. This costs page faults on each new large tensor; it applies to every variant alike.
--mmap-threshold-kib 0 keeps glibc's default.

Step time: each timed step starts after a barrier; a step's time is the slowest rank's, and the
table gives the median over the timed steps. Other processes on the machine make wall time
noisy, so the CPU time each rank's process spent in the step (all its threads, summed; with one
torch thread per rank that is the compute plus gloo's threads) is shown as well: it is hardly
affected by load from elsewhere. The losses of the last step are printed so that
every variant can be seen to train the same way (recomputation is exact; the distributed
optimizer only changes the order of floating-point sums).

Absolute numbers depend on the machine and on what else runs on it: compare the ratios to the
baseline within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORLD_SIZE = 2  # data-parallel ranks: the distributed optimizer needs DP > 1 to shard
MIB = 2.0 ** 20
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

FULL = dict(num_layers=8, hidden_size=512, num_attention_heads=8, num_query_groups=2,
            ffn_hidden_size=1536, vocab_size=32000, seq_length=512, micro_batch_size=4)
QUICK = dict(num_layers=4, hidden_size=256, num_attention_heads=4, num_query_groups=2,
             ffn_hidden_size=704, vocab_size=4096, seq_length=256, micro_batch_size=2)


@dataclass(frozen=True)
class Variant:
    name: str
    recompute: tuple  # (granularity, method, num_layers) as ExecutionOptions takes them
    distributed_optimizer: bool


VARIANTS = [
    Variant("baseline", (None, None, None), False),
    Variant("full recompute (uniform, 1 layer)", ("full", "uniform", 1), False),
    Variant("selective recompute", ("selective", None, None), False),
    Variant("distributed optimizer", (None, None, None), True),
    Variant("distributed optimizer + full recompute", ("full", "uniform", 1), True),
]


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny model, bf16 only, 2 timed steps: a ~1 minute smoke run; explicit "
                        "flags still override it")
    for name in FULL:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                       help=f"default {FULL[name]} ({QUICK[name]} with --quick)")
    p.add_argument("--num-micro-batches", type=int, default=1,
                   help="micro-batches per rank per step (gradient accumulation)")
    p.add_argument("--dtypes", default=None,
                   help="comma list of bf16, fp32 (default bf16; bf16 is Megatron's mixed "
                        "precision: bf16 weights, fp32 gradients, fp32 master weights)")
    p.add_argument("--variants", default=None,
                   help="comma list of variant numbers (1-based) of: " +
                        "; ".join(f"{i + 1} {v.name}" for i, v in enumerate(VARIANTS)))
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 4; 2 quick)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed steps first (the first one also counts saved activations)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per rank (default: CPUs / 2)")
    p.add_argument("--sample-interval-ms", type=float, default=1.0,
                   help="RSS sampling interval during timed steps")
    p.add_argument("--mmap-threshold-kib", type=int, default=128,
                   help="MALLOC_MMAP_THRESHOLD_ for the ranks, so that RSS follows live tensors; "
                        "0 leaves glibc's default (see the module docstring)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--markdown-out", default=None, help="also write the tables here as markdown")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.steps is None:
        args.steps = 2 if args.quick else 4
    args.dtypes = [d.strip() for d in (args.dtypes or "bf16").split(",") if d.strip()]
    bad = [d for d in args.dtypes if d not in DTYPES]
    if bad or not args.dtypes:
        p.error(f"--dtypes: {bad or args.dtypes} not in {list(DTYPES)}")
    if args.variants:
        picked = [int(v) for v in args.variants.split(",")]
        if any(not 1 <= v <= len(VARIANTS) for v in picked):
            p.error(f"--variants: numbers run from 1 to {len(VARIANTS)}")
        args.variant_list = [VARIANTS[v - 1] for v in picked]
    else:
        args.variant_list = list(VARIANTS)
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or WORLD_SIZE) // WORLD_SIZE)
    if args.steps < 1 or args.warmup < 1:
        p.error("--steps and --warmup must be >= 1 (the warm-up step counts activations)")
    return args


def model_config(args):
    """A ChatGLM3/GLM-4-architecture model (RMSNorm, SwiGLU, GQA, partial RoPE, QKV bias,
    untied output layer), no dropout."""
    from glm_megatron.config import GLMConfig
    from glm_megatron.presets import PRESETS

    values = dict(PRESETS["chatglm3-tiny"])
    values.update(num_layers=args.num_layers, hidden_size=args.hidden_size,
                  num_attention_heads=args.num_attention_heads,
                  num_query_groups=args.num_query_groups, ffn_hidden_size=args.ffn_hidden_size,
                  kv_channels=args.hidden_size // args.num_attention_heads,
                  vocab_size=args.vocab_size, max_position_embeddings=args.seq_length,
                  rotary_base=10000.0, hidden_dropout=0.0, attention_dropout=0.0)
    return GLMConfig(**values)


# --------------------------------------------------------------------------------------------
# Measurements inside one rank
# --------------------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident set size of this process in bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def max_rss() -> int:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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


class SavedActivationCounter:
    """Bytes autograd saves for backward per micro-batch forward: unique storages, parameters
    excluded. A forward pre-hook on the model chunk starts a new micro-batch."""

    def __init__(self, chunk: torch.nn.Module, params):
        self.param_storages = {p.untyped_storage().data_ptr() for p in params}
        self.per_forward: list[dict[int, int]] = []
        self._chunk = chunk
        self._handle = None
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if self.per_forward and storage.data_ptr() not in self.param_storages:
            self.per_forward[-1][storage.data_ptr()] = storage.nbytes()
        return tensor

    def _new_forward(self, *_):
        self.per_forward.append({})

    def __enter__(self):
        self._handle = self._chunk.register_forward_pre_hook(self._new_forward)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        self._handle.remove()

    def peak_bytes(self) -> int:
        return max((sum(seen.values()) for seen in self.per_forward), default=0)


def state_bytes(model, grads, optimizer) -> dict[str, int]:
    """Bytes of the tensors that live across steps, by kind; each storage counted once."""
    seen: set[int] = set()

    def total(tensors) -> int:
        out = 0
        for t in tensors:
            if t is None:
                continue
            storage = t.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            out += storage.nbytes()
        return out

    adam = [v for s in optimizer.optimizer.state.values() for v in s.values()
            if isinstance(v, torch.Tensor)]
    return {
        "params": total(model.parameters()),
        "grad buffer": total([grads.buffer]),
        "fp32 masters": total(list(optimizer.shards) + [s.master for s in optimizer.segments]),
        "Adam moments": total(adam),
        "reduce-scatter outputs": total(b.scattered for b in grads.buckets),
    }


def synthetic_batches(args, rank: int, count: int) -> list[dict]:
    """Random-token causal micro-batches, different per rank (each DP rank reads its share)."""
    g = torch.Generator().manual_seed(args.seed + 1000 * rank)
    b, s = args.micro_batch_size, args.seq_length
    positions = torch.arange(s).expand(b, s).contiguous()
    out = []
    for _ in range(count):
        seq = torch.randint(0, args.vocab_size, (b, s + 1), generator=g)
        out.append({"tokens": seq[:, :-1].contiguous(), "labels": seq[:, 1:].contiguous(),
                    "loss_mask": torch.ones(b, s), "position_ids": positions})
    return out


def run_variant(args, variant: Variant, dtype_name: str, out_dir: str):
    """One rank of one variant: build, warm up (counting activations), time, record."""
    torch.set_num_threads(args.threads)
    rss_start = current_rss()
    import torch.distributed as dist
    from megatron.core import parallel_state as mpu

    from glm_megatron.model.builder import build_model_chunks
    from glm_megatron.model.options import ExecutionOptions
    from glm_megatron.parallel import state
    from glm_megatron.parallel.random import set_random_seed
    from glm_megatron.training.grads import GradientBuffer
    from glm_megatron.training.optimizer import MixedPrecisionAdamW
    from glm_megatron.training.step import train_step

    state.initialize_parallel(1, 1, "cpu")
    rank = dist.get_rank()
    set_random_seed(args.seed)
    rss_imported = current_rss()
    model = build_model_chunks(model_config(args), args.seed, params_dtype=DTYPES[dtype_name],
                               options=ExecutionOptions(False, *variant.recompute))
    grads = GradientBuffer(list(model.parameters()), mpu.get_data_parallel_group(),
                           shard_over_dp=variant.distributed_optimizer)
    optimizer = MixedPrecisionAdamW(model, grads, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95),
                                    eps=1e-8, clip_grad=1.0)
    rss_built = current_rss()
    m = args.num_micro_batches
    total_steps = args.warmup + args.steps
    batches = synthetic_batches(args, state.dp_rank(), total_steps * m)

    def step(i: int) -> float:
        return train_step(model, grads, optimizer, iter(batches[i * m:(i + 1) * m]), m)[0]

    counter = SavedActivationCounter(model.chunks[0], model.parameters())
    with counter:
        step(0)
    for i in range(1, args.warmup):
        step(i)
    seconds, cpu_seconds, rises, losses = [], [], [], []
    for i in range(args.warmup, total_steps):
        dist.barrier()
        before = current_rss()
        with RssSampler(args.sample_interval_ms / 1000.0) as sampler:
            start, cpu = time.perf_counter(), time.process_time()
            losses.append(step(i))
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu)
        rises.append(sampler.peak - before)
    result = dict(rank=rank, seconds=seconds, cpu_seconds=cpu_seconds, rss_rises=rises,
                  losses=losses,
                  saved_activation_bytes=counter.peak_bytes(),
                  state_bytes=state_bytes(model, grads, optimizer), max_rss=max_rss(),
                  rss_start=rss_start, rss_imported=rss_imported, rss_built=rss_built,
                  num_params=sum(p.numel() for p in model.parameters()))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    state.shutdown()


# --------------------------------------------------------------------------------------------
# Launching fresh processes per variant
# --------------------------------------------------------------------------------------------

def load_average() -> str:
    """1-minute load average: other work on the machine while this runs."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, args, variant, dtype_name, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      OMP_NUM_THREADS=str(args.threads))
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed")
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    run_variant(args, variant, dtype_name, out_dir)


@dataclass
class VariantResult:
    dtype: str
    variant: str
    distributed_optimizer: bool
    step_seconds: list  # per timed step, slowest rank
    cpu_seconds: list  # per timed step, the rank that used the most CPU time
    max_rss: int  # max over ranks
    rss_before_build: int
    rss_built: int
    rss_rise: float  # median over steps, max over ranks
    saved_activations: int  # max over ranks
    state: dict  # max over ranks, per kind
    losses: list  # rank 0
    num_params: int

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.step_seconds)

    @property
    def median_cpu_seconds(self) -> float:
        return statistics.median(self.cpu_seconds)

    @property
    def state_total(self) -> int:
        return sum(self.state.values())


def launch(args, variant: Variant, dtype_name: str) -> VariantResult:
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as out_dir:
        mp.start_processes(_entry, args=(WORLD_SIZE, _free_port(), args, variant, dtype_name,
                                         out_dir),
                           nprocs=WORLD_SIZE, join=True, start_method="spawn")
        ranks = []
        for r in range(WORLD_SIZE):
            with open(os.path.join(out_dir, f"rank{r}.json")) as f:
                ranks.append(json.load(f))
    steps = [max(r["seconds"][i] for r in ranks) for i in range(len(ranks[0]["seconds"]))]
    cpu = [max(r["cpu_seconds"][i] for r in ranks) for i in range(len(ranks[0]["seconds"]))]
    kinds = ranks[0]["state_bytes"].keys()
    return VariantResult(
        dtype=dtype_name, variant=variant.name,
        distributed_optimizer=variant.distributed_optimizer, step_seconds=steps,
        cpu_seconds=cpu,
        max_rss=max(r["max_rss"] for r in ranks),
        rss_before_build=max(r["rss_imported"] for r in ranks),
        rss_built=max(r["rss_built"] for r in ranks),
        rss_rise=max(statistics.median(r["rss_rises"]) for r in ranks),
        saved_activations=max(r["saved_activation_bytes"] for r in ranks),
        state={k: max(r["state_bytes"][k] for r in ranks) for k in kinds},
        losses=ranks[0]["losses"], num_params=ranks[0]["num_params"])


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def machine_line(args) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, {WORLD_SIZE} ranks x "
            f"{args.threads} thread(s), Python {platform.python_version()}")


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def megatron_bytes_per_param(r: VariantResult) -> float:
    """What Megatron-LM's distributed-optimizer guide gives for the same precision: bf16
    weights + fp32 gradients 18 bytes (6 + 12 / DP sharded), fp32 16 (8 + 8 / DP sharded: fp32
    parameters are their own master weights there)."""
    fixed, sharded = (6, 12) if r.dtype == "bf16" else (8, 8)
    return fixed + sharded / (WORLD_SIZE if r.distributed_optimizer else 1)


def tables(results: list[VariantResult]) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    for dtype in dict.fromkeys(r.dtype for r in results):
        rows_of = [r for r in results if r.dtype == dtype]
        base = rows_of[0]
        header = ["variant", "peak RSS MiB", "x base", "step RSS rise MiB", "x base",
                  "saved activations MiB", "x base", "model+optimizer state MiB", "x base",
                  "median step s", "x base", "CPU s / step", "x base", "last loss"]
        rows = [[r.variant, f"{r.max_rss / MIB:.0f}", _ratio(r.max_rss, base.max_rss),
                 f"{r.rss_rise / MIB:.0f}", _ratio(r.rss_rise, base.rss_rise),
                 f"{r.saved_activations / MIB:.0f}",
                 _ratio(r.saved_activations, base.saved_activations),
                 f"{r.state_total / MIB:.0f}", _ratio(r.state_total, base.state_total),
                 f"{r.median_seconds:.2f}", _ratio(r.median_seconds, base.median_seconds),
                 f"{r.median_cpu_seconds:.2f}",
                 _ratio(r.median_cpu_seconds, base.median_cpu_seconds),
                 f"{r.losses[-1]:.5f}"] for r in rows_of]
        out.append((f"{dtype}: per rank (max over the {WORLD_SIZE} ranks); ratios to "
                    f"'{base.variant}'", header, rows))
        kinds = list(base.state)
        header = ["variant", *[f"{k} MiB" for k in kinds], "total MiB", "bytes / param",
                  "Megatron-LM bytes / param", "RSS after imports MiB", "RSS after build MiB",
                  "all step times s"]
        rows = [[r.variant, *[f"{r.state[k] / MIB:.0f}" for k in kinds],
                 f"{r.state_total / MIB:.0f}", f"{r.state_total / r.num_params:.1f}",
                 f"{megatron_bytes_per_param(r):g}",
                 f"{r.rss_before_build / MIB:.0f}", f"{r.rss_built / MIB:.0f}",
                 ", ".join(f"{s:.2f}" for s in r.step_seconds)] for r in rows_of]
        out.append((f"{dtype}: model + optimizer state per rank ({base.num_params / 1e6:.1f} M "
                    "parameters), and where RSS stood", header, rows))
    return out


def print_table(header: list[str], rows: list[list[str]]):
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def describe(args, config) -> str:
    return (f"Model: {config.num_layers} layers x {config.hidden_size} hidden, "
            f"{config.num_attention_heads} heads / {config.num_query_groups} query groups, ffn "
            f"{config.ffn_hidden_size}, vocab {config.vocab_size}, seq {args.seq_length}, micro "
            f"batch {args.micro_batch_size}, {args.num_micro_batches} micro-batch(es) per rank "
            f"per step, DP={WORLD_SIZE} (TP=1, PP=1); causal LM on random tokens; "
            f"{args.warmup} warm-up + {args.steps} timed steps per variant, each variant in "
            "fresh processes; malloc mmap threshold " +
            (f"{args.mmap_threshold_kib} KiB." if args.mmap_threshold_kib > 0 else
             "glibc's default."))


def markdown(args, config, machine: str, results: list[VariantResult]) -> str:
    command = " ".join(["python", "benchmarks/bench_memory.py", *sys.argv[1:]])
    out = [f"Command: `{command}`", "", f"Machine: {machine}", "", describe(args, config), ""]
    for title, header, rows in tables(results):
        out += [f"{title}:", "", "| " + " | ".join(header) + " |",
                "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.mmap_threshold_kib > 0:  # read by glibc when each spawned rank starts
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold_kib * 1024)
    config = model_config(args)
    machine = machine_line(args)
    print(f"Machine: {machine}")
    print(describe(args, config), flush=True)
    results = []
    wall, loads = time.perf_counter(), [load_average()]
    for dtype_name in args.dtypes:
        for variant in args.variant_list:
            start = time.perf_counter()
            result = launch(args, variant, dtype_name)
            results.append(result)
            print(f"[{dtype_name}] {variant.name}: peak RSS {result.max_rss / MIB:.0f} MiB, "
                  f"saved activations {result.saved_activations / MIB:.0f} MiB, state "
                  f"{result.state_total / MIB:.0f} MiB, median step {result.median_seconds:.2f}"
                  f" s ({time.perf_counter() - start:.0f} s with start-up; load average "
                  f"{load_average()})", flush=True)
    loads.append(load_average())
    load_line = (f"1-minute load average at start / end: {loads[0]} / {loads[1]} (this run "
                 f"itself adds {WORLD_SIZE})")
    print(f"\ntotal {time.perf_counter() - wall:.0f} s; {load_line}")
    for title, header, rows in tables(results):
        print(f"\n{title}")
        print_table(header, rows)
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write(markdown(args, config, machine, results) + f"\n{load_line}.\n")
        print(f"\nmarkdown written to {args.markdown_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
