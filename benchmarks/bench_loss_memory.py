"""Peak memory of the language-model loss, one rank: logits materialised in fp32 against the
chunked vocab-parallel cross entropy.

    python benchmarks/bench_loss_memory.py            # GLM-4: vocab 151552, h 4096, seq 4096, bf16
    python benchmarks/bench_loss_memory.py --quick    # vocab 151552, h 256, seq 2048: seconds

Methods, each in a fresh process on the same random inputs (hidden states [s, b, h] and the
output-layer weight [vocab, h], both requiring gradients, and labels [b, s]):

- `materialised`: logits = hidden @ weight.T in the compute dtype, then megatron-core's
  `vocab_parallel_cross_entropy(logits.float(), labels)`: what `GLMForCausalLM.forward` does
  today. It makes an fp32 copy of the whole logits and keeps it (as the softmax) for backward.
- `logits`: the same logits into `glm_megatron.parallel.cross_entropy.vocab_parallel_cross_entropy`
  (chunked statistics, no fp32 copy; the compute-dtype logits are kept for backward).
- `chunked`: `chunked_vocab_parallel_cross_entropy(hidden, weight, labels, None)`: the logits
  exist one chunk at a time (`--chunk-tokens`; default ~2**26 logits per chunk), and backward
  recomputes them.

Reported per method: the peak memory above the inputs during the forward pass and during
forward + backward (the latter includes the gradients of hidden and weight, the same for every
method), the mean loss (the methods must agree) and the wall time of forward + backward.
Memory on CPU is the peak RSS sampled every millisecond, with glibc's MALLOC_MMAP_THRESHOLD_ at
128 KiB so that every large tensor is its own mapping and RSS follows live tensors; on CUDA it is
`torch.cuda.max_memory_allocated`. The vocabulary is one rank's: with TP the shard is
vocab / TP (pass --vocab-size accordingly).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import (RssSampler, cpus, current_rss, load_average,  # noqa: E402
                     markdown_table, print_table, write_markdown)

METHODS = ("materialised", "logits", "chunked")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MIB = 2.0 ** 20
FULL = dict(vocab_size=151552, hidden_size=4096, seq_length=4096, micro_batch_size=1)
QUICK = dict(vocab_size=151552, hidden_size=256, seq_length=2048, micro_batch_size=1)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small hidden size and sequence")
    for name in FULL:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                       help=f"default {FULL[name]} ({QUICK[name]} with --quick)")
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {METHODS}")
    p.add_argument("--chunk-tokens", type=int, default=None,
                   help="tokens per chunk of the chunked methods (default: ~2**26 logits)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--markdown-out", default=None, help="also write the table here as markdown "
                   "('-': to stdout)")
    args = p.parse_args(argv)
    for name, default in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.methods or any(m not in METHODS for m in args.methods):
        p.error(f"--methods: {args.methods} not all in {list(METHODS)}")
    from glm_megatron.config import ConfigError
    from glm_megatron.parallel.context import resolve_device
    try:
        args.device = resolve_device(args.device).type
    except ConfigError as error:
        p.error(str(error))
    return args


def _inputs(args, device):
    """Drawn on the device (a GLM-4-sized weight takes seconds to draw on a CPU)."""
    g = torch.Generator(device=device).manual_seed(0)
    dtype = DTYPES[args.dtype]
    s, b, h, v = args.seq_length, args.micro_batch_size, args.hidden_size, args.vocab_size
    hidden = torch.randn(s, b, h, generator=g, device=device).to(dtype).requires_grad_()
    weight = (0.02 * torch.randn(v, h, generator=g, device=device)).to(dtype).requires_grad_()
    labels = torch.randint(0, v, (b, s), generator=g, device=device)
    return hidden, weight, labels


def _loss(method: str, hidden, weight, labels, chunk_tokens):
    from megatron.core import tensor_parallel

    from glm_megatron.parallel.cross_entropy import (chunked_vocab_parallel_cross_entropy,
                                                     vocab_parallel_cross_entropy)
    if method == "chunked":
        return chunked_vocab_parallel_cross_entropy(hidden, weight, labels, None, chunk_tokens)
    logits = hidden @ weight.t()
    if method == "logits":
        return vocab_parallel_cross_entropy(logits, labels.t(), None, chunk_tokens).t()
    return tensor_parallel.vocab_parallel_cross_entropy(logits.float(), labels.t().contiguous()).t()


class _Peak:
    """Peak memory above the level when it was entered: CUDA's allocator statistics, or
    sampled RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.base = current_rss()
            self.sampler = RssSampler(0.001).__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.sampler.__exit__(*exc)
            self.bytes = self.sampler.peak - self.base


def measure(args, method: str) -> dict:
    """In a fresh process: one forward + backward of `method`'s loss."""
    from glm_megatron.parallel.context import initialize_distributed, shutdown

    ctx = initialize_distributed(1, 1, args.device)  # megatron-core's loss reads its TP group
    try:
        device = ctx.device
        hidden, weight, labels = _inputs(args, device)
        start = time.perf_counter()
        with _Peak(device) as forward_and_backward:
            with _Peak(device) as forward:
                loss = _loss(method, hidden, weight, labels, args.chunk_tokens).mean()
            loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return dict(method=method, forward=forward.bytes, total=forward_and_backward.bytes,
                    loss=loss.item(), seconds=time.perf_counter() - start)
    finally:
        shutdown()


def run_fresh(args, method: str) -> dict:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(measure, args, method).result()


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)  # read by glibc in each child
    s, b, h, v = args.seq_length, args.micro_batch_size, args.hidden_size, args.vocab_size
    itemsize = DTYPES[args.dtype].itemsize
    sizes = [f"logits [s, b, vocab] in {args.dtype}: {s * b * v * itemsize / MIB:.0f} MiB",
             f"the same in fp32: {s * b * v * 4 / MIB:.0f} MiB",
             f"weight gradient: {v * h * itemsize / MIB:.0f} MiB"]
    print(f"Machine: {cpus()}, device {args.device}, torch {torch.__version__}; load average "
          f"{load_average()}")
    print(f"Loss of seq {s} x micro batch {b}, hidden {h}, vocabulary {v}, {args.dtype}")
    print("; ".join(sizes), flush=True)
    results = [run_fresh(args, method) for method in args.methods]
    header = ["method", "forward peak (MiB)", "forward + backward peak (MiB)", "mean loss",
              "seconds"]
    rows = [[r["method"], f"{r['forward'] / MIB:.0f}", f"{r['total'] / MIB:.0f}",
             f"{r['loss']:.5f}", f"{r['seconds']:.2f}"] for r in results]
    print()
    print_table(header, rows)
    if args.markdown_out:
        write_markdown(args.markdown_out, [
            f"Machine: {cpus()}, device {args.device}, torch {torch.__version__}", "",
            "; ".join(sizes) + " (peaks are above the inputs: hidden states and weight)", "",
            *markdown_table(header, rows)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
