"""Pretraining objectives as collations: packed token samples in, model batches out.

`build_collator(objective, ...)` returns a picklable `(samples, rng) -> batch` for DataLoader
workers; draw `rng` with `microbatch_rng(seed, microbatch, split)` so that a
micro-batch is the same whichever worker makes it and after a resume.

Batches (torch tensors, one static shape per objective and seq_length, see `collator.length`):
    tokens        int64   [b, L]
    labels        int64   [b, L]     aligned with tokens (the target at each position)
    loss_mask     float32 [b, L]
    position_ids  int64   [b, 2, L]  (positions, block positions); causal: [b, L]
    sep           int64   [b]        Part A length (bidirectional); causal: absent
    mode          int64   [b]        blank-infilling: the span kind, an index of BLANK_MODES
- causal: L = seq_length (samples of seq_length + 1 tokens)
- prefix-lm: L = seq_length (prefix + [gMASK] + <sop> + continuation: GLM's document-level blank
  as the suffix only)
- blank-infilling: L = BlankInfillingConfig.output_length(seq_length) (GLM's objective)
"""

from __future__ import annotations

from typing import Optional

from .blank_infilling import (BLANK_MODES, BlankInfillingCollator, BlankInfillingConfig,
                              add_arguments, collate, truncated_poisson_cdf,
                              truncated_poisson_mean)
from .causal import CausalCollator, PrefixLMCollator
from .common import (SpecialTokenIds, is_sentence_end_piece, microbatch_rng,
                     sentence_end_table)

OBJECTIVES = ("causal", "prefix-lm", "blank-infilling")

__all__ = ["BLANK_MODES", "OBJECTIVES", "BlankInfillingCollator", "BlankInfillingConfig", "CausalCollator",
           "PrefixLMCollator", "SpecialTokenIds", "add_arguments", "build_collator", "collate",
           "is_sentence_end_piece", "microbatch_rng", "sentence_end_table",
           "truncated_poisson_cdf", "truncated_poisson_mean"]


def build_collator(objective: str, config: Optional[BlankInfillingConfig], special_ids,
                   sentence_end_table, seq_length: int):
    """The collator for `--objective`. `special_ids`: SpecialTokenIds, a dict with its names, or
    the tokenizer. `config` and `sentence_end_table` are needed by blank-infilling only
    (prefix-lm reads config.block_position when given)."""
    if objective == "causal":
        return CausalCollator(special_ids, seq_length)
    if objective == "prefix-lm":
        block_position = config.block_position if config is not None else True
        return PrefixLMCollator(special_ids, seq_length, block_position)
    if objective == "blank-infilling":
        if sentence_end_table is None:
            raise ValueError("blank-infilling needs the sentence-end table "
                             "(glm_megatron.objectives.sentence_end_table)")
        return BlankInfillingCollator(config or BlankInfillingConfig(), special_ids,
                                      sentence_end_table, seq_length)
    raise ValueError(f"--objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
