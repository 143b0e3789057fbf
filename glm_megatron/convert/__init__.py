"""Checkpoint conversion: Hugging Face export and import, and resharding between layouts.

- schema.py: our parameters (names, full shapes, TP splits) derived from a GLMConfig.
- transforms.py: the named row transforms (split QKV, regroup per query group, fused layouts).
- mapping.py / layouts/: the key tables of every Hugging Face layout (one module per family),
  shared by both directions.
- checkpoint.py: streaming reader/writer of our checkpoint format at any layout.
- hf_files.py: streaming sharded safetensors writer, lazy safetensors/.bin reader.
- tokenizer_files.py: the run's tokenizer as Hugging Face tokenizer files.
- staging.py: outputs are written beside the target and renamed into place at the end.
- export.py, hf_import.py, reshard.py: the three conversions the tools in tools/checkpoint run
  (cli.py: what those tools share).
"""

from .errors import ConversionError

__all__ = ["ConversionError"]
