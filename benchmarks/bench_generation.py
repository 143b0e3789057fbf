"""Generation speed, in one run: blank filling with and without the key/value cache, and causal
generation against transformers' `generate` on the same weights.

1. Blank filling (`glm_megatron.generation.generate_spans`) on a GLM-architecture model (learned
   2D positions): Part A of --context tokens with one [MASK], --new-tokens tokens generated
   (the end token is out of reach, so every run generates exactly that many). With the cache
   Part A is encoded once and each token runs alone; without it every step reruns the row.
2. Causal generation (`generate_causal`, with the cache) of a ChatGLM3/GLM-4-architecture model
   against transformers' `GlmForCausalLM.generate` (greedy, its default cache) on the same
   weights, converted with the export's mapping: a prompt of --context tokens, --new-tokens new.

Greedy, fp32, batch 1, one thread per --threads. Prints tokens/s (new tokens per second of
generation, prompt included in the time) and the ratios; checks that both causal generators
produce the same tokens.

    python benchmarks/bench_generation.py --quick     # tiny model, seconds
    python benchmarks/bench_generation.py             # 8 x 512, context 512, 64 new tokens
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import chatglm3_style_config, cpus, load_average, print_table  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-layers", type=int, default=8)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--num-attention-heads", type=int, default=8)
    p.add_argument("--num-query-groups", type=int, default=2)
    p.add_argument("--ffn-hidden-size", type=int, default=1408)
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--context", type=int, default=512, help="Part A / prompt tokens")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side (median)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.num_layers, args.hidden_size, args.num_attention_heads = 2, 64, 4
        args.ffn_hidden_size, args.vocab_size, args.context, args.new_tokens = 160, 512, 48, 8
        args.repeats = 1
    args.seq_length = args.context + args.new_tokens + 2
    return args


def glm_config(args):
    """GLM's architecture (LayerNorm, learned 2D positions, GeLU, biases, tied output)."""
    from glm_megatron.config import GLMConfig
    from glm_megatron.presets import PRESETS
    values = dict(PRESETS["glm-tiny"], num_layers=args.num_layers, hidden_size=args.hidden_size,
                  num_attention_heads=args.num_attention_heads,
                  ffn_hidden_size=4 * args.hidden_size, vocab_size=args.vocab_size,
                  max_position_embeddings=args.seq_length)
    return GLMConfig(**values)


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def blank_filling(args) -> list[list[str]]:
    import torch
    from glm_megatron.generation import generate_spans
    from glm_megatron.model.builder import build_model
    from glm_megatron.parallel.context import single_process_context
    model = build_model(glm_config(args), single_process_context("cpu"), seed=0).eval()
    v = args.vocab_size
    # Special ids inside the vocabulary; the end tokens beyond it, so no span ends early.
    tokens = SimpleNamespace(mask=v - 3, sop=v - 2, eop=v + 1, eod=v + 2, vocab_size=v)
    part_a = torch.randint(0, v - 4, (args.context,), generator=torch.Generator().manual_seed(0))
    part_a = part_a.tolist()
    part_a[args.context // 2] = tokens.mask
    rows = []
    for use_cache in (True, False):
        def run(use_cache=use_cache):
            spans = generate_spans(model, tokens, part_a, [args.context // 2], args.new_tokens,
                                   use_cache=use_cache)
            assert len(spans[0]) == args.new_tokens
        rows.append(args.new_tokens / median_seconds(run, args.repeats))
    return [["blank filling, KV cache", f"{rows[0]:.1f}", f"{rows[0] / rows[1]:.2f}x"],
            ["blank filling, recompute", f"{rows[1]:.1f}", "1.00x"]]


def causal(args) -> list[list[str]]:
    import torch
    from transformers import GlmConfig, GlmForCausalLM
    from glm_megatron.convert.layouts import LAYOUTS, SpecialTokens
    from glm_megatron.convert.mapping import to_hf_state_dict
    from glm_megatron.convert.schema import Head
    from glm_megatron.generation import generate_causal
    from glm_megatron.model.builder import build_model
    from glm_megatron.parallel.context import single_process_context
    config = chatglm3_style_config(args, args.vocab_size)
    model = build_model(config, single_process_context("cpu"), seed=0).eval()
    layout = LAYOUTS["glm"]
    hf_config = layout.config_to_hf(config, Head(), SpecialTokens(pad=0), torch.float32)
    twin = GlmForCausalLM(GlmConfig(**hf_config)).eval()
    twin.load_state_dict(to_hf_state_dict(layout, model.state_dict(), config, Head()))
    prompt = torch.randint(0, args.vocab_size, (1, args.context),
                           generator=torch.Generator().manual_seed(1))
    out = {}

    def ours():
        out["ours"] = generate_causal(model, prompt[0].tolist(), args.new_tokens)

    def theirs():
        with torch.no_grad():
            ids = twin.generate(prompt, max_new_tokens=args.new_tokens,
                                min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
        out["theirs"] = ids[0, args.context:].tolist()

    ours_rate = args.new_tokens / median_seconds(ours, args.repeats)
    theirs_rate = args.new_tokens / median_seconds(theirs, args.repeats)
    same = "same tokens" if out["ours"] == out["theirs"] else "TOKENS DIFFER"
    return [["causal, ours (KV cache)", f"{ours_rate:.1f}", f"{ours_rate / theirs_rate:.2f}x"],
            [f"causal, transformers generate ({same})", f"{theirs_rate:.1f}", "1.00x"]]


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    import glm_megatron  # noqa: F401
    torch.set_num_threads(args.threads)
    print(f"{cpus()}, {args.threads} thread(s), load {load_average()}; "
          f"{args.num_layers} x {args.hidden_size}, context {args.context}, "
          f"{args.new_tokens} new tokens, fp32, batch 1, greedy")
    rows = blank_filling(args) + causal(args)
    print_table(["generation", "new tokens/s", "ratio"], rows)


if __name__ == "__main__":
    main()
