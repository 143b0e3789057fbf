"""Peak memory per rank and step time, with and without activation recomputation and the
distributed optimizer, at DP=2 (two gloo processes, one CPU core each).

    python benchmarks/bench_memory.py                  # 8 x 512, seq 512, micro batch 4, bf16
    python benchmarks/bench_memory.py --quick          # tiny model, ~30 s smoke run
    python benchmarks/bench_memory.py --dtypes bf16,fp32 --markdown-out mem.md

Variants (--variants picks some by number): 1 baseline, 2 full recomputation (uniform, one layer
per checkpoint), 3 selective recomputation (core attention), 4 the distributed optimizer
(ZeRO-1), 5 both 2 and 4. Every variant runs in a FRESH pair of processes, because a process's
peak RSS (ru_maxrss) only ever grows; the whole list runs --rounds times, the variants taking
turns, so that load from other processes drifting over time falls on all of them alike.

Memory figures per rank (the tables take the worst rank):

- peak RSS in a step: a sampling thread reads /proc/self/statm every millisecond during each
  step; the highest resident size seen (median over the timed steps). This is the peak memory
  per rank in steady training: interpreter and imports (a fixed few hundred MiB, shown as "RSS
  after imports"), model and optimizer state, and the step's transient memory (activations,
  gradient reduction, optimizer temporaries). The step RSS rise (peak minus the size just
  before the step), the warm-up step's peak (it also creates the Adam moments) and ru_maxrss
  over the whole process life are in the second table.
- saved activations: the bytes of tensors autograd saves for backward during one micro-batch's
  forward (the warm-up step), counted with torch.autograd.graph.saved_tensors_hooks over unique
  storages, parameters excluded, and split into what the transformer block saves (its layers
  and final norm) and the rest (embedding, output layer, loss). With one micro-batch in flight
  this is the activation memory held when the forward ends, the quantity recomputation trades
  for compute. Inside a recomputed region torch.utils.checkpoint's own hooks take over; the
  region's inputs, which checkpoint keeps for the recomputation, are still counted.
- model + optimizer state: bytes of the tensors that live across steps, counted by walking them
  after the last step: parameters, the fp32 gradient buffer, fp32 master weights (separate
  tensors only: an fp32 parameter that is its own master counts once) and Adam moments. The
  distributed optimizer's reduce-scatter outputs are shown apart: they are made in the backward
  pass and dropped at the start of the next step.

Allocator: glibc's malloc keeps freed blocks below its mmap threshold (which grows up to 32 MiB
as large blocks are freed) and returns them to the system only from the top of its heap, so by
default RSS says more about the allocator's history than about live tensors. The ranks are
therefore started with MALLOC_MMAP_THRESHOLD_ fixed at --mmap-threshold-kib (128 KiB): every
tensor above it gets its own mapping, returned to the system when freed, and RSS follows live
memory. This costs page faults on each new large tensor (the system CPU time column), for every
variant alike. --mmap-threshold-kib 0 keeps glibc's default.

Step time: each step starts after a barrier; a step's time is the slowest rank's, and the table
gives the median over the timed steps of all rounds, and the fastest step (load from elsewhere
only ever slows a step down). Other processes on the machine make wall time noisy, so the CPU
time each rank's process spent in the step (user + system, all its threads: the torch thread,
gloo's threads and the RSS sampler) is shown as well: it is less affected by load from
elsewhere, though not immune where cores are shared. The second table splits it into user
time (the computation) and system time, mostly page faults on fresh memory, which depends on
the allocator setting above. The losses of the last step are printed so that every variant can
be seen to train the same way (recomputation is exact; the distributed optimizer only changes
the order of floating-point sums).

Absolute numbers depend on the machine and on what else runs on it: compare the ratios to the
baseline within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial

import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glm_megatron.parallel.context import free_port  # noqa: E402
from harness import (RssSampler, become_rank, chatglm3_style_config, cpus,  # noqa: E402
                     current_rss, load_average, markdown_table, print_table,
                     write_markdown)

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
                   help="tiny model, 1 round of 2 timed steps: a ~30 s smoke run; explicit "
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
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per round (default 3; 2 quick)")
    p.add_argument("--rounds", type=int, default=None,
                   help="times the whole variant list runs, variants taking turns (default 2; "
                        "1 quick); the timed steps of all rounds are pooled")
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
        args.steps = 2 if args.quick else 3
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
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
    if args.steps < 1 or args.warmup < 1 or args.rounds < 1:
        p.error("--steps, --warmup and --rounds must be >= 1 (the warm-up step counts "
                "activations)")
    return args




# --------------------------------------------------------------------------------------------
# Measurements inside one rank
# --------------------------------------------------------------------------------------------

def max_rss() -> int:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class SavedActivationCounter:
    """Bytes autograd saves for backward per micro-batch forward: unique storages, parameters
    excluded, split into what the transformer block saves (its layers and final norm) and what
    the rest saves (embedding, output layer, loss). A forward pre-hook on the model chunk starts
    a new micro-batch; hooks on the block mark when its forward runs."""

    def __init__(self, chunk: torch.nn.Module, params):
        self.param_storages = {p.untyped_storage().data_ptr() for p in params}
        self.per_forward: list[dict[int, tuple[int, str]]] = []  # storage -> (bytes, region)
        self._chunk, self._block = chunk, chunk.decoder
        self._region = "head"
        self._handles = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if self.per_forward and ptr not in self.param_storages:
            self.per_forward[-1].setdefault(ptr, (storage.nbytes(), self._region))
        return tensor

    def _new_forward(self, *_):
        self.per_forward.append({})

    def _set_region(self, region: str):
        def hook(*_):
            self._region = region
        return hook

    def __enter__(self):
        self._handles = [self._chunk.register_forward_pre_hook(self._new_forward),
                         self._block.register_forward_pre_hook(self._set_region("layers")),
                         self._block.register_forward_hook(self._set_region("head"))]
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        for handle in self._handles:
            handle.remove()

    def peak_bytes(self) -> dict[str, int]:
        """{"layers": ..., "head": ...} of the micro-batch that saved the most."""
        def split(seen):
            out = {"layers": 0, "head": 0}
            for nbytes, region in seen.values():
                out[region] += nbytes
            return out
        return max((split(seen) for seen in self.per_forward), key=lambda d: sum(d.values()),
                   default={"layers": 0, "head": 0})


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


def measured_step(args, step) -> dict:
    """Run one training step after a barrier, sampling RSS; returns its wall time, this process's
    user and system CPU time (all threads), the loss, RSS before, and the highest RSS seen."""
    import torch.distributed as dist

    dist.barrier()
    before = current_rss()
    with RssSampler(args.sample_interval_ms / 1000.0) as sampler:
        cpu, start = os.times(), time.perf_counter()
        loss = step()
        seconds, cpu_end = time.perf_counter() - start, os.times()
    return dict(seconds=seconds, user=cpu_end.user - cpu.user,
                system=cpu_end.system - cpu.system, loss=loss, before=before,
                peak=sampler.peak)


def run_variant(args, variant: Variant, dtype_name: str, out_dir: str):
    """One rank of one variant: build, warm up (counting activations), time, record."""
    torch.set_num_threads(args.threads)
    rss_start = current_rss()
    from glm_megatron.model.builder import build_model_chunks
    from glm_megatron.model.options import ExecutionOptions
    from glm_megatron.parallel.context import initialize_distributed, shutdown
    from glm_megatron.parallel.random import seed_all
    from glm_megatron.training.losses import language_model_loss
    from glm_megatron.training.trainer import Trainer

    ctx = initialize_distributed(1, 1, "cpu")
    rank = ctx.rank
    seed_all(ctx, args.seed)
    rss_imported = current_rss()
    model = build_model_chunks(chatglm3_style_config(args, args.vocab_size), ctx, args.seed,
                               params_dtype=DTYPES[dtype_name],
                               options=ExecutionOptions(False, *variant.recompute))
    m = args.num_micro_batches
    trainer = Trainer(model, ctx, num_microbatches=m, loss_fn=language_model_loss, lr=1e-4,
                      weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, clip_grad=1.0,
                      distributed_optimizer=variant.distributed_optimizer)
    grads, optimizer = trainer.grads, trainer.optimizer
    rss_built = current_rss()
    total_steps = args.warmup + args.steps
    batches = synthetic_batches(args, ctx.dp_rank, total_steps * m)

    def step(i: int) -> float:
        return trainer.train_step(iter(batches[i * m:(i + 1) * m]))[0].mean_loss(ctx)

    counter = SavedActivationCounter(model.chunks[0], model.parameters())
    with counter:
        warmup_peak = measured_step(args, partial(step, 0))["peak"]
    for i in range(1, args.warmup):
        warmup_peak = max(warmup_peak, measured_step(args, partial(step, i))["peak"])
    timed = [measured_step(args, partial(step, i)) for i in range(args.warmup, total_steps)]
    result = dict(rank=rank, steps=timed, warmup_peak=warmup_peak,
                  saved_activation_bytes=counter.peak_bytes(),
                  state_bytes=state_bytes(model, grads, optimizer), max_rss=max_rss(),
                  rss_start=rss_start, rss_imported=rss_imported, rss_built=rss_built,
                  num_params=sum(p.numel() for p in model.parameters()))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    shutdown()


# --------------------------------------------------------------------------------------------
# Launching fresh processes per variant
# --------------------------------------------------------------------------------------------





def _entry(rank: int, world_size: int, port: int, args, variant, dtype_name, out_dir):
    become_rank(rank, world_size, port, args.threads)
    run_variant(args, variant, dtype_name, out_dir)


@dataclass
class VariantResult:
    """One variant, summarised over its rounds (fresh process pairs) and ranks."""
    dtype: str
    variant: str
    distributed_optimizer: bool
    step_seconds: list  # per timed step of every round: the slowest rank
    cpu_seconds: list  # per timed step: the most user + system CPU time of a rank's process
    user_seconds: list  # per timed step: the most user CPU time of a rank's process
    system_seconds: list  # per timed step: the most system CPU time of a rank's process
    step_peak: float  # median over timed steps of the highest RSS of a rank
    rss_rise: float  # median over timed steps of the largest rise of a rank
    warmup_peak: int  # highest RSS in the warm-up step(s), max over ranks and rounds
    max_rss: int  # ru_maxrss, max over ranks and rounds
    rss_imported: int
    rss_built: int
    saved: dict  # saved activation bytes, "layers" / "head", max over ranks
    state: dict  # bytes of long-lived tensors per kind, max over ranks
    losses: list  # rank 0, last round
    num_params: int

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.step_seconds)

    @property
    def median_cpu_seconds(self) -> float:
        return statistics.median(self.cpu_seconds)

    @property
    def median_user_seconds(self) -> float:
        return statistics.median(self.user_seconds)

    @property
    def state_total(self) -> int:
        """Tensors kept for the whole run. The distributed optimizer's reduce-scatter outputs
        are left out: they are made in the backward pass and dropped by the next step's
        GradientBuffer.start, so they are not alive when the forward pass peaks."""
        return sum(v for k, v in self.state.items() if k != TRANSIENT_STATE)


TRANSIENT_STATE = "reduce-scatter outputs"


def launch(args, variant: Variant, dtype_name: str) -> list[dict]:
    """One round of one variant in a fresh pair of processes: each rank's record."""
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as out_dir:
        mp.start_processes(_entry, args=(WORLD_SIZE, free_port(), args, variant, dtype_name,
                                         out_dir),
                           nprocs=WORLD_SIZE, join=True, start_method="spawn")
        ranks = []
        for r in range(WORLD_SIZE):
            with open(os.path.join(out_dir, f"rank{r}.json")) as f:
                ranks.append(json.load(f))
    return ranks


def slowest_step_times(ranks: list[dict]) -> list[float]:
    return [max(r["steps"][i]["seconds"] for r in ranks) for i in range(len(ranks[0]["steps"]))]


def summarise(variant: Variant, dtype_name: str, rounds: list[list[dict]]) -> VariantResult:
    """Pool the timed steps of every round; per step take the worst rank."""
    steps = [[r["steps"][i] for r in ranks] for ranks in rounds
             for i in range(len(ranks[0]["steps"]))]
    every_rank = [r for ranks in rounds for r in ranks]
    first = rounds[0]
    return VariantResult(
        dtype=dtype_name, variant=variant.name,
        distributed_optimizer=variant.distributed_optimizer,
        step_seconds=[max(r["seconds"] for r in step) for step in steps],
        cpu_seconds=[max(r["user"] + r["system"] for r in step) for step in steps],
        user_seconds=[max(r["user"] for r in step) for step in steps],
        system_seconds=[max(r["system"] for r in step) for step in steps],
        step_peak=statistics.median(max(r["peak"] for r in step) for step in steps),
        rss_rise=statistics.median(max(r["peak"] - r["before"] for r in step) for step in steps),
        warmup_peak=max(r["warmup_peak"] for r in every_rank),
        max_rss=max(r["max_rss"] for r in every_rank),
        rss_imported=max(r["rss_imported"] for r in every_rank),
        rss_built=max(r["rss_built"] for r in every_rank),
        saved={k: max(r["saved_activation_bytes"][k] for r in first)
               for k in first[0]["saved_activation_bytes"]},
        state={k: max(r["state_bytes"][k] for r in first) for k in first[0]["state_bytes"]},
        losses=[s["loss"] for s in rounds[-1][0]["steps"]], num_params=first[0]["num_params"])


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def machine_line(args) -> str:
    return (f"{cpus()}, torch {torch.__version__}, {WORLD_SIZE} ranks x {args.threads} "
            f"thread(s), Python {platform.python_version()}")


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def _mib(value: float) -> str:
    return f"{value / MIB:.0f}"


def megatron_bytes_per_param(r: VariantResult) -> float:
    """What Megatron-LM's distributed-optimizer guide gives for the same precision: bf16
    weights + fp32 gradients 18 bytes (6 + 12 / DP sharded), fp32 16 (8 + 8 / DP sharded: fp32
    parameters are their own master weights there)."""
    fixed, sharded = (6, 12) if r.dtype == "bf16" else (8, 8)
    return fixed + sharded / (WORLD_SIZE if r.distributed_optimizer else 1)


def main_table(rows_of: list[VariantResult]) -> tuple[list[str], list[list[str]]]:
    base = rows_of[0]
    header = ["variant", "peak RSS in a step MiB", "x base", "saved activations: layers MiB",
              "x base", "saved activations: embedding + head + loss MiB",
              "model + optimizer state MiB", "x base", "median step s", "x base",
              "fastest step s", "x base", "CPU s / step", "x base", "last loss"]
    rows = [[r.variant, _mib(r.step_peak), _ratio(r.step_peak, base.step_peak),
             _mib(r.saved["layers"]), _ratio(r.saved["layers"], base.saved["layers"]),
             _mib(r.saved["head"]),
             _mib(r.state_total), _ratio(r.state_total, base.state_total),
             f"{r.median_seconds:.2f}", _ratio(r.median_seconds, base.median_seconds),
             f"{min(r.step_seconds):.2f}", _ratio(min(r.step_seconds), min(base.step_seconds)),
             f"{r.median_cpu_seconds:.2f}",
             _ratio(r.median_cpu_seconds, base.median_cpu_seconds),
             f"{r.losses[-1]:.5f}"] for r in rows_of]
    return header, rows


def detail_table(rows_of: list[VariantResult]) -> tuple[list[str], list[list[str]]]:
    kinds = [k for k in rows_of[0].state if k != TRANSIENT_STATE]
    header = ["variant", *[f"{k} MiB" for k in kinds], "state MiB", "bytes / param",
              "Megatron-LM bytes / param", f"{TRANSIENT_STATE} MiB (held after the step)",
              "RSS after imports MiB", "RSS after build MiB", "step RSS rise MiB",
              "warm-up step peak MiB", "lifetime peak RSS MiB", "user CPU s / step",
              "system CPU s / step", "all step times s"]
    rows = [[r.variant, *[_mib(r.state[k]) for k in kinds], _mib(r.state_total),
             f"{r.state_total / r.num_params:.1f}", f"{megatron_bytes_per_param(r):g}",
             _mib(r.state.get(TRANSIENT_STATE, 0)), _mib(r.rss_imported), _mib(r.rss_built),
             _mib(r.rss_rise), _mib(r.warmup_peak), _mib(r.max_rss),
             f"{r.median_user_seconds:.2f}", f"{statistics.median(r.system_seconds):.2f}",
             ", ".join(f"{s:.2f}" for s in r.step_seconds)] for r in rows_of]
    return header, rows


def tables(results: list[VariantResult]) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    for dtype in dict.fromkeys(r.dtype for r in results):
        rows_of = [r for r in results if r.dtype == dtype]
        out.append((f"{dtype}: per rank (max over the {WORLD_SIZE} ranks); ratios to "
                    f"'{rows_of[0].variant}'", *main_table(rows_of)))
        out.append((f"{dtype}: model + optimizer state per rank "
                    f"({rows_of[0].num_params / 1e6:.1f} M parameters), and where RSS stood",
                    *detail_table(rows_of)))
    return out




def describe(args, config) -> str:
    return (f"Model: {config.num_layers} layers x {config.hidden_size} hidden, "
            f"{config.num_attention_heads} heads / {config.num_query_groups} query groups, ffn "
            f"{config.ffn_hidden_size}, vocab {config.vocab_size}, seq {args.seq_length}, micro "
            f"batch {args.micro_batch_size}, {args.num_micro_batches} micro-batch(es) per rank "
            f"per step, DP={WORLD_SIZE} (TP=1, PP=1); causal LM on random tokens; "
            f"{args.rounds} round(s) of every variant in turn, each in fresh processes, with "
            f"{args.warmup} warm-up + {args.steps} timed steps; step figures are medians over "
            "the timed steps of all rounds; malloc mmap threshold " +
            (f"{args.mmap_threshold_kib} KiB." if args.mmap_threshold_kib > 0 else
             "glibc's default."))


def markdown(args, config, machine: str, results: list[VariantResult]) -> list[str]:
    out = [f"Machine: {machine}", "", describe(args, config), ""]
    for title, header, rows in tables(results):
        out += [f"{title}:", "", *markdown_table(header, rows)]
        out.append("")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.mmap_threshold_kib > 0:  # read by glibc when each spawned rank starts
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold_kib * 1024)
    config = chatglm3_style_config(args, args.vocab_size)
    machine = machine_line(args)
    print(f"Machine: {machine}")
    print(describe(args, config), flush=True)
    rounds: dict[tuple, list] = {}
    wall, loads = time.perf_counter(), [load_average()]
    for round_index in range(args.rounds):  # variants take turns: drifting load hits all alike
        for dtype_name in args.dtypes:
            for variant in args.variant_list:
                start = time.perf_counter()
                ranks = launch(args, variant, dtype_name)
                rounds.setdefault((dtype_name, variant), []).append(ranks)
                times = ", ".join(f"{t:.2f}" for t in slowest_step_times(ranks))
                print(f"[round {round_index + 1}/{args.rounds}, {dtype_name}] {variant.name}: "
                      f"step times {times} s ({time.perf_counter() - start:.0f} s with "
                      f"start-up; load average {load_average()})", flush=True)
    results = [summarise(variant, dtype_name, ranks)
               for (dtype_name, variant), ranks in rounds.items()]
    loads.append(load_average())
    load_line = (f"1-minute load average at start / end: {loads[0]} / {loads[1]} (this run "
                 f"itself adds {WORLD_SIZE})")
    print(f"\ntotal {time.perf_counter() - wall:.0f} s; {load_line}")
    for title, header, rows in tables(results):
        print(f"\n{title}")
        print_table(header, rows)
    if args.markdown_out:
        write_markdown(args.markdown_out, markdown(args, config, machine, results) +
                       [f"{load_line}."])
    return 0


if __name__ == "__main__":
    sys.exit(main())
