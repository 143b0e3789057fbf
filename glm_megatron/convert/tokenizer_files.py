"""Tokenizer files for an export (filled in once glm_megatron.data.tokenizer exists)."""

from __future__ import annotations

import os
from typing import Callable, Optional

from .errors import ConversionError
from .layouts import SpecialTokens


def resolve(path: Optional[str], args: dict, log: Callable[[str], None]):
    path = path or args.get("tokenizer_model")
    if path is None:
        log("note: no tokenizer given (--tokenizer-model): exporting weights and config only")
        return None
    if not os.path.isfile(path):
        raise ConversionError(f"--tokenizer-model {path} does not exist; give the SentencePiece "
                              ".model the checkpoint was trained with")
    from ..data.tokenizer import GLMTokenizer
    return GLMTokenizer(path)


def special_tokens(tokenizer) -> SpecialTokens:
    raise NotImplementedError


def write(tokenizer, directory: str, layout_name: str):
    raise NotImplementedError
