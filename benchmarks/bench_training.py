"""Training throughput: glm_megatron's step vs transformers' GlmForCausalLM + AdamW, one run.

Both sides train the same ChatGLM3-architecture model (RMSNorm, SwiGLU, GQA, RoPE on half of
each head, QKV bias, untied output layer) on the same random token batches, on this machine,
in this process. For each dtype it prints tokens/s, the ratio ours / transformers, and each
side's model FLOP/s (Megatron-LM's formula, `model_flops_per_iteration`) as a fraction of the
torch.matmul rate measured here for that dtype.

    python benchmarks/bench_training.py                    # 12 x 768 model, fp32 and bf16
    python benchmarks/bench_training.py --quick            # tiny model, ~15 s smoke test
    python benchmarks/bench_training.py --dtypes bf16 --markdown-out results.md

bf16 on the transformers side (``--hf-bf16``): ``autocast`` (default) keeps fp32 weights, grads
and AdamW state and runs the forward under torch.autocast(bfloat16), which is what the
transformers Trainer does with ``bf16=True``; ``pure`` casts the model to bfloat16 (as
``from_pretrained(..., dtype=torch.bfloat16)`` gives) so AdamW keeps bf16 state. glm_megatron's
bf16 is its own mixed precision: bf16 weights, fp32 gradient buffer and fp32 master weights.
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

from harness import chatglm3_style_config, cpus, print_table

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
HF_BF16_MODES = ("autocast", "pure")

FULL = dict(num_layers=12, hidden_size=768, num_attention_heads=12, num_query_groups=2,
            ffn_hidden_size=2048, vocab_size=32000, seq_length=512, micro_batch_size=4)
QUICK = dict(num_layers=4, hidden_size=256, num_attention_heads=4, num_query_groups=2,
             ffn_hidden_size=704, vocab_size=4096, seq_length=256, micro_batch_size=2)


# --------------------------------------------------------------------------------------------
# Arguments and shared inputs
# --------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny model for a smoke test; explicit size flags still override it")
    for name in FULL:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                       help=f"default {FULL[name]} ({QUICK[name]} with --quick)")
    p.add_argument("--make-vocab-size-divisible-by", type=int, default=128,
                   help="pad the vocabulary up to a multiple of this, as Megatron-LM does")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16")
    p.add_argument("--frameworks", default="ours,transformers",
                   help="comma list of ours, transformers")
    p.add_argument("--hf-bf16", default="autocast",
                   help="how transformers runs bf16: autocast, pure, or both as 'autocast,pure' "
                        "(one transformers row each; see the module docstring)")
    p.add_argument("--steps", type=int, default=3, help="timed steps; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--matmul-reps", type=int, default=5)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: "
                   "torch's choice)")
    p.add_argument("--profile", action="store_true",
                   help="after timing, run one extra step per framework under torch.profiler and "
                        "print the ops that take the most self CPU time")
    p.add_argument("--markdown-out", default=None, help="also write the table here as markdown")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.dtypes = _choices(args.dtypes, DTYPES, "--dtypes")
    args.frameworks = _choices(args.frameworks, ("ours", "transformers"), "--frameworks")
    args.hf_bf16 = _choices(args.hf_bf16, HF_BF16_MODES, "--hf-bf16")
    divisor = args.make_vocab_size_divisible_by
    args.padded_vocab_size = int(math.ceil(args.vocab_size / divisor) * divisor)
    if args.steps < 1:
        p.error("--steps must be at least 1")
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
    """`count` batches of seq_length + 1 random tokens, the same for every framework."""
    g = torch.Generator().manual_seed(args.seed)
    shape = (args.micro_batch_size, args.seq_length + 1)
    return [torch.randint(0, args.vocab_size, shape, generator=g) for _ in range(count)]


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

@dataclass
class Result:
    dtype: str
    framework: str  # "ours", "transformers", or "transformers/<bf16 mode>" when several
    mode: str
    step_seconds: list[float]
    first_loss: float
    flops_per_step: float
    tokens_per_step: int

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.step_seconds)

    @property
    def best_seconds(self) -> float:
        return min(self.step_seconds)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step / self.median_seconds

    @property
    def flops_per_second(self) -> float:
        return self.flops_per_step / self.median_seconds


def matmul_rate(dtype: torch.dtype, n: int, reps: int) -> float:
    """FLOP/s of torch.matmul on two n x n matrices: the best of `reps` after one warm-up (the
    machine's capability; the median would fold in load from other processes)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    torch.matmul(a, b)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - start)
    return 2.0 * n ** 3 / min(times)


def measure_matmul_rates(args, best: dict[str, float]) -> dict[str, float]:
    """Measure each dtype's matmul rate, keeping the best seen so far (measured before and after
    the training runs, so a burst of load from another process does not set the yardstick)."""
    for name in args.dtypes:
        rate = matmul_rate(DTYPES[name], args.matmul_size, args.matmul_reps)
        print(f"matmul {args.matmul_size}x{args.matmul_size} {name}: {rate / 1e9:.1f} GFLOP/s",
              flush=True)
        best = {**best, name: max(rate, best.get(name, 0.0))}
    return best


def time_interleaved(steps: dict[str, Callable[[int], float]], warmup: int, count: int,
                     label: str) -> dict[str, tuple[list[float], float]]:
    """Warm every framework up, then time `count` steps, alternating frameworks step by step so
    that load from other processes on the machine falls on both sides alike.

    Returns {framework: (timed step seconds, loss of its first step)}.
    """
    times = {name: [] for name in steps}
    first_loss = {}
    for i in range(warmup + count):
        for name, step in steps.items():
            start = time.perf_counter()
            loss = step(i)
            elapsed = time.perf_counter() - start
            first_loss.setdefault(name, loss)
            if i >= warmup:
                times[name].append(elapsed)
            kind = "warmup" if i < warmup else "timed"
            print(f"    {name}/{label} step {i + 1}/{warmup + count} ({kind}): {elapsed:8.3f} s  "
                  f"loss {loss:.4f}", flush=True)
    return {name: (times[name], first_loss[name]) for name in steps}


def profile_step(step: Callable[[int], float], index: int, label: str, rows: int = 20):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        step(index)
    print(f"\n  torch.profiler, one {label} step, top {rows} ops by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def make_ours_step(ctx, config, args, dtype: torch.dtype, sequences: list[torch.Tensor]):
    """glm_megatron's training step: model, fp32 gradient buffer, MixedPrecisionAdamW."""
    from glm_megatron.model.builder import build_model_chunks
    from glm_megatron.parallel.random import seed_all
    from glm_megatron.training.losses import language_model_loss
    from glm_megatron.training.trainer import Trainer

    seed_all(ctx, args.seed)
    model = build_model_chunks(config, ctx, args.seed, params_dtype=dtype)
    trainer = Trainer(model, ctx, num_microbatches=1, loss_fn=language_model_loss, lr=args.lr,
                      weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, clip_grad=1.0)
    b, s = args.micro_batch_size, args.seq_length
    positions = torch.arange(s).expand(b, s).contiguous()
    batches = [{"tokens": seq[:, :-1].contiguous(), "labels": seq[:, 1:].contiguous(),
                "loss_mask": torch.ones(b, s), "position_ids": positions} for seq in sequences]

    def step(i: int) -> float:
        return trainer.train_step(iter([batches[i % len(batches)]]))[0].mean_loss(ctx)

    return step, "bf16 params, fp32 grads + master" if dtype == torch.bfloat16 else "fp32"


def make_transformers_step(config, args, dtype: torch.dtype, sequences: list[torch.Tensor],
                           bf16_mode: str = "autocast"):
    """A plain transformers training loop: GlmForCausalLM(labels=...), AdamW, clipping at 1.0
    (the Trainer's max_grad_norm); bf16 by autocast or by casting the model (`bf16_mode`)."""
    from transformers import GlmForCausalLM

    torch.manual_seed(args.seed)
    model = GlmForCausalLM(hf_config(config, args))
    autocast = dtype == torch.bfloat16 and bf16_mode == "autocast"
    if dtype == torch.bfloat16 and not autocast:
        model = model.to(torch.bfloat16)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1,
                                  betas=(0.9, 0.95), eps=1e-8)
    inputs = [seq[:, :-1].contiguous() for seq in sequences]

    def step(i: int) -> float:
        input_ids = inputs[i % len(inputs)]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    attention = model.config._attn_implementation
    if dtype == torch.float32:
        mode = f"fp32, attn={attention}"
    elif autocast:
        mode = f"fp32 weights + autocast bf16, attn={attention}"
    else:
        mode = f"pure bf16 (weights + AdamW state), attn={attention}"
    return step, mode


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def machine_line() -> str:
    import transformers
    return (f"{cpus()}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"transformers {transformers.__version__}, Python {platform.python_version()}")


def ratios(results: list[Result], dtype: str, best: bool = False) -> list[tuple[str, float]]:
    """(transformers row, ours tokens/s / its tokens/s) for every transformers row of `dtype`,
    from the median steps (or from the fastest steps with `best`)."""
    ours = next((r for r in results if r.dtype == dtype and r.framework == "ours"), None)
    if ours is None:
        return []
    seconds = (lambda r: r.best_seconds) if best else (lambda r: r.median_seconds)
    return [(r.framework, seconds(r) / seconds(ours)) for r in results
            if r.dtype == dtype and r.framework != "ours"]


def table_rows(results: list[Result], rates: dict[str, float]) -> tuple[list[str], list[list[str]]]:
    header = ["dtype", "framework", "median step (ms)", "best step (ms)", "tokens/s",
              "ours / transformers", "model GFLOP/s", "of matmul rate", "first loss",
              "precision"]
    rows = []
    for r in results:
        ratio = "-"
        if r.framework == "ours":
            pairs = ratios(results, r.dtype)
            if len(pairs) == 1:
                ratio = f"{pairs[0][1]:.2f}x"
            elif pairs:
                ratio = ", ".join(f"{value:.2f}x vs {name.split('/', 1)[-1]}"
                                  for name, value in pairs)
        rows.append([r.dtype, r.framework, f"{1000 * r.median_seconds:.0f}",
                     f"{1000 * r.best_seconds:.0f}", f"{r.tokens_per_second:.0f}", ratio,
                     f"{r.flops_per_second / 1e9:.1f}",
                     f"{100 * r.flops_per_second / rates[r.dtype]:.0f}%", f"{r.first_loss:.3f}",
                     r.mode])
    return header, rows




def summary_lines(results: list[Result], dtypes: list[str]) -> list[str]:
    lines = []
    for dtype in dtypes:
        for (name, value), (_, best) in zip(ratios(results, dtype), ratios(results, dtype, True)):
            lines.append(f"{dtype}: ours / {name} tokens/s = {value:.2f}x "
                         f"(from the fastest steps: {best:.2f}x)")
    if any(r.dtype == "bf16" and r.framework != "ours" for r in results):
        lines.append("transformers bf16: 'autocast' is what a typical user gets (the Trainer "
                     "with bf16=True: fp32 weights and AdamW state, forward under autocast); "
                     "'pure' is the model cast to bf16, AdamW state in bf16 too")
    return lines


def markdown(header, rows, rates, args, config, machine, summary) -> str:
    command = " ".join(["python", "benchmarks/bench_training.py", *sys.argv[1:]])
    out = [f"Command: `{command}`", "", f"Machine: {machine}", "",
           f"Model: {config.num_layers} layers x {config.hidden_size} hidden, "
           f"{config.num_attention_heads} heads / {config.num_query_groups} query groups, "
           f"head dim {config.kv_channels}, ffn {config.ffn_hidden_size}, "
           f"vocab {config.vocab_size}, seq {args.seq_length}, micro batch "
           f"{args.micro_batch_size}; {args.warmup} warm-up step(s), then {args.steps} timed "
           "steps per framework, interleaved; tokens/s and FLOP/s use the median step.",
           "",
           f"Matmul rate (torch.matmul {args.matmul_size}x{args.matmul_size}, best of "
           f"{args.matmul_reps} before and {args.matmul_reps} after the runs): " +
           ", ".join(f"{d} {rates[d] / 1e9:.1f} GFLOP/s" for d in args.dtypes), "",
           "| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out += [""] + [f"- {line}" for line in summary]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from glm_megatron.parallel.context import single_process_context
    from glm_megatron.training.metrics import model_flops_per_iteration

    config = chatglm3_style_config(args, args.padded_vocab_size)
    machine = machine_line()
    b, s = args.micro_batch_size, args.seq_length
    flops = model_flops_per_iteration(config, b, s)
    print(f"Machine: {machine}")
    print(f"Model: {config.num_layers}L x {config.hidden_size}h, {config.num_attention_heads} "
          f"heads / {config.num_query_groups} groups, ffn {config.ffn_hidden_size}, vocab "
          f"{config.vocab_size}, seq {s}, micro batch {b}; model FLOPs/step {flops / 1e12:.3f} T")
    if config.vocab_size != args.vocab_size:
        print(f"  (vocabulary {args.vocab_size} padded to {config.vocab_size})")

    rates = measure_matmul_rates(args, {})

    sequences = random_sequences(args, args.warmup + args.steps + (1 if args.profile else 0))
    results = []
    ctx = single_process_context("cpu")  # one process: no process group needed
    for name in args.dtypes:
        print(f"\n[{name}] building {', '.join(args.frameworks)}", flush=True)
        steps, modes = {}, {}
        if "ours" in args.frameworks:
            steps["ours"], modes["ours"] = make_ours_step(ctx, config, args, DTYPES[name],
                                                          sequences)
        if "transformers" in args.frameworks:
            hf_modes = args.hf_bf16 if name == "bf16" else ["fp32"]
            for mode in hf_modes:
                key = "transformers" if len(hf_modes) == 1 else f"transformers/{mode}"
                steps[key], modes[key] = make_transformers_step(
                    config, args, DTYPES[name], sequences, bf16_mode=mode)
        timed = time_interleaved(steps, args.warmup, args.steps, name)
        for framework, (times, first_loss) in timed.items():
            results.append(Result(name, framework, modes[framework], times, first_loss,
                                  flops, b * s))
        if args.profile:
            for framework, step in steps.items():
                profile_step(step, args.warmup + args.steps, f"{framework}/{name}")
        del steps
        gc.collect()

    rates = measure_matmul_rates(args, rates)
    header, rows = table_rows(results, rates)
    print()
    print_table(header, rows)
    summary = summary_lines(results, args.dtypes)
    print()
    print("\n".join(summary))
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write(markdown(header, rows, rates, args, config, machine, summary))
        print(f"\nmarkdown table written to {args.markdown_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
