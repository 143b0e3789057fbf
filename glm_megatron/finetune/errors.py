"""The one error type for finetuning data that cannot be used."""

from __future__ import annotations


class FinetuneDataError(ValueError):
    """Data or data flags that cannot work. The message is one line naming the file (and line)
    or the flag at fault and saying how to fix it; the finetuning CLI prints it and exits 2."""
