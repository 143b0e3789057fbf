"""Our transformers remote code for GLM and ChatGLM-6B (glm_megatron/hf_remote): the inputs it
derives from the ids, as GLM's own code lays them out."""

from __future__ import annotations

import torch

MASK, SMASK, GMASK, SOP = 90, 91, 92, 93


def test_part_b_takes_the_last_mask_as_glm_cloze_inputs_do():
    from glm_megatron.hf_remote.blank_infilling import blank_infilling_inputs
    ids = torch.tensor([[5, MASK, 6, MASK, 7, SOP, 8, 9],  # cloze: the last [MASK]
                        [5, GMASK, 6, GMASK, 7, SOP, 8, 9],  # generation: the first [gMASK]
                        [5, MASK, 6, GMASK, 7, SOP, 8, 9],  # [MASK] wins
                        [5, 6, 7, 8, 9, SOP, 8, 9]])  # no mask: the last Part-A token
    positions, sep = blank_infilling_inputs(ids, SOP, [MASK, SMASK, GMASK])
    assert sep.tolist() == [5, 5, 5, 5]
    assert positions[:, 0, 5:].tolist() == [[3] * 3, [1] * 3, [1] * 3, [4] * 3]
    assert positions[:, 0, :5].tolist() == [list(range(5))] * 4
    assert positions[:, 1].tolist() == [[0] * 5 + [1, 2, 3]] * 4
