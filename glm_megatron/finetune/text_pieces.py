"""Token ids for the pieces of an example (the text before the blank, the text after it, an
answer), so that the pieces join as exactly the text of the whole example.

SentencePiece models trained here (and most others) add a "dummy prefix": tokenize("x")
spells "▁x", a word after a space. That is right for the start of a text and for a piece that
begins with a space (the prefix then stands for that space), but a piece glued to the text
before it ("." after the blank) must not get a space: there the prefix is taken off its first
token, leaving the rest of that token spelled by one piece, or one piece per character (UTF-8
byte pieces for a character without one). Models without a dummy prefix tokenize every piece
as it is.
"""

from __future__ import annotations

from typing import Optional

PREFIX = "\u2581"


class PieceTokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pieces = tokenizer.pieces()
        self._ids = {piece: i for i, piece in enumerate(self.pieces)}
        probe = tokenizer.tokenize("a")
        self.dummy_prefix = bool(probe) and self.pieces[probe[0]].startswith(PREFIX)

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
        if not ids or not self.pieces[ids[0]].startswith(PREFIX):
            return ids
        rest = self._spell(self.pieces[ids[0]][len(PREFIX):])
        return ids if rest is None else rest + ids[1:]

    def _spell(self, text: str) -> Optional[list]:
        """Ids that spell `text`, or None when some character has neither a piece nor byte
        pieces."""
        if not text or text in self._ids:
            return [self._ids[text]] if text else []
        ids = []
        for char in text:
            spelled = [char] if char in self._ids else \
                [f"<0x{byte:02X}>" for byte in char.encode("utf-8")]
            if not all(piece in self._ids for piece in spelled):
                return None
            ids += [self._ids[piece] for piece in spelled]
        return ids

    def describe(self, ids) -> str:
        """The pieces of `ids`, for messages."""
        return "[" + ", ".join(repr(self.pieces[i]) if i < len(self.pieces) else str(i)
                               for i in ids) + "]"
