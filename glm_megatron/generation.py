"""Blank filling with a trained GLM in one process, as GLM generates (generate_samples.py).

Text holds blanks written as [MASK], [sMASK] or [gMASK]. Part A is the text with each blank as
its mask token (after [CLS] for models pretrained with it, --prepend-cls); the blanks are then
filled one after another: <sop>, then tokens until <eop> (or the end-of-document token, or
--max-span-tokens), every
generated token at its blank's position id with block positions 1, 2, ..., attending to all of
Part A and causally to Part B, including the blanks filled before it.

With the key/value cache (the default) Part A is encoded once and each new token runs alone
against the cache; without it every step recomputes the whole row (kept to check the cache and
to measure what it saves). Decoding is greedy unless a temperature is given (then top-k / top-p
sampling from a seeded generator).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .config import GLMConfig
from .convert.checkpoint import CheckpointReader
from .convert.errors import ConversionError
from .convert.mapping import groups
from .data.tokenizer import GLMTokenizer
from .model.builder import build_model
from .model.kv_cache import KVCache
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


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy with temperature 0, else sampled from the softmax at
    `temperature`, restricted to the `top_k` most likely tokens and to the smallest set whose
    probability reaches `top_p` (0 turns either off), with a generator seeded by `seed`."""
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 0.0
    seed: int = 1234

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"--temperature {self.temperature} must be >= 0 (0: greedy)")
        if self.top_k < 0 or not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"--top-k {self.top_k} must be >= 0 and --top-p {self.top_p} in "
                             "[0, 1] (0 turns either off)")
        if self.temperature == 0 and (self.top_k or self.top_p):
            raise ValueError("--top-k/--top-p choose among sampled tokens: give --temperature "
                             "> 0 as well (temperature 0 is greedy)")

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)


def next_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """The next token id from one position's logits [vocab]."""
    if sampling.temperature == 0:
        return int(logits.argmax())
    logits = logits.float().cpu() / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(logits, min(sampling.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p:
        ordered, order = logits.sort(descending=True)
        probs = ordered.softmax(-1)
        # Drop a token once the more likely ones already reach top_p (the first always stays).
        drop = probs.cumsum(-1) - probs >= sampling.top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop),
                                    float("-inf"))
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))


def encode_blanks(tokenizer: GLMTokenizer, text: str,
                  prepend_cls: bool = False) -> tuple[list[int], list[int]]:
    """(Part A ids, positions of its blanks) for text with [MASK]/[sMASK]/[gMASK] blanks."""
    ids, blanks, start = ([tokenizer.cls] if prepend_cls else []), [], 0
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


def check_positions(config: GLMConfig, part_a_length: int, max_span_tokens: int):
    """Position ids reach Part A's length - 1 and block position ids max_span_tokens + 1: both
    must be positions the model has (its table, or the range its rotary positions trained on)."""
    limit = config.max_position_embeddings
    if part_a_length > limit:
        raise ValueError(f"the text is {part_a_length} tokens long but the model has "
                         f"{limit} positions (--max-position-embeddings); shorten the text")
    if max_span_tokens + 1 >= limit:
        raise ValueError(f"--max-span-tokens {max_span_tokens} would reach block position "
                         f"{max_span_tokens + 1}, beyond the model's {limit} positions; "
                         f"give at most {limit - 2}")


class _Recompute:
    """Each step runs the whole row so far."""

    def __init__(self, model, device):
        self.model, self.device = model, device
        self.tokens, self.positions, self.blocks = [], [], []

    def __call__(self, tokens, positions, blocks, sep: int) -> torch.Tensor:
        self.tokens += tokens
        self.positions += positions
        self.blocks += blocks
        return _logits(self.model, self.tokens, self.positions, self.blocks, sep, self.device)[-1]


class _Cached:
    """Each step runs only its new tokens, against the keys and values of the earlier ones."""

    def __init__(self, model, device):
        self.model, self.device, self.cache = model, device, KVCache()

    def __call__(self, tokens, positions, blocks, sep: int) -> torch.Tensor:
        return _logits(self.model, tokens, positions, blocks, sep, self.device, self.cache)[-1]


def _logits(model, tokens, positions, blocks, sep, device, cache=None) -> torch.Tensor:
    ids = torch.tensor([tokens], device=device)
    position_ids = torch.tensor([[positions, blocks]], device=device)
    return model.logits(ids, position_ids, torch.tensor([sep], device=device), cache,
                        last_only=True)[:, 0]


@torch.no_grad()
def generate_spans(model: torch.nn.Module, tokenizer: GLMTokenizer, part_a: list[int],
                   blanks: list[int], max_span_tokens: int = 32,
                   sampling: Sampling = Sampling(), use_cache: bool = True) -> list[list[int]]:
    """The ids of each blank of Part A (`blanks`: the positions of its mask tokens), in order."""
    check_positions(model.config, len(part_a), max_span_tokens)
    sep = len(part_a)
    device = next(model.parameters()).device
    step = (_Cached if use_cache else _Recompute)(model, device)
    generator = sampling.generator()
    ends = (tokenizer.eop, tokenizer.eod)
    step(list(part_a), list(range(sep)), [0] * sep, sep)
    spans = []
    for number, blank in enumerate(blanks):
        span = []
        logits = step([tokenizer.sop], [blank], [1], sep)
        while len(span) < max_span_tokens:
            token = next_token(logits[:tokenizer.vocab_size], sampling, generator)
            if token in ends:  # as in GLM, the end token stays out of what later blanks see
                break
            span.append(token)
            if len(span) < max_span_tokens or number < len(blanks) - 1:
                logits = step([token], [blank], [len(span) + 1], sep)
        spans.append(span)
    return spans


def fill_blanks(model: torch.nn.Module, tokenizer: GLMTokenizer, text: str,
                max_span_tokens: int = 32, sampling: Sampling = Sampling(),
                prepend_cls: bool = False, use_cache: bool = True) -> list[str]:
    """The text of each blank of `text`, in order."""
    part_a, blanks = encode_blanks(tokenizer, text, prepend_cls)
    spans = generate_spans(model, tokenizer, part_a, blanks, max_span_tokens, sampling,
                           use_cache)
    return [tokenizer.detokenize(span) for span in spans]


@torch.no_grad()
def generate_causal(model: torch.nn.Module, prompt: list[int], max_new_tokens: int,
                    sampling: Sampling = Sampling(), use_cache: bool = True,
                    end_tokens: tuple = ()) -> list[int]:
    """Left-to-right continuation of `prompt` (causal attention, 1D positions) for models
    pretrained with --objective causal; stops after max_new_tokens or at an end token."""
    check_positions(model.config, len(prompt) + max_new_tokens, 0)
    device = next(model.parameters()).device
    cache = KVCache() if use_cache else None
    generator = sampling.generator()
    tokens, new = list(prompt), list(prompt)
    while len(tokens) - len(prompt) < max_new_tokens:
        start = len(tokens) - len(new) if use_cache else 0
        ids = torch.tensor([new if use_cache else tokens], device=device)
        positions = torch.arange(start, len(tokens), device=device)[None]
        logits = model.logits(ids, positions, None, cache, last_only=True)[-1, 0]
        token = next_token(logits, sampling, generator)
        if token in end_tokens:
            break
        tokens.append(token)
        new = [token]
    return tokens[len(prompt):]

