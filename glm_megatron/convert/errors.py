"""The one error type the converters raise for bad input."""

from __future__ import annotations


class ConversionError(ValueError):
    """Input a conversion cannot use. The message is one line that names the flag or file at
    fault and says how to fix it; the tools print it and exit non-zero."""
