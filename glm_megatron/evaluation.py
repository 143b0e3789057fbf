"""Language-model evaluation of a one-process model: sliding-window perplexity and LAMBADA-style
last-word accuracy.

Two ways to present text to the model:
- `causal`: plain left-to-right (ChatGLM2/3, GLM-4, `--objective causal` checkpoints).
- `gmask`: GLM's own language modelling, as its blank-infilling objective's document mode
  trains it: the context is Part A followed by `[gMASK]`, the text to predict is Part B
  (`<sop>` + tokens), every Part B position at the `[gMASK]`'s position with block positions
  1, 2, ... The first token of a window is predicted from `<sop>`.

Perplexity: the token stream (documents joined by end-of-document tokens) is cut into windows
of `window` tokens that advance by `stride`; each token is predicted once, in the first window
whose new part holds it, with up to window - stride earlier tokens as context (transformers'
strided perplexity). Last-word accuracy: each text's last whitespace-separated word is predicted
greedily from the rest; it counts when every one of its tokens is the argmax (teacher forcing,
which is exactly greedy decoding of the word).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from tqdm import tqdm

from .data.tokenizer import GLMTokenizer

MODES = ("causal", "gmask")


@dataclass(frozen=True)
class Scored:
    """One piece of text to score: `target` tokens predicted after `context` tokens."""
    context: list[int]
    target: list[int]


def model_input(item: Scored, mode: str, tokenizer: GLMTokenizer, length: int) -> dict:
    """The model's row for one item, padded to `length`; `loss_mask` marks the target tokens."""
    if mode == "causal":
        ids = item.context + item.target
        tokens, labels = ids[:-1], ids[1:]
        first = len(item.context) - 1  # the position that predicts the first target
        positions, block_positions = list(range(len(tokens))), [0] * len(tokens)
        sep = None
    else:
        part_a = item.context + [tokenizer.gmask]
        sep = len(part_a)
        tokens = part_a + [tokenizer.sop] + item.target[:-1]
        labels = [0] * sep + item.target
        first = sep
        positions = list(range(sep)) + [sep - 1] * len(item.target)
        block_positions = [0] * sep + list(range(1, len(item.target) + 1))
    pad = length - len(tokens)
    mask = [0.0] * first + [1.0] * len(item.target)
    row = {"tokens": tokens + [tokenizer.pad] * pad, "labels": labels + [0] * pad,
           "loss_mask": mask + [0.0] * (length - len(mask)),
           "position_ids": [positions + [0] * pad, block_positions + [0] * pad]}
    if sep is not None:
        row["sep"] = sep
    return row


def row_length(item: Scored, mode: str) -> int:
    return len(item.context) + len(item.target) + (1 if mode == "gmask" else -1)


@torch.no_grad()
def target_log_probs(model, items: Sequence[Scored], mode: str, tokenizer: GLMTokenizer,
                     batch_size: int = 8, progress: bool = False) -> list[tuple[float, bool]]:
    """Per item: (sum of the targets' log-probabilities, whether every target is the argmax)."""
    limit = model.config.max_position_embeddings
    longest = max((row_length(item, mode) for item in items), default=0)
    if longest > limit:
        raise ValueError(f"rows of {longest} tokens exceed the model's {limit} positions; "
                         "lower --window")
    device = next(model.parameters()).device
    out = []
    starts = range(0, len(items), batch_size)
    for start in tqdm(starts, desc=f"scoring ({mode})", unit="batch", disable=not progress):
        chunk = items[start:start + batch_size]
        length = max(row_length(item, mode) for item in chunk)
        rows = [model_input(item, mode, tokenizer, length) for item in chunk]
        batch = {key: torch.tensor([row[key] for row in rows], device=device)
                 for key in rows[0]}
        logits = model.logits(batch["tokens"], batch["position_ids"], batch.get("sep"))
        log_probs = torch.log_softmax(logits.float().transpose(0, 1), dim=-1)  # [b, s, v]
        chosen = log_probs.gather(-1, batch["labels"][..., None])[..., 0]
        hits = log_probs.argmax(-1) == batch["labels"]
        mask = batch["loss_mask"].bool()
        for row in range(len(chunk)):
            out.append((float(chosen[row][mask[row]].sum()), bool(hits[row][mask[row]].all())))
    return out


def perplexity_windows(stream: list[int], window: int, stride: int) -> list[Scored]:
    """Strided windows over a token stream: each token after the first is a target once."""
    if not 0 < stride <= window:
        raise ValueError(f"--stride {stride} must be in 1..--window {window}")
    items, predicted = [], 1  # the stream's first token has no context to be predicted from
    while predicted < len(stream):
        end = min(predicted + stride, len(stream))
        begin = max(0, end - window)
        items.append(Scored(stream[begin:predicted], stream[predicted:end]))
        predicted = end
    return items


def last_word_items(texts: Iterable[str], tokenizer: GLMTokenizer) -> list[Scored]:
    """Each text split before its last word; the word keeps its leading space, so its tokens
    are those it has inside the sentence."""
    items = []
    for text in texts:
        text = text.rstrip()
        cut = text.rfind(" ")
        if cut <= 0:
            continue
        context = tokenizer.tokenize(text[:cut])
        whole = tokenizer.tokenize(text)
        target = (whole[len(context):] if whole[:len(context)] == context
                  else tokenizer.tokenize(text[cut:]))
        items.append(Scored(context, target))
    return items


def evaluate_perplexity(model, tokenizer: GLMTokenizer, documents: Iterable[str], mode: str,
                        window: int, stride: int, batch_size: int = 8,
                        progress: bool = False) -> dict:
    stream = []
    for document in documents:
        stream += tokenizer.tokenize(document) + [tokenizer.eod]
    items = perplexity_windows(stream, window, stride)
    scored = target_log_probs(model, items, mode, tokenizer, batch_size, progress)
    tokens = sum(len(item.target) for item in items)
    nll = -sum(log_prob for log_prob, _ in scored) / max(tokens, 1)
    return {"tokens": tokens, "windows": len(items), "loss": nll, "perplexity": math.exp(nll)}


def evaluate_last_word(model, tokenizer: GLMTokenizer, texts: Iterable[str], mode: str,
                       batch_size: int = 8, progress: bool = False) -> dict:
    items = last_word_items(texts, tokenizer)
    scored = target_log_probs(model, items, mode, tokenizer, batch_size, progress)
    correct = sum(hit for _, hit in scored)
    return {"examples": len(items), "correct": correct,
            "accuracy": correct / len(items) if items else float("nan")}
