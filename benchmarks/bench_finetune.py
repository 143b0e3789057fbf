"""Finetuning costs, in one run on one machine:

1. Sequence-classification finetuning, examples/s: glm_megatron's training step (the
   finetune_glm.py path: GLMForSequenceClassification, Trainer with its fp32 gradient buffer and
   AdamW, transformers' loss) against transformers' GlmForSequenceClassification(labels=...) +
   torch.optim.AdamW + clipping at 1.0, on the same ChatGLM3-architecture model and the same
   batches (right-padded token rows, class labels), fp32.
2. Cloze scoring (forward only, as evaluation runs it), examples/s: finetune_glm.py's batched
   multi-token scoring (every candidate of every example in one forward pass, logits only at
   the answers' positions) against one forward pass per candidate over its own row with the
   full vocabulary's log-softmax (the loop a user writes first), and against the batched
   forward that computes logits at every position.

    python benchmarks/bench_finetune.py --quick        # tiny model, under a minute
    python benchmarks/bench_finetune.py                # 12 x 768, seq 256, batch 8
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys

import numpy as np
import torch

from bench_training import hf_config, time_interleaved
from harness import chatglm3_style_config, cpus, load_average, print_table

FULL = dict(num_layers=12, hidden_size=768, num_attention_heads=12, num_query_groups=2,
            ffn_hidden_size=2048, vocab_size=32000, seq_length=256, micro_batch_size=8)
QUICK = dict(num_layers=2, hidden_size=128, num_attention_heads=4, num_query_groups=2,
             ffn_hidden_size=352, vocab_size=4096, seq_length=128, micro_batch_size=4)
PAD = 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny model for a smoke test")
    for name in FULL:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                       help=f"default {FULL[name]} ({QUICK[name]} with --quick)")
    p.add_argument("--num-labels", type=int, default=6)
    p.add_argument("--num-choices", type=int, default=4, help="cloze candidates per example")
    p.add_argument("--max-answer-tokens", type=int, default=4,
                   help="cloze answers have 1 to this many tokens")
    p.add_argument("--steps", type=int, default=3, help="timed steps per side; median reported")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    args = p.parse_args(argv)
    for name, default in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


def classification_batches(args, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(tokens right-padded to seq_length, labels): rows of 1/2 to all of seq_length tokens."""
    g = torch.Generator().manual_seed(args.seed)
    b, s = args.micro_batch_size, args.seq_length
    batches = []
    for _ in range(count):
        tokens = torch.randint(1, args.vocab_size, (b, s), generator=g)
        lengths = torch.randint(s // 2, s + 1, (b,), generator=g)
        tokens[torch.arange(s)[None] >= lengths[:, None]] = PAD
        batches.append((tokens, torch.randint(0, args.num_labels, (b,), generator=g)))
    return batches


def ours_classifier_step(ctx, config, args, batches):
    from glm_megatron.finetune.heads import build_finetune_model, loss_function
    from glm_megatron.model.options import ExecutionOptions
    from glm_megatron.parallel.random import seed_all
    from glm_megatron.training.trainer import Trainer

    seed_all(ctx, args.seed)
    model = build_finetune_model("seq-cls", config, ctx, args.seed, params_dtype=torch.float32,
                                 options=ExecutionOptions(), virtual_stages=1,
                                 first_stage_layers=None, last_stage_layers=None,
                                 num_labels=args.num_labels, pad_token_id=PAD)
    trainer = Trainer(model, ctx, num_microbatches=1,
                      loss_fn=loss_function("seq-cls", "single_label_classification", 0.0),
                      lr=1e-5, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8, clip_grad=1.0)
    s = args.seq_length
    positions = torch.zeros(args.micro_batch_size, 2, s, dtype=torch.long)
    positions[:, 0] = torch.arange(s)
    prepared = [{"tokens": t, "position_ids": positions, "label": y,
                 "index": torch.arange(len(y))} for t, y in batches]

    def step(i: int) -> float:
        return trainer.train_step(iter([prepared[i % len(prepared)]]))[0].mean_loss(ctx)
    return step


def transformers_classifier_step(config, args, batches):
    from transformers import GlmForSequenceClassification

    torch.manual_seed(args.seed)
    hf = hf_config(config, args)
    hf.num_labels, hf.problem_type = args.num_labels, "single_label_classification"
    model = GlmForSequenceClassification(hf).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1,
                                  betas=(0.9, 0.999), eps=1e-8)

    def step(i: int) -> float:
        tokens, labels = batches[i % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=tokens, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()
    return step


def cloze_examples(args, count: int, special) -> list:
    """Encoded cloze examples: a Part A that leaves room for the longest answer, one [MASK]
    in it, and num_choices answers of 1..max_answer_tokens random tokens."""
    from glm_megatron.finetune.encoding import EncodedCloze
    rng = np.random.default_rng(args.seed)
    examples = []
    for index in range(count):
        n = int(rng.integers(args.seq_length // 2, args.seq_length - args.max_answer_tokens))
        part_a = rng.integers(1, args.vocab_size - 16, n)
        mask = int(rng.integers(0, n - 1))
        part_a[mask], part_a[-1] = special.mask, special.eod
        answers = tuple(rng.integers(1, args.vocab_size - 16,
                                     int(rng.integers(1, args.max_answer_tokens + 1)))
                        for _ in range(args.num_choices))
        examples.append(EncodedCloze(part_a, mask, answers, int(rng.integers(0, len(answers))),
                                     index))
    return examples


def cloze_scorers(model, args, examples, special):
    """{name: score(i) -> mean gold-choice score} for the three ways of scoring."""
    from glm_megatron.finetune.collate import MultiTokenClozeCollator
    from glm_megatron.finetune.data import multi_token_targets
    from glm_megatron.training.losses import choice_scores

    collate = MultiTokenClozeCollator(args.seq_length, args.num_choices, special)
    b = args.micro_batch_size
    groups = [examples[i:i + b] for i in range(0, len(examples), b)]
    full = [collate(group) for group in groups]
    targeted = [multi_token_targets(collate(group), args.max_answer_tokens + 1)
                for group in groups]

    def gold(scores, group):
        return scores[torch.arange(len(group)), [e.label for e in group]].mean().item()

    @torch.no_grad()
    def batched_targets(i: int) -> float:
        batch = targeted[i % len(groups)]
        return gold(choice_scores(model(batch), batch), groups[i % len(groups)])

    @torch.no_grad()
    def batched_all_positions(i: int) -> float:
        batch = full[i % len(groups)]
        return gold(choice_scores(model(batch), batch), groups[i % len(groups)])

    @torch.no_grad()
    def per_candidate(i: int) -> float:
        group = groups[i % len(groups)]
        scores = torch.empty(len(group), args.num_choices)
        for row, example in enumerate(group):
            n = len(example.part_a)
            for c, answer in enumerate(example.answers):
                k = len(answer)
                tokens = torch.tensor(np.concatenate([example.part_a, [special.sop], answer]))
                positions = torch.tensor([list(range(n)) + [example.mask_position] * (k + 1),
                                          [0] * n + list(range(1, k + 2))])
                logits = model.logits(tokens[None], positions[None], torch.tensor([n]))
                log_probs = torch.log_softmax(logits[n:, 0].float(), dim=-1)
                targets = torch.tensor(list(answer) + [special.eop])
                scores[row, c] = log_probs[torch.arange(k + 1), targets].sum()
        return gold(scores, group)

    return {"batched, answer positions only (finetune_glm.py)": batched_targets,
            "batched, logits at every position": batched_all_positions,
            "one forward per candidate": per_candidate}


def median_rate(times: list[float], examples: int) -> float:
    return examples / statistics.median(times)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers
    from glm_megatron.model.builder import build_model
    from glm_megatron.objectives import SpecialTokenIds
    from glm_megatron.parallel.context import single_process_context

    ctx = single_process_context("cpu")
    device = torch.device(ctx.device)
    config = chatglm3_style_config(args, args.vocab_size)
    b = args.micro_batch_size
    print(f"Machine: {cpus()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}, Python {platform.python_version()}; "
          f"load average {load_average()}")
    print(f"Model: {config.num_layers}L x {config.hidden_size}h, {config.num_attention_heads} "
          f"heads / {config.num_query_groups} groups, ffn {config.ffn_hidden_size}, vocab "
          f"{config.vocab_size}, seq {args.seq_length}, batch {b}, fp32")

    print("\n[seq-cls finetuning] training steps, interleaved", flush=True)
    batches = classification_batches(args, args.warmup + args.steps)
    timed = time_interleaved({"ours": ours_classifier_step(ctx, config, args, batches),
                              "transformers": transformers_classifier_step(config, args,
                                                                           batches)},
                             args.warmup, args.steps, "seq-cls", device)
    rates = {name: median_rate(times, b) for name, (times, _) in timed.items()}
    rows = [["seq-cls finetuning step", name, f"{rate:.3g}",
             f"{rate / rates['transformers']:.2f}x transformers" if name == "ours" else "-"]
            for name, rate in rates.items()]

    print(f"\n[cloze scoring] {args.num_choices} candidates of 1-{args.max_answer_tokens} "
          "tokens per example, forward only", flush=True)
    special = SpecialTokenIds(**{name: args.vocab_size - 16 + i for i, name in enumerate(
        ("mask", "smask", "gmask", "sop", "eop", "dblock", "pad", "eod"))})
    model = build_model(config, ctx, args.seed).eval()
    examples = cloze_examples(args, b * (args.warmup + args.steps), special)
    scorers = cloze_scorers(model, args, examples, special)
    timed = time_interleaved(scorers, args.warmup, args.steps, "cloze", device)
    gold = {name: first for name, (_, first) in timed.items()}
    reference = "one forward per candidate"
    assert all(abs(value - gold[reference]) < 1e-3 * max(1.0, abs(gold[reference]))
               for value in gold.values()), f"the scorers disagree: {gold}"
    cloze = {name: median_rate(times, b) for name, (times, _) in timed.items()}
    rows += [["cloze scoring", name, f"{rate:.3g}",
              "-" if name == reference else f"{rate / cloze[reference]:.2f}x per-candidate"]
             for name, rate in cloze.items()]
    print()
    print_table(["what", "how", "examples/s (median)", "ratio"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
