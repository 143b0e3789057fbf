"""The GLM tokenizer: a SentencePiece model plus GLM's special tokens appended after it.

Token ids:
- 0 .. sp_size-1: the SentencePiece pieces. End of document (`eod`) is SentencePiece's own eos
  piece `</s>`, so the model must define one (`train_sentencepiece` does).
- sp_size + k: the special tokens below, k = their position in SPECIAL_TOKENS. The first nine
  are ChatGLM3's, in ChatGLM3's order, so a ChatGLM3 tokenizer.model gives the same ids as
  ChatGLM3 (which spells sop/eop as "sop"/"eop"). Then [dBLOCK] and [CLS] from GLM, and a
  dedicated `<pad>`: padding must differ from eod, or megatron-core's GPT dataset stops masking
  padded positions out of the loss.

`vocab_size` counts both parts; the model's embedding is `padded_vocab_size` of it.
Special tokens are never produced from plain text: `tokenize("[MASK]")` spells the characters,
so documents that happen to contain those strings stay ordinary text.

A SentencePiece model whose pieces already spell one of the special tokens:
- as a normal piece (learned from text): allowed. It is text like any other piece; the special
  token is still the appended id (detokenize writes both as the same string).
- as a user-defined or control piece (`user_defined_symbols` / `control_symbols` at training):
  refused with ValueError. Such a model reserves its own id for the token, GLM would use another
  one, and text would encode to the reserved id: two ids for one token. SentencePiece's own pad
  piece is the exception: GLM leaves it unused and pads with its appended `<pad>`.
A model without an eos piece is refused too: GLM ends every document with it.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import sentencepiece as spm

from ..atomic_write import write_atomically

SPECIAL_TOKENS = (
    "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    "[dBLOCK]", "[CLS]", "<pad>",
)


def padded_vocab_size(vocab_size: int, make_vocab_size_divisible_by: int = 128,
                      tensor_model_parallel_size: int = 1) -> int:
    """Megatron-LM's rule: round up to a multiple of divisible_by x TP, so every TP rank holds an
    equal, aligned slice of the embedding."""
    multiple = make_vocab_size_divisible_by * tensor_model_parallel_size
    return -(-vocab_size // multiple) * multiple


class GLMTokenizer:
    def __init__(self, model_path: str):
        self.model_path = str(model_path)
        self._sp = spm.SentencePieceProcessor(model_file=self.model_path)
        self._sp_size = self._sp.get_piece_size()
        if self._sp.eos_id() < 0:
            raise ValueError(f"{self.model_path}: the SentencePiece model has no eos piece "
                             "(</s>), which GLM ends every document with; use a model trained "
                             "with eos_id set (tools/train_tokenizer.py makes one)")
        self.special_tokens = {t: self._sp_size + k for k, t in enumerate(SPECIAL_TOKENS)}
        self._check_reserved_pieces()
        self._special_by_id = {i: t for t, i in self.special_tokens.items()}
        self._strips_leading_space = self._decode_strips_leading_space()

    def _check_reserved_pieces(self):
        """ValueError for a special token that the model reserves as a user-defined or control
        piece of its own (see the module docstring)."""
        present = {}
        for token in SPECIAL_TOKENS:
            i = self._sp.piece_to_id(token)
            if self._sp.id_to_piece(i) == token and i != self._sp.pad_id():
                present[token] = i
        if not present:
            return
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(self._sp.serialized_model_proto())
        kinds = {proto.SentencePiece.USER_DEFINED: "user-defined", proto.SentencePiece.CONTROL:
                 "control"}
        for token, i in present.items():
            kind = kinds.get(proto.pieces[i].type)
            if kind:
                raise ValueError(
                    f"{self.model_path}: SentencePiece piece {i} is {token!r} as a {kind} "
                    f"symbol, but GLM appends its own {token} after the SentencePiece pieces "
                    f"(id {self.special_tokens[token]}), so the model would have two ids for "
                    f"it; use a model trained without {token} among its user_defined_symbols/"
                    "control_symbols (tools/train_tokenizer.py makes one)")

    def _decode_strips_leading_space(self) -> bool:
        """Whether decoding drops the space of a leading '▁' (the dummy prefix): detokenize then
        restores it for text that follows a special token."""
        for i in range(self._sp_size):
            piece = self._sp.id_to_piece(i)
            if len(piece) > 1 and piece.startswith("▁") and not self._sp.is_control(i):
                return not self._sp.decode([i]).startswith(" ")
        return False

    @property
    def vocab_size(self) -> int:
        """SentencePiece pieces plus special tokens, before padding."""
        return self._sp_size + len(SPECIAL_TOKENS)

    @property
    def eod(self) -> int:
        return self._sp.eos_id()

    @property
    def pad(self) -> int:
        return self.special_tokens["<pad>"]

    @property
    def mask(self) -> int:
        return self.special_tokens["[MASK]"]

    @property
    def gmask(self) -> int:
        return self.special_tokens["[gMASK]"]

    @property
    def smask(self) -> int:
        return self.special_tokens["[sMASK]"]

    @property
    def sop(self) -> int:
        return self.special_tokens["<sop>"]

    @property
    def eop(self) -> int:
        return self.special_tokens["<eop>"]

    @property
    def dblock(self) -> int:
        return self.special_tokens["[dBLOCK]"]

    @property
    def cls(self) -> int:
        return self.special_tokens["[CLS]"]

    def pieces(self) -> list[str]:
        """The SentencePiece pieces by id (the special tokens after them are not included)."""
        return [self._sp.id_to_piece(i) for i in range(self._sp_size)]

    def tokenize(self, text: str) -> list[int]:
        """Plain SentencePiece ids: no BOS/EOS added, no special-token parsing."""
        return self._sp.encode(text)

    def detokenize(self, ids: Iterable[int]) -> str:
        """Text for ids; special and control tokens (eod included) appear as their strings."""
        parts, run = [], []

        def flush():
            if run:
                text = self._sp.decode(run)
                if parts and self._strips_leading_space and \
                        self._sp.id_to_piece(run[0]).startswith("▁"):
                    text = " " + text
                parts.append(text)
                run.clear()

        for i in map(int, ids):
            if 0 <= i < self._sp_size and not self._sp.is_control(i):
                run.append(i)
                continue
            flush()
            if i in self._special_by_id:
                parts.append(self._special_by_id[i])
            elif 0 <= i < self._sp_size:
                parts.append(self._sp.id_to_piece(i))
            else:
                raise ValueError(f"token id {i} is outside the tokenizer's vocabulary "
                                 f"(0..{self.vocab_size - 1}); ids above it are embedding padding")
        flush()
        return "".join(parts)


# SentencePiece skips sentences longer than this many bytes (its max_sentence_length); longer
# paragraphs are fed line by line.
MAX_SENTENCE_BYTES = 16384


class SentenceLengthError(ValueError):
    """Every text piece was longer than SentencePiece's sentence limit (it skips such pieces)."""


def _sentences(documents: Iterable[Union[str, os.PathLike]], max_bytes: int,
               counts: Counter) -> Iterator[str]:
    """Paragraphs, newlines inside them kept, so '\\n' becomes a piece of its own; a paragraph
    that may exceed `max_bytes` is split at its lines. Pieces still longer are left out (and
    counted): SentencePiece would skip them anyway."""
    for doc in documents:
        text = Path(doc).read_text(encoding="utf-8") if isinstance(doc, os.PathLike) else doc
        for paragraph in text.split("\n\n"):
            # At most 4 bytes per character in UTF-8.
            pieces = [paragraph] if len(paragraph) <= max_bytes // 4 else paragraph.split("\n")
            for piece in pieces:
                if not piece.strip():
                    continue
                if len(piece.encode("utf-8")) > max_bytes:
                    counts["too long"] += 1
                    continue
                counts["kept"] += 1
                yield piece


def train_sentencepiece(documents: Iterable[Union[str, os.PathLike]], vocab_size: int,
                        model_prefix: str, *, model_type: str = "unigram", seed: int = 1234,
                        num_threads: int = 2, max_sentences: int = 2_000_000,
                        max_sentence_length: int = MAX_SENTENCE_BYTES,
                        counts: Optional[Counter] = None) -> str:
    """Train a SentencePiece model and write PREFIX.model atomically; returns its path.

    `documents` are texts (str) or text files (pathlib.Path / os.PathLike). The model keeps text
    as is (identity normalisation, whitespace runs kept, so detokenize(tokenize(t)) == t), falls
    back to UTF-8 bytes for unseen characters, has unk (id 0) and eos `</s>` (id 1) and no bos.
    With a fixed seed and input the model is the same byte for byte. `counts` (if given)
    receives how many text pieces were kept and how many were longer than
    `max_sentence_length` bytes and left out; SentenceLengthError when none was kept.
    """
    counts = Counter() if counts is None else counts
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        _train(_sentences(documents, max_sentence_length, counts), model, vocab_size,
               model_type, num_threads, max_sentences, max_sentence_length)
    except RuntimeError:
        if counts["too long"] and not counts["kept"]:
            raise SentenceLengthError(
                f"all {counts['too long']} text pieces are longer than the sentence limit of "
                f"{max_sentence_length} bytes, and SentencePiece skips such pieces") from None
        raise
    path = f"{model_prefix}.model"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, model.getvalue())
    return path


def _train(sentences: Iterator[str], model: io.BytesIO, vocab_size: int, model_type: str,
           num_threads: int, max_sentences: int, max_sentence_length: int):
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences, model_writer=model, vocab_size=vocab_size,
        model_type=model_type, byte_fallback=True, unk_id=0, eos_id=1, bos_id=-1, pad_id=-1,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, split_digits=True, character_coverage=0.9999,
        max_sentence_length=max_sentence_length, input_sentence_size=max_sentences,
        shuffle_input_sentence=True, num_threads=num_threads, minloglevel=2)
