"""Collator throughput: how many sample tokens one DataLoader worker turns into batches per second.

Synthetic packed samples (random ids from a ChatGLM3-sized vocabulary, ~4% of them sentence ends,
documents of log-normal length joined by eod) go through each objective's collator, one
`microbatch_rng` per micro-batch as in training. Prints, per objective/mode: ms per micro-batch,
tokens/s per worker (sample tokens in: micro_batch_size x seq_length), the static row length L and
the share of L that is padding; and, given --step-seconds, the share of a training step the
collation needs: microbatches_per_step x time per micro-batch / (workers x step time). With
--num-workers 0 that share is added to the step; with workers it runs beside the step, which is
fine while it stays well under 1.

    python benchmarks/bench_collator.py                      # seq 512, micro-batch 8 (~20 s)
    python benchmarks/bench_collator.py --step-seconds 0.8 --microbatches-per-step 4

The last line times the whole input path of a blank-infilling run on the built-in corpus, as
pretrain_glm.py builds it with --num-workers 0: reading samples from the indexed dataset
(megatron-core's GPTDataset), aligning them to sentence starts, and collating.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glm_megatron.objectives import (BlankInfillingConfig, SpecialTokenIds,  # noqa: E402
                                     build_collator, microbatch_rng)

CASES = {  # name -> (objective, blank-infilling config)
    "blank: token (bert_prob 1)": ("blank-infilling", dict(bert_prob=1.0, block_mask_prob=0.1)),
    "blank: sentence": ("blank-infilling", dict(bert_prob=0.0, gap_sentence_prob=1.0,
                                                task_mask=True)),
    "blank: document": ("blank-infilling", dict(bert_prob=0.0, task_mask=True)),
    "blank: glm-10b mix .5/.3/.2": ("blank-infilling", dict(
        bert_prob=0.5, gap_sentence_prob=0.3, gpt_min_ratio=0.25, block_mask_prob=0.1,
        short_seq_prob=0.02, task_mask=True)),
    "prefix-lm": ("prefix-lm", None),
    "causal": ("causal", None),
}


def synthetic_samples(rng, count: int, length: int, vocab: int, special: SpecialTokenIds,
                      mean_doc: float, end_ids: np.ndarray) -> list:
    total = count * length + 1
    doc_lengths = np.maximum(1, rng.lognormal(np.log(mean_doc), 1.0, total // 8 + 16)
                             .astype(np.int64))
    doc_lengths = doc_lengths[:np.searchsorted(np.cumsum(doc_lengths + 1), total) + 1]
    stream = rng.integers(0, vocab, int(doc_lengths.sum() + len(doc_lengths)))
    ends = rng.random(len(stream)) < 0.04
    stream[ends] = rng.choice(end_ids, int(ends.sum()))
    stream[np.cumsum(doc_lengths + 1) - 1] = special.eod
    return [stream[i * length:(i + 1) * length + 1] for i in range(count)]


def time_builtin_loader(args) -> float:
    """Seconds per micro-batch of the real blank-infilling input path (see the docstring)."""
    from glm_megatron.data.builtin import ensure_builtin_data
    from glm_megatron.data.datasets import build_datasets
    from glm_megatron.data.sampler import build_data_loader
    from glm_megatron.data.tokenizer import GLMTokenizer
    from glm_megatron.objectives import sentence_end_table

    prefix, model = ensure_builtin_data()
    tokenizer = GLMTokenizer(model)
    table = sentence_end_table(tokenizer.pieces(), tokenizer.vocab_size)
    count = 200
    samples = build_datasets([prefix], "969,30,1", args.seq_length, 1234,
                             ((count + 8) * args.micro_batch_size, 0, 0), tokenizer,
                             sentence_end=table)[0]
    collate = build_collator("blank-infilling", BlankInfillingConfig(),
                             SpecialTokenIds.from_tokenizer(tokenizer), table, args.seq_length)
    batches = iter(build_data_loader(samples, collate, 0, args.micro_batch_size, 0, 1, seed=1))
    for _ in range(8):  # warm up
        next(batches)
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    return (time.perf_counter() - start) / count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-length", type=int, default=512)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=65024)
    parser.add_argument("--mean-document-tokens", type=float, default=400.0)
    parser.add_argument("--seconds", type=float, default=2.5, help="timing budget per case")
    parser.add_argument("--step-seconds", type=float,
                        help="training step time to compare against (from bench_training.py)")
    parser.add_argument("--microbatches-per-step", type=int, default=1,
                        help="micro-batches one rank collates per step (gradient accumulation)")
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers per rank")
    args = parser.parse_args(argv)

    v = args.vocab_size
    special = SpecialTokenIds(mask=v, gmask=v + 1, smask=v + 2, sop=v + 3, eop=v + 4,
                              dblock=v + 5, pad=v + 6, eod=1)
    table = np.zeros(v + 16, dtype=bool)
    end_ids = np.arange(10, 42)  # stand-ins for '.', '?', '\n', ... pieces
    table[end_ids] = True
    data_rng = np.random.default_rng(0)
    pool = [synthetic_samples(data_rng, args.micro_batch_size, args.seq_length, v, special,
                              args.mean_document_tokens, end_ids) for _ in range(32)]
    tokens_in = args.micro_batch_size * args.seq_length
    print(f"seq_length {args.seq_length}, micro-batch {args.micro_batch_size}, "
          f"vocab {v}, mean document {args.mean_document_tokens:.0f} tokens; "
          f"one process, {args.seconds:.1f} s per case")
    header = f"{'objective / mode':32s} {'L':>5s} {'pad %':>6s} {'ms/mb':>7s} {'tokens/s':>11s}"
    if args.step_seconds:
        header += f" {'step share':>10s}"
    print(header)
    for name, (objective, config) in CASES.items():
        cfg = BlankInfillingConfig(**config) if config is not None else None
        collate = build_collator(objective, cfg, special, table, args.seq_length)
        collate(pool[0], microbatch_rng(0, 0))  # warm up
        count, used, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds or count < 5:
            batch = collate(pool[count % len(pool)], microbatch_rng(1234, count))
            count += 1
            used += int((batch["tokens"] != special.pad).sum())
        elapsed = (time.perf_counter() - start) / count
        length = batch["tokens"].shape[1]
        pad = 1.0 - used / (count * args.micro_batch_size * length)
        line = (f"{name:32s} {length:5d} {100 * pad:6.1f} {1e3 * elapsed:7.2f} "
                f"{tokens_in / elapsed:11,.0f}")
        if args.step_seconds:
            share = args.microbatches_per_step * elapsed / (
                max(args.num_workers, 1) * args.step_seconds)
            line += f" {100 * share:9.2f}%"
        print(line, flush=True)
    elapsed = time_builtin_loader(args)
    line = (f"{'built-in corpus, read + align + GLM mix':32s} {'':5s} {'':6s} "
            f"{1e3 * elapsed:7.2f} {tokens_in / elapsed:11,.0f}")
    if args.step_seconds:
        line += f" {100 * args.microbatches_per_step * elapsed / args.step_seconds:9.2f}%"
    print(line, flush=True)
    if args.step_seconds:
        where = ("added to each step (collation in the training process)"
                 if args.num_workers == 0 else
                 f"of {args.num_workers} worker(s)' time, overlapped with the step")
        print(f"step share: {args.microbatches_per_step} micro-batch(es) per "
              f"{args.step_seconds} s step, {where}")


if __name__ == "__main__":
    main()
