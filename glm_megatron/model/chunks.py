"""The model chunks one rank holds (one per virtual pipeline stage), seen as one model.

Parameter and state-dict names are the chunks' own, which are global (layer numbers are
global), so checkpoints and the optimizer never see which chunk a parameter lives in.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..parallel.param_roles import role_of


class ModelChunks(torch.nn.Module):
    def __init__(self, chunks: list[torch.nn.Module]):
        super().__init__()
        self.chunks = torch.nn.ModuleList(chunks)

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator:
        for chunk in self.chunks:
            yield from chunk.named_parameters(prefix, recurse, remove_duplicate)

    def state_dict(self, *, destination=None, prefix: str = "", keep_vars: bool = False) -> dict:
        destination = {} if destination is None else destination
        for chunk in self.chunks:
            chunk.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        return destination

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False):
        unused = set(state_dict)
        for chunk in self.chunks:
            own = {k: state_dict[k] for k in chunk.state_dict(keep_vars=True) if k in state_dict}
            chunk.load_state_dict(own, strict=strict, assign=assign)
            unused -= own.keys()
        if strict and unused:
            raise KeyError(f"checkpoint tensors with no place in this model: {sorted(unused)}")

    def tied_embedding_copies(self) -> list[torch.nn.Parameter]:
        """Tied word embeddings whose head lives on another pipeline stage: the first stage's
        embedding and the last stage's copy, where this rank holds them."""
        found = []
        for chunk in self.chunks:
            if not getattr(chunk, "tied", False) or (chunk.pre_process and chunk.post_process):
                continue
            if chunk.pre_process:
                found.append(chunk.embedding.word_embeddings.weight)
            if chunk.post_process:
                found.append(chunk.output_layer.weight)
        return found

    def written_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """Named parameters without tied copies: each full-model tensor once."""
        for name, param in self.named_parameters():
            if role_of(param).tied_copy_of is None:
                yield name, param
