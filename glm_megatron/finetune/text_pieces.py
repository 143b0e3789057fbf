"""Token ids for the pieces of an example (the text before the blank, the text after it, an
answer), so that the pieces join as the whole text would.

SentencePiece models trained here (and most others) add a "dummy prefix": tokenize("x")
spells "▁x", a word after a space. That is right for the start of a text and for a piece that
begins with a space (the prefix then stands for that space), but a piece glued to the text
before it ("." after the blank) would get a space it does not have; for it the bare "▁"
token the prefix makes is dropped. (When the prefix merges with the first character into one
piece, such as '▁"', it is kept: the piece reads as if a space came before it.) Models
without a dummy prefix tokenize every piece as it is.
"""

from __future__ import annotations

PREFIX = "\u2581"


class PieceTokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pieces = tokenizer.pieces()
        probe = tokenizer.tokenize("a")
        self.dummy_prefix = bool(probe) and self.pieces[probe[0]].startswith(PREFIX)
        self._bare_prefix = {i for i, piece in enumerate(self.pieces) if piece == PREFIX}

    def start(self, text: str) -> list:
        """The ids of `text` at the start of the input."""
        return self.tokenizer.tokenize(text)

    def continuation(self, text: str) -> list:
        """The ids of `text` right after other text."""
        if not self.dummy_prefix:
            return self.tokenizer.tokenize(text)
        if text[:1] == " ":
            return self.tokenizer.tokenize(text[1:])
        ids = self.tokenizer.tokenize(text)
        return ids[1:] if ids and ids[0] in self._bare_prefix else ids

    def describe(self, ids) -> str:
        """The pieces of `ids`, for messages."""
        return "[" + ", ".join(repr(self.pieces[i]) if i < len(self.pieces) else str(i)
                               for i in ids) + "]"
