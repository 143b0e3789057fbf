"""The run's tokenizer as Hugging Face tokenizer files that load offline with AutoTokenizer and
give the same ids as GLMTokenizer.tokenize.

Written next to the weights:
- tokenizer.model: the SentencePiece model itself (what GLMTokenizer reads);
- tokenizer.json: the same model in the `tokenizers` format, built piece by piece from the
  SentencePiece vocabulary: a Unigram model with the same scores and byte fallback, the same
  normalisation (spaces -> '▁', the dummy prefix) and GLM's special tokens at their ids
  (SentencePiece size + their position in SPECIAL_TOKENS). transformers' own SentencePiece
  conversion (LlamaTokenizer) builds a BPE model, which tokenizes a Unigram vocabulary
  differently, hence the explicit file;
- tokenizer_config.json and special_tokens_map.json: class PreTrainedTokenizerFast, no BOS or
  EOS added, pad/eos/mask/cls named;
- tokenization_glm.py (hf_remote/): with trust_remote_code=True, AutoTokenizer runs
  SentencePiece itself instead. The two differ only where two segmentations score the same up
  to rounding (SentencePiece sums scores in float32, `tokenizers` in float64), e.g. in long runs
  of one repeated character.
Control, unknown and byte pieces get a score that keeps them out of the Viterbi path, as
SentencePiece never produces them from text.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable, Optional

from ..checkpoint_format import TokenizerRecord
from .errors import ConversionError
from .layouts import SpecialTokens

_UNUSABLE_SCORE = -1e9


def resolve(path: Optional[str], recorded: Optional[TokenizerRecord],
            log: Callable[[str], None]):
    """The tokenizer to export: --tokenizer-model, else the one the run recorded."""
    flag = "--tokenizer-model"
    if path is None and recorded is not None and recorded.path:
        path, flag = recorded.path, "the checkpoint's recorded --tokenizer-model"
        if not os.path.isfile(path):
            log(f"note: {flag} {path} no longer exists: exporting without a tokenizer "
                "(pass --tokenizer-model)")
            return None
    if path is None:
        log("note: no tokenizer given (--tokenizer-model): exporting weights and config only")
        return None
    if not os.path.isfile(path):
        raise ConversionError(f"--tokenizer-model {path} does not exist; give the SentencePiece "
                              ".model the checkpoint was trained with")
    from ..data.tokenizer import GLMTokenizer
    try:
        return GLMTokenizer(path)
    except (ValueError, RuntimeError, OSError) as e:
        raise ConversionError(f"{flag} {path} is not a usable SentencePiece model ({e})") from None


def special_tokens(tokenizer) -> SpecialTokens:
    return SpecialTokens(pad=tokenizer.pad, eos=tokenizer.eod, mask=tokenizer.mask,
                         smask=tokenizer.smask, gmask=tokenizer.gmask, sop=tokenizer.sop,
                         eop=tokenizer.eop)


def check_fits(tokenizer, vocab_size: int):
    if tokenizer.vocab_size > vocab_size:
        raise ConversionError(f"--tokenizer-model {tokenizer.model_path} has "
                              f"{tokenizer.vocab_size} tokens but the model's vocabulary holds "
                              f"{vocab_size}; give the tokenizer the model was trained with")


def _added_token(content: str, token_id: int) -> dict:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": True}


def tokenizer_json(tokenizer) -> dict:
    """The `tokenizers` serialisation of GLMTokenizer's SentencePiece model + special tokens."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=tokenizer.model_path)
    vocab = []
    for i in range(sp.get_piece_size()):
        usable = not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))
        vocab.append([sp.id_to_piece(i), float(sp.get_score(i)) if usable else _UNUSABLE_SCORE])
    # How the SentencePiece normaliser treats spaces, read from its behaviour.
    dummy_prefix = sp.encode("a", out_type=str)[0].startswith("\u2581")
    if sp.decode(sp.encode("a  b")) != "a  b":
        raise ConversionError(f"{tokenizer.model_path} collapses whitespace "
                              "(remove_extra_whitespaces); its export is not supported")
    normalizers = ([{"type": "Prepend", "prepend": "\u2581"}] if dummy_prefix else []) + \
        [{"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]
    decoders = [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]
    if dummy_prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    added = [_added_token(sp.id_to_piece(i), i) for i in range(sp.get_piece_size())
             if sp.is_control(i) or sp.is_unknown(i)]
    added += [_added_token(t, i) for t, i in tokenizer.special_tokens.items()]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": None, "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "Unigram", "unk_id": sp.unk_id(), "vocab": vocab,
                  "byte_fallback": True},
    }


REMOTE_TOKENIZER = "tokenization_glm"


def write(tokenizer, directory: str, remote_code_dir: str,
          model_max_length: Optional[int] = None):
    """tokenizer.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json, and the
    exact SentencePiece tokenizer class for trust_remote_code=True."""
    shutil.copy(tokenizer.model_path, os.path.join(directory, "tokenizer.model"))
    shutil.copy(os.path.join(remote_code_dir, REMOTE_TOKENIZER + ".py"), directory)
    with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(tokenizer), f, ensure_ascii=False)
    specials = dict(tokenizer.special_tokens)
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=tokenizer.model_path)
    named = {"eos_token": sp.id_to_piece(tokenizer.eod), "unk_token": sp.id_to_piece(sp.unk_id()),
             "pad_token": "<pad>", "mask_token": "[MASK]", "cls_token": "[CLS]"}
    extra = [t for t in specials if t not in named.values()]
    decoder = {str(sp.unk_id()): sp.id_to_piece(sp.unk_id()),
               str(tokenizer.eod): sp.id_to_piece(tokenizer.eod),
               **{str(i): t for t, i in specials.items()}}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        # trust_remote_code=True: SentencePiece itself (exact on ties); else tokenizer.json.
        "auto_map": {"AutoTokenizer": [f"{REMOTE_TOKENIZER}.GLMSentencePieceTokenizer", None]},
        "add_bos_token": False, "add_eos_token": False, "bos_token": None, **named,
        "additional_special_tokens": extra,
        "added_tokens_decoder": {i: {k: v for k, v in _added_token(t, int(i)).items() if k != "id"}
                                 for i, t in decoder.items()},
        "clean_up_tokenization_spaces": False, "padding_side": "right",
    }
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    with open(os.path.join(directory, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump({**named, "additional_special_tokens": extra}, f, indent=2, ensure_ascii=False)
