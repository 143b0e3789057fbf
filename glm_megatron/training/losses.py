"""Loss functions: a head's output and its micro-batch -> (scalar loss, report).

They are what `parallel.schedules.ForwardBackward` applies on the last pipeline stage; the
report's tensors are what a caller may want summed or collected (see StepOutput).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..objectives import BLANK_MODES


def language_model_loss(token_losses: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
    """The mean of per-token losses [b, s] over the tokens in `loss_mask`. Blank-infilling
    batches (with `mode`) also report each span kind's summed loss and token count, so that
    validation can tell which kind learns."""
    loss_mask = batch["loss_mask"].float()
    row_losses, row_tokens = (token_losses * loss_mask).sum(dim=1), loss_mask.sum(dim=1)
    loss = row_losses.sum() / row_tokens.sum().clamp(min=1.0)
    report = {}
    if "mode" in batch:
        for code, name in enumerate(BLANK_MODES):
            rows = batch["mode"] == code
            report[f"{name} loss sum"] = row_losses[rows].sum().detach()
            report[f"{name} tokens"] = row_tokens[rows].sum()
    return loss, report


def mode_report_keys() -> list[str]:
    """The report entries of language_model_loss on blank-infilling batches."""
    return [f"{name} {kind}" for name in BLANK_MODES for kind in ("loss sum", "tokens")]


def choice_scores(token_losses: torch.Tensor, batch: dict, length_penalty: float = 0.0
                  ) -> torch.Tensor:
    """GLM's cloze scores [B, C]: the log-probability of each choice, from per-target cross
    entropies. Multi-token rows ([B * C, s], example-major) sum their `loss_mask`ed targets
    (answer tokens and <eop>), divided by (number of targets) ** length_penalty when it is
    positive; single-token outputs are already [B, C]. Padded choices score -inf."""
    mask = batch["choice_mask"]
    if token_losses.shape == mask.shape:  # single-token: one target per choice
        scores = -token_losses
    else:
        loss_mask = batch["loss_mask"].float()
        scores = -(token_losses * loss_mask).sum(dim=1)
        if length_penalty > 0:
            scores = scores / loss_mask.sum(dim=1).clamp(min=1.0) ** length_penalty
        scores = scores.view(mask.shape)
    return scores.masked_fill(~mask, float("-inf"))


def cloze_loss(length_penalty: float = 0.0):
    """Cross entropy over the choices' scores (GLM's --loss-func cross_entropy); the report
    counts correct predictions and carries the scores for metrics and predictions files."""
    def loss_fn(token_losses: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        scores = choice_scores(token_losses, batch, length_penalty)
        return _classification_report(scores, batch["label"],
                                      F.cross_entropy(scores, batch["label"], ignore_index=-1))
    return loss_fn


PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


def sequence_classification_loss(problem_type: str):
    """transformers' GlmForSequenceClassification losses: cross entropy, BCE with logits on
    multi-hot labels, or mean squared error (one output: squeezed, as transformers does)."""
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem type {problem_type!r} is not one of {PROBLEM_TYPES}")

    def loss_fn(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        labels, logits = batch["label"], logits.float()
        if problem_type == "regression":
            predictions = logits.squeeze(-1) if logits.shape[-1] == 1 else logits
            loss = F.mse_loss(predictions, labels.to(predictions.dtype))
            return loss, {"count": torch.tensor(float(len(labels))),
                          "scores": predictions.detach()}
        if problem_type == "multi_label_classification":
            loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            return loss, {"count": torch.tensor(float(len(labels))), "scores": logits.detach()}
        return _classification_report(logits, labels, F.cross_entropy(logits, labels, ignore_index=-1))
    return loss_fn


def _classification_report(scores: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor):
    labelled = labels >= 0  # -1: test data without labels
    correct = (scores.argmax(dim=-1) == labels) & labelled
    return loss, {"correct": correct.sum().float(), "count": labelled.sum().float(),
                  "scores": scores.detach()}
