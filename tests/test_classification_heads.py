"""The finetuning heads' losses: sequence classification equals transformers'
GlmForSequenceClassification at the same weights; GLM's cloze scores are log-probabilities."""

import pytest
import torch

from glm_testing import VOCAB, glm_config, make_batch, randomize, tiny_config

LABELS = {"single_label_classification": torch.tensor([2, 0, 1]),
          "multi_label_classification": torch.tensor([[1.0, 0, 1], [0, 0, 0], [0, 1, 1]]),
          "regression": torch.tensor([0.5, -1.25, 2.0])}


def _our_classifier(hf_model, ctx):
    """Our model with the transformers classifier's weights, mapped by the converter's tables."""
    from glm_megatron.convert.layouts import LAYOUTS
    from glm_megatron.convert.mapping import from_hf, groups
    from glm_megatron.model.builder import build_model
    layout = LAYOUTS["glm"]
    hf_config = dict(hf_model.config.to_dict(), architectures=[type(hf_model).__name__])
    cfg, head, _ = layout.config_from_hf(hf_config)
    state = hf_model.state_dict()
    weights = {}
    for group in groups(cfg):
        weights.update(from_hf(layout, group, state.__getitem__, cfg, head))
    model = build_model(cfg, ctx, 0, num_labels=head.num_labels, pad_token_id=0)
    model.load_state_dict({**model.state_dict(), **weights})
    return model.eval()


@pytest.mark.parametrize("problem_type", list(LABELS))
def test_sequence_classification_loss_equals_transformers(ctx, problem_type):
    from transformers import GlmForSequenceClassification
    from glm_megatron.training.losses import sequence_classification_loss
    num_labels = 1 if problem_type == "regression" else 3
    hf = randomize(GlmForSequenceClassification(
        glm_config(num_labels=num_labels, problem_type=problem_type)), 4).eval()
    ours = _our_classifier(hf, ctx)
    tokens = torch.randint(2, VOCAB, (3, 10), generator=torch.Generator().manual_seed(1))
    tokens[0, 7:] = 0  # right padding: pooled at the last non-pad token
    tokens[2, 4:] = 0
    labels = LABELS[problem_type]
    batch = {"tokens": tokens, "position_ids": torch.arange(10).expand(3, 10).clone(),
             "label": labels}
    with torch.no_grad():
        expected = hf(input_ids=tokens, labels=labels).loss
        loss, report = sequence_classification_loss(problem_type)(ours(batch), batch)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert report["count"] == 3


def test_single_token_scores_equal_one_target_rows(ctx):
    """A single-token cloze scores candidates at one position of one row; the same as scoring
    each candidate as a one-token answer in a row of its own (log p of that token)."""
    from glm_megatron.model.builder import build_model
    from glm_megatron.training.losses import choice_scores
    model = build_model(tiny_config("glm-tiny"), ctx, 3).eval()
    batch = make_batch("blank", batch=2, seq=16, device=ctx.device)
    sep = batch["sep"]
    candidates = torch.tensor([[5, 9, 11], [7, 7, 2]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    single = dict(batch, target_positions=sep[:, None].expand(2, 3),
                  target_ids=candidates, choice_mask=mask)
    rows = {k: v.repeat_interleave(3, dim=0) for k, v in batch.items()}
    rows["labels"] = rows["labels"].clone()
    rows["labels"][torch.arange(6), rows["sep"]] = candidates.reshape(-1)
    rows["loss_mask"] = torch.zeros(6, 16)
    rows["loss_mask"][torch.arange(6), rows["sep"]] = 1.0
    rows["choice_mask"] = mask
    with torch.no_grad():
        from_single = choice_scores(model(single), single)
        from_rows = choice_scores(model(rows), rows)
        logits = model.logits(batch["tokens"], batch["position_ids"], sep).float()
    torch.testing.assert_close(from_single, from_rows, rtol=1e-5, atol=1e-5)
    log_probs = torch.log_softmax(logits[sep, torch.arange(2)], dim=-1)
    assert from_single[1, 2] == float("-inf")
    torch.testing.assert_close(from_single[0], log_probs[0, candidates[0]])
    torch.testing.assert_close(from_single[1, :2], log_probs[1, candidates[1, :2]])


def test_length_penalty_divides_by_target_count():
    from glm_megatron.training.losses import choice_scores
    token_losses = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    batch = {"loss_mask": torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
             "choice_mask": torch.tensor([[True, True]])}
    torch.testing.assert_close(choice_scores(token_losses, batch), torch.tensor([[-3.0, -3.0]]))
    torch.testing.assert_close(choice_scores(token_losses, batch, length_penalty=1.0),
                               torch.tensor([[-1.5, -3.0]]))
    torch.testing.assert_close(choice_scores(token_losses, batch, length_penalty=2.0),
                               torch.tensor([[-0.75, -3.0]]))


def test_cloze_loss_is_cross_entropy_over_choices():
    from glm_megatron.training.losses import cloze_loss
    token_losses = torch.tensor([[1.0, 2.0], [0.5, 0.5]])  # single-token: [B, C]
    batch = {"choice_mask": torch.ones(2, 2, dtype=torch.bool), "label": torch.tensor([1, -1])}
    loss, report = cloze_loss()(token_losses, batch)
    expected = torch.nn.functional.cross_entropy(-token_losses[:1], torch.tensor([1]))
    torch.testing.assert_close(loss, expected)  # the unlabelled example is left out
    assert report["count"] == 1 and report["correct"] == 0
