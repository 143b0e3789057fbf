"""`--truncate`: cut an example's own text until its row fits.

The longest shortenable part (the data, never the pattern's words, the mask or an answer)
loses tokens from its end, down to the length of the next longest at most, until the row fits,
so long texts end up equally long, as GLM's cutting one token at a time from the longer of its
two text segments does (GLM cuts the last shortenable part of that segment; here it is the
longest part, the later one on a tie). A part is measured and cut with its own tokenization,
and the row re-encoded after each cut, so a cut that tokenizes differently in context just
leads to another round.
"""

from __future__ import annotations

from typing import Callable, Optional

from .examples import MASK, Text


def shorten(parts: tuple, row_length: Callable[[tuple], int], budget: int,
            tokenizer) -> Optional[tuple]:
    """`parts` with shortenable text cut until row_length(parts) <= budget, or None when the
    parts that cannot be cut alone are too long."""
    parts = list(parts)
    while True:
        excess = row_length(tuple(parts)) - budget
        if excess <= 0:
            return tuple(parts)
        sizes = [(len(tokenizer.tokenize(part.text)), i) for i, part in enumerate(parts)
                 if part is not MASK and part.shortenable and part.text]
        if not sizes:
            return None
        size, i = max(sizes)
        rivals = [n for n, j in sizes if j != i]
        # As GLM, which takes one token at a time from the longer text: cut this part down to
        # the next longest at most; parts of equal length share the cut.
        below = size - max(rivals, default=0)
        remove = min(excess, below) if below else -(-excess // (rivals.count(size) + 1))
        text = parts[i].text
        cut = tokenizer.detokenize(tokenizer.tokenize(text)[:max(size - remove, 0)])
        # Detokenized text is a prefix of the original; make sure every round shortens it.
        parts[i] = Text(cut if len(cut) < len(text) else text[:-1], shortenable=True)
