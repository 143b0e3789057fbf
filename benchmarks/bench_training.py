"""Training throughput: glm_megatron's step against transformers' GlmForCausalLM, eager and
compiled, one run, one device.

Every side trains the same ChatGLM3/GLM-4-architecture model (RMSNorm, SwiGLU, GQA, RoPE on half
of each head, QKV bias, untied output layer) on the same random token batches, in this process,
with the same optimizer work: torch's fused AdamW (lr 1e-4, betas 0.9 / 0.95, weight decay 0.1)
after clipping the gradient norm at 1.0. glm_megatron's AdamW updates fp32 master weights
(MixedPrecisionAdamW); transformers' updates the model's own parameters.

    python benchmarks/bench_training.py                 # 12 x 768, seq 512, batch 4; fp32, bf16
    python benchmarks/bench_training.py --quick --steps 2 --warmup 1    # tiny model, smoke test
    python benchmarks/bench_training.py --device cuda --dtypes bf16 --num-layers 16 \\
        --hidden-size 2048 --num-attention-heads 16 --ffn-hidden-size 5632 \\
        --vocab-size 151552 --seq-length 4096 --micro-batch-size 1 --matmul-size 8192

Sides (`--frameworks`): `ours`; `ours-compile` (each transformer layer compiled, as
`pretrain_glm.py --compile` does); `transformers` (eager); `transformers-compile` (the whole
model under `torch.compile`). The compiled sides use `--compile-backend` (inductor by default)
and compile in the warm-up steps.
bf16 on the transformers sides (`--hf-bf16`): `autocast` (fp32 weights, gradients and AdamW
state, forward under torch.autocast: what the transformers Trainer does with bf16=True) or
`pure` (the model cast to bf16, AdamW state in bf16); `autocast,pure` times both. glm_megatron's
bf16 is its own mixed precision: bf16 weights, an fp32 gradient buffer, fp32 master weights.

Timing: `--warmup` untimed steps, then `--steps` timed steps per side, the sides taking turns
step by step so that load from other processes falls on all of them alike. Per side the table
gives the fastest, median and slowest step; tokens/s and model FLOP/s use the median. The ratio
ours / other is the other side's median step time over ours; its spread is the range of the
per-turn ratios (step i of the other side over step i of ours). `transformers-compile` is
compared with `ours-compile` when both run (compiled against compiled), every other side with
`ours`. Model FLOPs are Megatron-LM's
formula (`glm_megatron.training.metrics.model_flops_per_iteration`); MFU is model FLOP/s over
the torch.matmul rate of the same dtype measured in this run (best of `--matmul-reps` products
of two `--matmul-size` square matrices, before and after the training runs).
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from harness import (chatglm3_style_config, cpus, load_average, markdown_table, print_table,
                     write_markdown)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FRAMEWORKS = ("ours", "ours-compile", "transformers", "transformers-compile")
HF_BF16_MODES = ("autocast", "pure")
OPTIMIZER = ("torch's fused AdamW on every side (ours on fp32 master weights), gradient norm "
             "clipped at 1.0")

FULL = dict(num_layers=12, hidden_size=768, num_attention_heads=12, num_query_groups=2,
            ffn_hidden_size=2048, vocab_size=32000, seq_length=512, micro_batch_size=4)
QUICK = dict(num_layers=2, hidden_size=128, num_attention_heads=4, num_query_groups=2,
             ffn_hidden_size=352, vocab_size=1024, seq_length=64, micro_batch_size=2)


# --------------------------------------------------------------------------------------------
# Arguments and shared inputs
# --------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true",
                   help="tiny model for a smoke test; explicit size flags still override it")
    for name in FULL:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                       help=f"default {FULL[name]} ({QUICK[name]} with --quick)")
    p.add_argument("--make-vocab-size-divisible-by", type=int, default=128,
                   help="pad the vocabulary up to a multiple of this, as Megatron-LM does "
                        "(default 128)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16 (default "
                   "both)")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                   help=f"comma list of {', '.join(FRAMEWORKS)} (default all)")
    p.add_argument("--hf-bf16", default="autocast",
                   help="how the transformers sides run bf16: autocast (default), pure, or "
                        "'autocast,pure'")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the compiled sides (default inductor; "
                        "aot_eager traces without generating kernels: a quick plumbing check)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="cuda when a GPU is visible, else cpu (default auto)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per side (default 10)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps per side first; they include torch.compile (default 2)")
    p.add_argument("--matmul-size", type=int, default=None,
                   help="side of the square matrices of the matmul rate (default 2048 on CPU, "
                        "8192 on CUDA)")
    p.add_argument("--matmul-reps", type=int, default=5, help="(default 5)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: "
                   "torch's choice)")
    p.add_argument("--profile", action="store_true",
                   help="after timing, one extra step per side under torch.profiler: the ops "
                        "with the most self time")
    p.add_argument("--markdown-out", default=None, help="also write the tables here as "
                   "markdown ('-': to stdout)")
    args = p.parse_args(argv)
    for name, default in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.dtypes = _choices(args.dtypes, DTYPES, "--dtypes")
    args.frameworks = _choices(args.frameworks, FRAMEWORKS, "--frameworks")
    args.hf_bf16 = _choices(args.hf_bf16, HF_BF16_MODES, "--hf-bf16")
    divisor = args.make_vocab_size_divisible_by
    args.padded_vocab_size = int(math.ceil(args.vocab_size / divisor) * divisor)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be at least 1 and --warmup at least 0")
    from glm_megatron.config import ConfigError
    from glm_megatron.parallel.context import resolve_device
    try:
        args.device = resolve_device(args.device).type
    except ConfigError as error:
        p.error(str(error))
    if args.matmul_size is None:
        args.matmul_size = 8192 if args.device == "cuda" else 2048
    return args


def _choices(text: str, allowed, flag: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise SystemExit(f"{flag}: {bad or text!r} not in {list(allowed)}")
    return values


def hf_config(config, args):
    from transformers import GlmConfig

    return GlmConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.ffn_hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_query_groups, head_dim=config.kv_channels,
        hidden_act="silu", attention_dropout=0.0, max_position_embeddings=args.seq_length,
        initializer_range=config.init_method_std, rms_norm_eps=config.norm_epsilon,
        use_cache=False, tie_word_embeddings=False, attention_bias=True, pad_token_id=0,
        eos_token_id=None, bos_token_id=None,
        rope_parameters={"rope_type": "default", "rope_theta": config.rotary_base,
                         "partial_rotary_factor": config.rotary_percent})


def random_sequences(args, count: int) -> list[torch.Tensor]:
    """`count` batches of seq_length + 1 random tokens, the same for every side."""
    g = torch.Generator().manual_seed(args.seed)
    shape = (args.micro_batch_size, args.seq_length + 1)
    return [torch.randint(0, args.vocab_size, shape, generator=g) for _ in range(count)]


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

@dataclass
class Result:
    dtype: str
    framework: str  # a FRAMEWORKS name, "/<bf16 mode>" appended when several modes run
    precision: str
    step_seconds: list[float]
    first_loss: float
    flops_per_step: float
    tokens_per_step: int

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.step_seconds)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step / self.median_seconds

    @property
    def flops_per_second(self) -> float:
        return self.flops_per_step / self.median_seconds


def matmul_rate(dtype: torch.dtype, n: int, reps: int, device: torch.device) -> float:
    """FLOP/s of torch.matmul on two n x n random matrices: the best of `reps` after one
    warm-up (the machine's capability; a median would fold in load from other processes)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    torch.matmul(a, b)
    synchronize(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2.0 * n ** 3 / min(times)


def measure_matmul_rates(args, device, best: dict[str, float]) -> dict[str, float]:
    """Each dtype's matmul rate, keeping the best seen so far (measured before and after the
    training runs, so that a burst of load from elsewhere does not set the yardstick)."""
    for name in args.dtypes:
        rate = matmul_rate(DTYPES[name], args.matmul_size, args.matmul_reps, device)
        print(f"matmul {args.matmul_size}x{args.matmul_size} {name}: {rate / 1e12:.3f} TFLOP/s",
              flush=True)
        best = {**best, name: max(rate, best.get(name, 0.0))}
    return best


def time_interleaved(steps: dict[str, Callable[[int], float]], warmup: int, count: int,
                     label: str, device: torch.device) -> dict[str, tuple[list[float], float]]:
    """Warm every side up, then time `count` steps per side, the sides taking turns step by
    step. Returns {side: (timed step seconds, loss of its first step)}."""
    times = {name: [] for name in steps}
    first_loss = {}
    for i in range(warmup + count):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            loss = step(i)
            synchronize(device)
            elapsed = time.perf_counter() - start
            first_loss.setdefault(name, loss)
            if i >= warmup:
                times[name].append(elapsed)
            kind = "warmup" if i < warmup else "timed"
            print(f"    {name}/{label} step {i + 1}/{warmup + count} ({kind}): {elapsed:8.3f} s  "
                  f"loss {loss:.4f}", flush=True)
    return {name: (times[name], first_loss[name]) for name in steps}


def profile_step(step: Callable[[int], float], index: int, label: str, device: torch.device,
                 rows: int = 20):
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    with profile(activities=activities) as prof:
        step(index)
        synchronize(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\n  torch.profiler, one {label} step, top {rows} ops by {sort}:")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows))


def make_ours_step(config, args, dtype: torch.dtype, sequences: list[torch.Tensor],
                   device: torch.device, compiled: bool):
    """glm_megatron's training step (Trainer: model, fp32 gradient buffer, MixedPrecisionAdamW)
    in a one-process context: no process group needed."""
    from glm_megatron.model.builder import build_model_chunks
    from glm_megatron.model.options import ExecutionOptions
    from glm_megatron.parallel.context import single_process_context
    from glm_megatron.parallel.random import seed_all
    from glm_megatron.training.losses import language_model_loss
    from glm_megatron.training.trainer import Trainer

    ctx = single_process_context(device)
    seed_all(ctx, args.seed)
    options = ExecutionOptions(compile_backend=args.compile_backend if compiled else None)
    model = build_model_chunks(config, ctx, args.seed, params_dtype=dtype, options=options)
    trainer = Trainer(model, ctx, num_microbatches=1, loss_fn=language_model_loss, lr=1e-4,
                      weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, clip_grad=1.0)
    b, s = args.micro_batch_size, args.seq_length
    positions = torch.arange(s).expand(b, s).contiguous()
    batches = [{"tokens": seq[:, :-1].contiguous(), "labels": seq[:, 1:].contiguous(),
                "loss_mask": torch.ones(b, s), "position_ids": positions} for seq in sequences]

    def step(i: int) -> float:
        return trainer.train_step(iter([batches[i % len(batches)]]))[0].mean_loss(ctx)

    precision = "bf16 weights, fp32 grads + master" if dtype == torch.bfloat16 else "fp32"
    return step, precision + compile_note(args, compiled, "each layer ")


def make_transformers_step(config, args, dtype: torch.dtype, sequences: list[torch.Tensor],
                           device: torch.device, bf16_mode: str, compiled: bool):
    """A plain transformers training loop: GlmForCausalLM(labels=...), clipping at 1.0 (the
    Trainer's max_grad_norm), fused AdamW; bf16 by autocast or by casting the model."""
    from transformers import GlmForCausalLM

    torch.manual_seed(args.seed)
    model = GlmForCausalLM(hf_config(config, args))
    autocast = dtype == torch.bfloat16 and bf16_mode == "autocast"
    model = model.to(device, dtype=torch.float32 if autocast else dtype)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1,
                                  betas=(0.9, 0.95), eps=1e-8, fused=True)
    forward = torch.compile(model, backend=args.compile_backend) if compiled else model
    inputs = [seq[:, :-1].contiguous().to(device) for seq in sequences]

    def step(i: int) -> float:
        input_ids = inputs[i % len(inputs)]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = forward(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    attention = model.config._attn_implementation
    if dtype == torch.float32:
        precision = "fp32"
    elif autocast:
        precision = "fp32 weights + autocast bf16"
    else:
        precision = "pure bf16 (weights + AdamW state)"
    return step, f"{precision}, attn={attention}" + compile_note(args, compiled, "")


def compile_note(args, compiled: bool, what: str) -> str:
    return f", {what}torch.compile ({args.compile_backend})" if compiled else ""


def build_sides(config, args, dtype_name: str, sequences, device) -> tuple[dict, dict]:
    """{side: step function}, {side: precision} for one dtype."""
    dtype = DTYPES[dtype_name]
    steps, precision = {}, {}
    for framework in args.frameworks:
        if framework.startswith("ours"):
            steps[framework], precision[framework] = make_ours_step(
                config, args, dtype, sequences, device, compiled=framework == "ours-compile")
            continue
        modes = args.hf_bf16 if dtype_name == "bf16" else ["fp32"]
        for mode in modes:
            key = framework if len(modes) == 1 else f"{framework}/{mode}"
            steps[key], precision[key] = make_transformers_step(
                config, args, dtype, sequences, device, mode,
                compiled=framework == "transformers-compile")
    return steps, precision


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def machine_line(device: torch.device) -> str:
    import transformers
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} torch threads")
    return (f"{cpus()}, {where}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, Python {platform.python_version()}")


def reference_side(results: list[Result], other: Result) -> Result | None:
    """The side of ours that `other` is compared with: compiled with compiled, else eager."""
    def find(name):
        return next((r for r in results if r.dtype == other.dtype and r.framework == name), None)
    if other.framework.startswith("ours"):
        return None
    compiled = find("ours-compile") if other.framework.startswith("transformers-compile") \
        else None
    return compiled or find("ours")


def ratio_to_ours(results: list[Result], other: Result) -> tuple[float, float, float, str] | None:
    """(ratio of medians, lowest and highest per-turn ratio, the side of ours) of ours' speed
    over `other`'s."""
    ours = reference_side(results, other)
    if ours is None:
        return None
    turns = [theirs / mine for theirs, mine in zip(other.step_seconds, ours.step_seconds)]
    return other.median_seconds / ours.median_seconds, min(turns), max(turns), ours.framework


def table_rows(results: list[Result], rates: dict[str, float]):
    header = ["dtype", "side", "precision", "min step (ms)", "median step (ms)",
              "max step (ms)", "tokens/s", "ours / this (per-turn range)", "model TFLOP/s",
              "MFU (of matmul rate)", "first loss"]
    rows = []
    for r in results:
        ratio = ratio_to_ours(results, r)
        rows.append([r.dtype, r.framework, r.precision, f"{1000 * min(r.step_seconds):.1f}",
                     f"{1000 * r.median_seconds:.1f}", f"{1000 * max(r.step_seconds):.1f}",
                     f"{r.tokens_per_second:.0f}",
                     "-" if ratio is None
                     else f"{ratio[3]}: {ratio[0]:.2f}x ({ratio[1]:.2f}-{ratio[2]:.2f})",
                     f"{r.flops_per_second / 1e12:.3g}",
                     f"{100 * r.flops_per_second / rates[r.dtype]:.0f}%", f"{r.first_loss:.3f}"])
    return header, rows


def describe(args, config, flops: float, device) -> list[str]:
    return [f"Model: {config.num_layers} layers x {config.hidden_size} hidden, "
            f"{config.num_attention_heads} heads / {config.num_query_groups} query groups, "
            f"head dim {config.kv_channels}, ffn {config.ffn_hidden_size}, vocab "
            f"{config.vocab_size}, seq {args.seq_length}, micro batch {args.micro_batch_size}; "
            f"model FLOPs per step {flops / 1e12:.3f} T.",
            f"Device {device}; optimizer: {OPTIMIZER}; {args.warmup} warm-up step(s), then "
            f"{args.steps} timed steps per side, taking turns."]


def markdown(header, rows, rates, args, lines: list[str], machine: str) -> list[str]:
    return [f"Machine: {machine}", "", *lines, "",
            f"Matmul rate (torch.matmul {args.matmul_size}x{args.matmul_size}, best of "
            f"{args.matmul_reps} before and {args.matmul_reps} after the runs): " +
            ", ".join(f"{d} {rates[d] / 1e12:.3f} TFLOP/s" for d in args.dtypes), "",
            *markdown_table(header, rows)]


# --------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from glm_megatron.training.metrics import model_flops_per_iteration

    config = chatglm3_style_config(args, args.padded_vocab_size)
    b, s = args.micro_batch_size, args.seq_length
    flops = model_flops_per_iteration(config, b, s)
    device = torch.device(args.device)
    machine = machine_line(device)
    lines = describe(args, config, flops, device)
    print(f"Machine: {machine}\n" + "\n".join(lines))
    loads = [load_average()]
    results = []
    rates = measure_matmul_rates(args, device, {})
    sequences = random_sequences(args, args.warmup + args.steps + int(args.profile))
    for name in args.dtypes:
        print(f"\n[{name}] building {', '.join(args.frameworks)}", flush=True)
        steps, precision = build_sides(config, args, name, sequences, device)
        timed = time_interleaved(steps, args.warmup, args.steps, name, device)
        for side, (times, first_loss) in timed.items():
            results.append(Result(name, side, precision[side], times, first_loss, flops, b * s))
        if args.profile:
            for side, step in steps.items():
                profile_step(step, args.warmup + args.steps, f"{side}/{name}", device)
        del steps
        gc.collect()
    rates = measure_matmul_rates(args, device, rates)
    loads.append(load_average())
    lines.append(f"1-minute load average before / after: {loads[0]} / {loads[1]}.")
    header, rows = table_rows(results, rates)
    print()
    print_table(header, rows)
    if args.markdown_out:
        write_markdown(args.markdown_out, markdown(header, rows, rates, args, lines, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
