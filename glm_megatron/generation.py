"""Blank filling with a trained GLM in one process: GLM's own inference, greedy.

Text holds blanks written as [MASK], [sMASK] or [gMASK]. Part A is the text with each blank as
its mask token; the blanks are then filled one after another, as GLM generates: <sop>, then
tokens until <eop>, every generated token at its blank's position id with block positions
1, 2, ..., attending to all of Part A and causally to Part B. Each forward recomputes the
whole row (no key/value cache): this is for checking and showing a model, not for serving.
"""

from __future__ import annotations

import re

import torch

from .convert.checkpoint import CheckpointReader
from .convert.errors import ConversionError
from .convert.mapping import groups
from .data.tokenizer import GLMTokenizer
from .model.builder import build_model
from .parallel.context import single_process_context

BLANK = re.compile(r"\[(MASK|sMASK|gMASK)\]")


def load_model(reader: CheckpointReader, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A one-process GLMForCausalLM (no process group) with the weights of a checkpoint saved
    at any layout."""
    if reader.head.num_labels:
        raise ConversionError(f"--load {reader.root} holds a sequence classifier; blank filling "
                              "needs a language-model checkpoint")
    model = build_model(reader.config, single_process_context(device), seed=0)
    weights = reader.read([name for group in groups(reader.config)
                           for name in reader.group_names(group)])
    model.load_state_dict({**model.state_dict(), **weights})
    return model.eval()


def encode_blanks(tokenizer: GLMTokenizer, text: str) -> tuple[list[int], list[int]]:
    """(Part A ids, positions of its blanks) for text with [MASK]/[sMASK]/[gMASK] blanks."""
    ids, blanks, start = [], [], 0
    mask_ids = {"MASK": tokenizer.mask, "sMASK": tokenizer.smask, "gMASK": tokenizer.gmask}
    for match in BLANK.finditer(text):
        ids += tokenizer.tokenize(text[start:match.start()]) if match.start() > start else []
        blanks.append(len(ids))
        ids.append(mask_ids[match.group(1)])
        start = match.end()
    ids += tokenizer.tokenize(text[start:]) if start < len(text) else []
    if not blanks:
        raise ValueError(f"{text!r} has no blank; write one as [MASK], [sMASK] or [gMASK]")
    return ids, blanks


def fill_blanks(model: torch.nn.Module, tokenizer: GLMTokenizer, text: str,
                max_span_tokens: int = 32) -> list[str]:
    """The text of each blank of `text`, in order, as the model fills them greedily."""
    part_a, blanks = encode_blanks(tokenizer, text)
    spans = generate_spans(model, tokenizer, part_a, blanks, max_span_tokens)
    return [tokenizer.detokenize(span) for span in spans]


@torch.no_grad()
def generate_spans(model: torch.nn.Module, tokenizer: GLMTokenizer, part_a: list[int],
                   blanks: list[int], max_span_tokens: int = 32) -> list[list[int]]:
    """Greedy ids for each blank of Part A (`blanks`: the positions of its mask tokens)."""
    sep = len(part_a)
    device = next(model.parameters()).device
    tokens, positions, block_positions = list(part_a), list(range(sep)), [0] * sep
    spans = []
    for blank in blanks:
        span_start = len(tokens) + 1
        tokens.append(tokenizer.sop)
        positions.append(blank)
        block_positions.append(1)
        for _ in range(max_span_tokens):
            ids = torch.tensor([tokens], device=device)
            position_ids = torch.tensor([[positions, block_positions]], device=device)
            logits = model.logits(ids, position_ids, torch.tensor([sep], device=device))
            token = int(logits[-1, 0, :tokenizer.vocab_size].argmax())
            if token == tokenizer.eop:
                break
            tokens.append(token)
            positions.append(blank)
            block_positions.append(block_positions[-1] + 1)
        spans.append(tokens[span_start:])
    return spans


def check_prompt_fits(config, part_a: list[int], max_span_tokens: int):
    """ValueError unless the position ids of Part A and of the longest span fit the model's
    position table (GLM's learned table would fail with an IndexError; RoPE would run past
    the positions the model was trained on)."""
    limit = config.max_position_embeddings
    if len(part_a) > limit:
        raise ValueError(f"--text: the text has {len(part_a)} tokens, more than the "
                         f"{limit} positions the model has (max_position_embeddings); "
                         "shorten it")
    if max_span_tokens + 1 > limit:
        raise ValueError(f"--max-span-tokens {max_span_tokens}: a span's block positions go up "
                         f"to {max_span_tokens + 1}, more than the model's {limit} positions; "
                         f"give at most {limit - 1}")
