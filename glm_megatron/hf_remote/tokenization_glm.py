"""GLM's tokenizer for transformers, exactly as glm_megatron tokenizes: the SentencePiece model
(tokenizer.model) run by SentencePiece itself, GLM's special tokens appended after its pieces.

`AutoTokenizer.from_pretrained(dir, trust_remote_code=True)` loads this class; without remote
code, the same directory loads tokenizer.json (the same vocabulary in the `tokenizers` format),
which can segment runs of repeated characters differently where two segmentations score the
same. No BOS/EOS is added; special-token strings in text are recognised as such.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

import sentencepiece as spm
from transformers import PreTrainedTokenizer


class GLMSentencePieceTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                 **kwargs):
        self.vocab_file = vocab_file
        self.sp_model = spm.SentencePieceProcessor(model_file=vocab_file)
        # Whether decoding drops the space of a leading '▁' (the dummy prefix).
        first = self.sp_model.encode("a", out_type=str)
        self._strips_leading_space = bool(first) and first[0].startswith("\u2581") and \
            self.sp_model.decode(self.sp_model.encode("a")) == "a"
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(eos_token=eos_token, unk_token=unk_token, pad_token=pad_token, **kwargs)

    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> dict:
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token: str) -> int:
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """SentencePiece decodes each run of pieces; special tokens appear as their strings."""
        parts, run = [], []

        def flush():
            if run:
                text = self.sp_model.decode([self.sp_model.piece_to_id(t) for t in run])
                # SentencePiece drops the space of a leading '▁' (its dummy prefix): restore it
                # for text that follows a special token.
                if parts and self._strips_leading_space and run[0].startswith("\u2581"):
                    text = " " + text
                parts.append(text)
                run.clear()

        for token in tokens:
            if token in self.added_tokens_encoder:
                flush()
                parts.append(token)
            else:
                run.append(token)
        flush()
        return "".join(parts)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        return token_ids_0 + (token_ids_1 or [])

    def save_vocabulary(self, save_directory: str, filename_prefix: Optional[str] = None):
        name = (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model"
        target = os.path.join(save_directory, name)
        if os.path.abspath(self.vocab_file) != os.path.abspath(target):
            shutil.copy(self.vocab_file, target)
        return (target,)
