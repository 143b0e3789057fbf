"""GLM blank infilling for transformers models: 2D positions and the Part A / Part B mask.

An input is Part A (the text, with each blank collapsed to one mask token) followed by Part B,
which starts with the start-of-piece token (sop): generation fills the blank from there.
- sep = index of the first sop (no sop: the whole input is Part A);
- Part A: position ids 0, 1, ...; block position ids 0;
- Part B: position id = the position of the blank's mask token: the last [MASK] of Part A, as
  GLM's cloze inputs place it (tasks/data_utils.py), else the first [sMASK] or [gMASK] (GLM's
  and ChatGLM-6B's generation); block position ids 1, 2, ...;
- attention: every token sees all of Part A and the Part-B tokens up to itself.
"""

from __future__ import annotations

from typing import Optional

import torch


def _sep(input_ids: torch.Tensor, sop_token_id: Optional[int]) -> torch.Tensor:
    batch, seq = input_ids.shape
    if sop_token_id is None:
        return torch.full((batch,), seq, dtype=torch.long, device=input_ids.device)
    is_sop = input_ids == sop_token_id
    first = torch.where(is_sop.any(dim=1), is_sop.int().argmax(dim=1),
                        torch.tensor(seq, device=input_ids.device))
    return first.to(torch.long)


def _is_any(input_ids: torch.Tensor, tokens) -> torch.Tensor:
    found = torch.zeros_like(input_ids, dtype=torch.bool)
    for token in tokens:
        if token is not None:
            found |= input_ids == token
    return found


def blank_infilling_inputs(input_ids: torch.Tensor, sop_token_id: Optional[int],
                           mask_token_ids: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(position ids [b, 2, s], sep [b]) for inputs laid out as described above.
    `mask_token_ids`: [MASK], [sMASK], [gMASK] (None where the vocabulary has none)."""
    batch, seq = input_ids.shape
    device = input_ids.device
    sep = _sep(input_ids, sop_token_id)
    index = torch.arange(seq, device=device).expand(batch, seq)
    part_a = index < sep[:, None]
    is_mask = _is_any(input_ids, mask_token_ids[:1]) & part_a
    is_other = _is_any(input_ids, mask_token_ids[1:]) & part_a
    last_mask = seq - 1 - is_mask.flip(1).int().argmax(dim=1)
    first_other = is_other.int().argmax(dim=1)
    # Without any mask token: the last Part-A position.
    mask_position = torch.where(is_mask.any(dim=1), last_mask,
                                torch.where(is_other.any(dim=1), first_other,
                                            (sep - 1).clamp(min=0)))
    positions = torch.where(part_a, index, mask_position[:, None])
    block_positions = torch.where(part_a, torch.zeros_like(index), index - sep[:, None] + 1)
    return torch.stack([positions, block_positions], dim=1), sep


def attention_allowed(sep: torch.Tensor, seq: int, padding_mask: Optional[torch.Tensor] = None):
    """Boolean [b, 1, s, s], True where a query (row) may attend to a key (column)."""
    rows = torch.arange(seq, device=sep.device)
    causal = rows[None, :] <= rows[:, None]
    allowed = causal[None] | (rows[None, None, :] < sep[:, None, None])
    if padding_mask is not None:
        allowed = allowed & padding_mask[:, None, :].bool()
        # A padded query row would see nothing: let it see itself (its output is ignored).
        allowed = allowed | torch.eye(seq, dtype=torch.bool, device=sep.device)[None]
    return allowed[:, None]


def resolve_inputs(input_ids: torch.Tensor, position_ids, attention_mask, sop_token_id,
                   mask_token_ids):
    """The model's (position ids [b, 2, s], boolean mask [b, 1, s, s]) from what the caller gave.

    position_ids: [b, 2, s] (positions, block positions), [b, s] (block positions 0), or None
    (derived from the input ids). attention_mask: None; [b] sep lengths (GLM's convention);
    [b, s] padding mask (1 = token), combined with the sep derived from the input ids; or a full
    [b, 1, s, s] / [b, s, s] mask, True (or 1) where attention is allowed.
    """
    batch, seq = input_ids.shape
    derived, sep = blank_infilling_inputs(input_ids, sop_token_id, mask_token_ids)
    if position_ids is None:
        position_ids = derived
    elif position_ids.dim() == 2:
        position_ids = torch.stack([position_ids, torch.zeros_like(position_ids)], dim=1)
    padding = None
    if attention_mask is not None and attention_mask.dim() == 1:
        sep = attention_mask.to(torch.long)
    elif attention_mask is not None and attention_mask.dim() == 2:
        padding = attention_mask
    elif attention_mask is not None:
        mask = attention_mask.bool()
        return position_ids, (mask if mask.dim() == 4 else mask[:, None])
    return position_ids, attention_allowed(sep, seq, padding)
