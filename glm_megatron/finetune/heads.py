"""The two finetuning heads as models and loss functions.

- cloze: GLMForCausalLM (any pipeline layout), scoring each candidate by its log-probability
  (training/losses.py's cloze_loss: cross entropy over the candidates);
- seq-cls: GLMForSequenceClassification (no pipelining), transformers' losses by problem type.
Both loss functions report, per micro-batch, what evaluation needs: the scores, the examples'
indices and labels (and, for cloze, which choices are real).
"""

from __future__ import annotations

import torch

from ..model.builder import build_model, build_model_chunks
from ..model.chunks import ModelChunks
from ..training.losses import cloze_loss, sequence_classification_loss


def loss_function(head: str, problem_type: str, length_penalty: float):
    base = (cloze_loss(length_penalty) if head == "cloze"
            else sequence_classification_loss(problem_type))

    def loss_fn(output: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        loss, report = base(output, batch)
        report.update(index=batch["index"], label=batch["label"])
        if "choice_mask" in batch:
            report["choice_mask"] = batch["choice_mask"]
        return loss, report
    return loss_fn


def evaluation_loss(problem_type: str, scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The training loss over a whole split's scores (cloze scores are a single-label
    problem over the choices)."""
    if scores.dim() == 1:  # regression: one output per example, as the model has it
        scores = scores[:, None]
    loss, _ = sequence_classification_loss(problem_type)(scores, {"label": labels})
    return loss.item()


def build_finetune_model(head: str, config, ctx, seed: int, *, params_dtype, options,
                         virtual_stages: int, first_stage_layers, last_stage_layers,
                         num_labels: int, pad_token_id: int) -> ModelChunks:
    if head == "cloze":
        return build_model_chunks(config, ctx, seed, params_dtype=params_dtype, options=options,
                                  virtual_stages=virtual_stages,
                                  first_stage_layers=first_stage_layers,
                                  last_stage_layers=last_stage_layers)
    return ModelChunks([build_model(config, ctx, seed, params_dtype=params_dtype,
                                    options=options, num_labels=num_labels,
                                    pad_token_id=pad_token_id)])
