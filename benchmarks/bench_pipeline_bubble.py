"""Pipeline bubble of glm_megatron's 1F1B schedule, measured against the ideal (P-1)/(m+P-1).

    python benchmarks/bench_pipeline_bubble.py                 # PP=2 and PP=4, m = 2..16 (~4 min)
    python benchmarks/bench_pipeline_bubble.py --quick         # tiny model, ~30 s
    python benchmarks/bench_pipeline_bubble.py --pp 2 --micro-batches 2,4,8 --markdown-out b.md

The model (ChatGLM3/GLM-4 architecture, 8 layers by default, split evenly over P stages) trains
with `glm_megatron.parallel.schedules.PipelineParallel` (torch.distributed.pipelining's
Schedule1F1B) in a gloo world of P processes (TP=1, DP=1), for each micro-batch count m >= P
(the schedule refuses m < P). Micro-batch size and sequence length stay fixed, so a step's work
grows with m. The m values are interleaved step by step so that load from other processes on the
machine falls on all of them alike.

How the bubble is measured. Each stage's `forward_one_chunk` and `backward_one_chunk` (the
compute of one micro-batch: the stage's layers, the loss on the last stage, the gradient hooks)
are wrapped to record, per call, its wall time (perf_counter) and its CPU time (thread_time;
with one torch thread per process and CPU autograd running on the calling thread, that is the
compute itself, whatever else the core does). Everything else in a step (waiting for a neighbour,
point-to-point transfers, the schedule's splitting and merging) is idle for the stage. Three
estimates, each per timed step, then the median over steps:

- wall: 1 - busy / step wall time, where busy is the stage's summed wall time inside compute
  and the step time is pipeline.run's, after a barrier, on the slowest rank. This is the bubble
  as a user sees it, communication and schedule overhead included; it needs one idle core per
  stage, so it is only shown when P <= CPUs, and the column "compute CPU / wall" (CPU time over
  wall time inside compute, all stages) says how far that held: well below 1, other work took
  the cores while a stage computed, and a stage that waits then lets the other run faster.
- replay: the step's recorded ops, in the order each stage actually ran them, are replayed with
  their measured CPU durations on P ideal processors with free communication (a forward of
  micro-batch i on stage s waits for the forward of i on stage s-1; a backward waits for the
  backward of i on stage s+1). 1 - busy / replayed makespan is the bubble the schedule itself
  causes, unaffected by oversubscription: the method for P > CPUs, where wall time measures the
  time-sharing of cores rather than the schedule.
- fit: the step wall times t(m) fitted to t = a * m + b (least squares over the m values); b is
  the fill and drain (ideally (P-1) per-micro-batch times), so the bubble is b / t(m). Shown when
  P <= CPUs and there are at least 3 m values.

Each is reported for the bottleneck stage (the stage with the most compute) and as the mean idle
fraction over all stages. With equal stages both equal (P-1)/(m+P-1). Stages are not exactly
equal here (the first holds the embedding, the last the output layer and the loss): the
bottleneck stage's idle time is then below the formula and the mean idle above it. The
per-stage compute per micro-batch is printed so the imbalance can be read off, and the formula
is also given for those measured stage times, (T - t_max) / (m t_max + T - t_max) with T the
sum of the stages' times per micro-batch, which the bottleneck columns should match.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glm_megatron.parallel.context import free_port  # noqa: E402
from harness import (become_rank, chatglm3_style_config, cpus, load_average,  # noqa: E402
                     markdown_table, print_table, write_markdown)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

FULL = dict(num_layers=8, hidden_size=512, num_attention_heads=8, num_query_groups=2,
            ffn_hidden_size=1536, vocab_size=2048, seq_length=256, micro_batch_size=2)
QUICK = dict(num_layers=4, hidden_size=256, num_attention_heads=4, num_query_groups=2,
             ffn_hidden_size=704, vocab_size=1024, seq_length=128, micro_batch_size=2)


def ideal_bubble(p: int, m: int) -> float:
    return (p - 1) / (m + p - 1)


def ideal_bubble_unequal(stage_times: list[float], m: int) -> float:
    """The bottleneck stage's idle fraction under 1F1B when stages take different times per
    micro-batch (forward + backward): it works m * t_max and waits for the other stages' fill
    and drain, sum(t) - t_max. Equal times give (P-1)/(m+P-1)."""
    t_max, others = max(stage_times), sum(stage_times) - max(stage_times)
    return others / (m * t_max + others)


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------

def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny model, 1 warm-up + 2 timed steps: a ~1 minute smoke run; explicit "
                        "flags still override it")
    for name in FULL:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                       help=f"default {FULL[name]} ({QUICK[name]} with --quick)")
    p.add_argument("--pp", type=_int_list, default=[2, 4],
                   help="pipeline sizes P to run (each a fresh world of P processes)")
    p.add_argument("--micro-batches", type=_int_list, default=[2, 4, 8, 16],
                   help="micro-batch counts m; for each P those >= P run")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    p.add_argument("--steps", type=int, default=None, help="timed steps per m (default 3; 2 "
                   "quick)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per m first")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--markdown-out", default=None, help="also write the tables here as markdown")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.steps is None:
        args.steps = 2 if args.quick else 3
    if args.steps < 1 or args.warmup < 1:
        p.error("--steps and --warmup must be >= 1 (the first step sets the pipeline up)")
    for pp in args.pp:
        if pp < 2 or args.num_layers % pp:
            p.error(f"--pp {pp}: need 2 <= P and --num-layers ({args.num_layers}) divisible by P")
        if not [m for m in args.micro_batches if m >= pp]:
            p.error(f"--pp {pp}: no --micro-batches value >= {pp} (1F1B needs m >= P)")
    return args




# --------------------------------------------------------------------------------------------
# One rank
# --------------------------------------------------------------------------------------------

class OpRecorder:
    """Wraps a PipelineStage's per-micro-batch compute to log (kind, micro-batch, wall start,
    wall seconds, CPU seconds) for every call."""

    def __init__(self, stage):
        self.ops: list[list] = []
        self._wrap(stage, "forward_one_chunk", "F")
        self._wrap(stage, "backward_one_chunk", "B")

    def _wrap(self, stage, name: str, kind: str):
        original = getattr(stage, name)

        def timed(chunk_id, *args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(chunk_id, *args, **kwargs)
            finally:
                self.ops.append([kind, chunk_id, wall, time.perf_counter() - wall,
                                 time.thread_time() - cpu])

        setattr(stage, name, timed)


def micro_batches(args, m: int) -> list[dict]:
    """m random-token causal micro-batches; the same on every rank (every stage reads the
    batch, as in training)."""
    g = torch.Generator().manual_seed(args.seed + m)
    b, s = args.micro_batch_size, args.seq_length
    out = []
    for _ in range(m):
        seq = torch.randint(0, args.vocab_size, (b, s + 1), generator=g)
        out.append({"tokens": seq[:, :-1].contiguous(), "labels": seq[:, 1:].contiguous(),
                    "loss_mask": torch.ones(b, s),
                    "position_ids": torch.arange(s).expand(b, s).clone()})
    return out


def run_pipeline(args, pp: int, out_dir: str):
    threads = max(1, (os.cpu_count() or pp) // pp)
    torch.set_num_threads(threads)
    import torch.distributed as dist

    from glm_megatron.model.builder import build_model_chunks
    from glm_megatron.parallel.context import initialize_distributed, shutdown
    from glm_megatron.parallel.random import seed_all
    from glm_megatron.parallel.schedules import get_forward_backward_func
    from glm_megatron.training.losses import language_model_loss
    from glm_megatron.training.trainer import Trainer

    ctx = initialize_distributed(1, pp, "cpu")
    seed_all(ctx, args.seed)
    model = build_model_chunks(chatglm3_style_config(args, args.vocab_size), ctx, args.seed,
                               params_dtype=DTYPES[args.dtype])
    counts = [m for m in args.micro_batches if m >= pp]
    trainer = Trainer(model, ctx, num_microbatches=counts[0], loss_fn=language_model_loss,
                      lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, clip_grad=1.0)
    schedules, recorders, batches = {}, {}, {}
    for m in counts:  # one forward-backward function per micro-batch count, one model
        schedules[m] = get_forward_backward_func(model.chunks, ctx, num_microbatches=m,
                                                 loss_fn=language_model_loss,
                                                 scale_loss=trainer.optimizer.scale_loss)
        recorders[m] = OpRecorder(schedules[m].pipeline_stages[0])
        batches[m] = micro_batches(args, m)
    results = {m: [] for m in counts}
    for step in range(args.warmup + args.steps):
        for m in counts:  # interleaved: background load falls on every m alike
            trainer.grads.start(m)
            recorders[m].ops.clear()
            dist.barrier()
            start = time.perf_counter()
            schedules[m](iter(batches[m]))
            wall = time.perf_counter() - start
            trainer.finalize_grads()
            trainer.optimizer.step()
            if step >= args.warmup:
                results[m].append({"wall": wall, "start": start,
                                   "ops": list(recorders[m].ops)})
    rank = dist.get_rank()
    with open(os.path.join(out_dir, f"stage{ctx.pp_rank}.json"), "w") as f:
        json.dump({"rank": rank, "threads": threads, "results": results}, f)
    shutdown()






def _entry(rank: int, world_size: int, port: int, args, out_dir: str):
    become_rank(rank, world_size, port, max(1, (os.cpu_count() or world_size) // world_size))
    run_pipeline(args, world_size, out_dir)


def launch(args, pp: int) -> list[dict]:
    """Per stage: {"results": {m: [per timed step {"wall", "ops"}]}}."""
    with tempfile.TemporaryDirectory(prefix="bench_bubble_") as out_dir:
        mp.start_processes(_entry, args=(pp, free_port(), args, out_dir), nprocs=pp,
                           join=True, start_method="spawn")
        stages = []
        for s in range(pp):
            with open(os.path.join(out_dir, f"stage{s}.json")) as f:
                stages.append(json.load(f))
    return stages


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------

def replay_makespan(ops_per_stage: list[list]) -> float:
    """Makespan of the recorded ops (each stage in its recorded order, CPU durations) on one
    ideal processor per stage with free communication."""
    p = len(ops_per_stage)
    finish: dict[tuple, float] = {}
    index, free_at = [0] * p, [0.0] * p
    remaining = sum(len(ops) for ops in ops_per_stage)
    while remaining:
        progressed = False
        for s in range(p):
            while index[s] < len(ops_per_stage[s]):
                kind, mb, duration = ops_per_stage[s][index[s]]
                dep = ((s - 1, "F", mb) if kind == "F" and s > 0 else
                       (s + 1, "B", mb) if kind == "B" and s < p - 1 else None)
                if dep is not None and dep not in finish:
                    break
                begin = max(free_at[s], finish[dep] if dep is not None else 0.0)
                free_at[s] = finish[(s, kind, mb)] = begin + duration
                index[s] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise RuntimeError("recorded 1F1B ops have a dependency cycle")
    return max(free_at)


def _fit(ms: list[int], times: list[float]) -> tuple[float, float]:
    """Least-squares a, b of t = a * m + b."""
    mean_m, mean_t = statistics.fmean(ms), statistics.fmean(times)
    var = sum((m - mean_m) ** 2 for m in ms)
    a = sum((m - mean_m) * (t - mean_t) for m, t in zip(ms, times)) / var
    return a, mean_t - a * mean_m


def analyse(pp: int, stages: list[dict], cpus: int) -> list[dict]:
    counts = sorted(int(m) for m in stages[0]["results"])
    rows = []
    for m in counts:
        per_step = []
        for i in range(len(stages[0]["results"][str(m)])):
            records = [st["results"][str(m)][i] for st in stages]
            wall = max(r["wall"] for r in records)
            busy_wall = [sum(op[3] for op in r["ops"]) for r in records]
            busy_cpu = [sum(op[4] for op in r["ops"]) for r in records]
            makespan = replay_makespan([[(op[0], op[1], op[4]) for op in r["ops"]]
                                        for r in records])
            per_step.append(dict(
                wall=wall, busy_cpu=busy_cpu,
                wall_bottleneck=1 - max(busy_wall) / wall,
                wall_mean=1 - statistics.fmean(busy_wall) / wall,
                replay_bottleneck=1 - max(busy_cpu) / makespan,
                replay_mean=1 - statistics.fmean(busy_cpu) / makespan,
                cpu_over_wall=sum(busy_cpu) / sum(busy_wall)))
        med = {k: statistics.median(s[k] for s in per_step)
               for k in per_step[0] if k != "busy_cpu"}
        med["stage_ms_per_mb"] = [1000 * statistics.median(s["busy_cpu"][j] for s in per_step) / m
                                  for j in range(pp)]
        rows.append(dict(pp=pp, m=m, ideal=ideal_bubble(pp, m),
                         ideal_unequal=ideal_bubble_unequal(med["stage_ms_per_mb"], m),
                         oversubscribed=pp > cpus, **med))
    if pp <= cpus and len(rows) >= 3:
        a, b = _fit([r["m"] for r in rows], [r["wall"] for r in rows])
        for r in rows:
            r["fit"] = b / (a * r["m"] + b)
            r["fit_fill_in_mb"] = b / a  # fill + drain in per-micro-batch times (ideal P-1)
    return rows


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def machine_line() -> str:
    return (f"{cpus()}, torch {torch.__version__}, max(1, CPUs // P) torch threads per stage "
            f"process, Python {platform.python_version()}")


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["P", "m", "ideal (P-1)/(m+P-1)", "ideal, measured stage times: bottleneck",
              "replay: bottleneck", "replay: mean idle", "wall: bottleneck", "wall: mean idle",
              "fit", "compute CPU / wall", "step wall s",
              "compute ms / micro-batch per stage (CPU)"]
    out = []
    for r in rows:
        shown = not r["oversubscribed"]
        out.append([str(r["pp"]), str(r["m"]), _pct(r["ideal"]), _pct(r["ideal_unequal"]),
                    _pct(r["replay_bottleneck"]), _pct(r["replay_mean"]),
                    _pct(r["wall_bottleneck"]) if shown else "n/a (P > CPUs)",
                    _pct(r["wall_mean"]) if shown else "n/a",
                    _pct(r.get("fit")), f"{r['cpu_over_wall']:.2f}", f"{r['wall']:.2f}",
                    " / ".join(f"{v:.0f}" for v in r["stage_ms_per_mb"])])
    return header, out


def notes(all_rows: list[dict]) -> list[str]:
    lines = []
    for pp in dict.fromkeys(r["pp"] for r in all_rows):
        rows = [r for r in all_rows if r["pp"] == pp]
        if "fit_fill_in_mb" in rows[0]:
            lines.append(f"P={pp}: fitted fill + drain = {rows[0]['fit_fill_in_mb']:.2f} "
                         f"micro-batch times (ideal {pp - 1})")
        ratio = statistics.fmean(r["cpu_over_wall"] for r in rows)
        lines.append(f"P={pp}: compute CPU time / compute wall time = {ratio:.2f} on average "
                     "(below 1: the stage processes shared their cores, with each other or "
                     "with other work, and the wall and fit columns measure that too)")
    return lines




def describe(args, config) -> str:
    return (f"Model: {config.num_layers} layers x {config.hidden_size} hidden, "
            f"{config.num_attention_heads} heads / {config.num_query_groups} query groups, ffn "
            f"{config.ffn_hidden_size}, vocab {config.vocab_size}, seq {args.seq_length}, micro "
            f"batch {args.micro_batch_size}, {args.dtype}; layers split evenly over P stages "
            f"(TP=1, DP=1), 1F1B; {args.warmup} warm-up + {args.steps} timed steps per m, the m "
            "values interleaved; medians over timed steps.")


def main(argv=None) -> int:
    args = parse_args(argv)
    config = chatglm3_style_config(args, args.vocab_size)
    machine = machine_line()
    cpus = os.cpu_count() or 1
    print(f"Machine: {machine}")
    print(describe(args, config), flush=True)
    rows = []
    started, loads = time.perf_counter(), [load_average()]
    for pp in args.pp:
        begin = time.perf_counter()
        rows += analyse(pp, launch(args, pp), cpus)
        print(f"P={pp} done in {time.perf_counter() - begin:.0f} s (load average "
              f"{load_average()})", flush=True)
    loads.append(load_average())
    print(f"total {time.perf_counter() - started:.0f} s\n")
    header, body = table(rows)
    print_table(header, body)
    summary = notes(rows) + [f"1-minute load average at start / end: {loads[0]} / {loads[1]} "
                             "(this run itself adds P)"]
    print("\n" + "\n".join(summary))
    if args.markdown_out:
        write_markdown(args.markdown_out, [
            f"Machine: {machine}", "", describe(args, config), "", *markdown_table(header, body),
            "", *(f"- {line}" for line in summary)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
