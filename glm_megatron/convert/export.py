"""Our checkpoint (any TP x PP x DP layout) -> a Hugging Face model directory.

Streams group by group (embedding, each layer, head): read one group's shards, join them over
TP, map them to Hugging Face names and append them to the open safetensors shard. Peak memory is
one layer's tensors (or the embedding) plus the interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable, Optional

import torch

from ..finetune.settings import hf_classifier_fields
from . import tokenizer_files
from .checkpoint import CheckpointReader
from .errors import ConversionError
from .hf_files import ShardedSafetensorsWriter, parse_size
from .layouts import LAYOUTS, SpecialTokens, check_supported, default_layout
from .mapping import groups, hf_plan, to_hf
from .staging import check_target, staged_output_dir

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
REMOTE_CODE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "hf_remote")


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="group")


def export_checkpoint(load_dir: str, save_dir: str, *, hf_layout: Optional[str] = None,
                      iteration: Optional[int] = None, tokenizer_model: Optional[str] = None,
                      dtype: Optional[str] = None, max_shard_size: str = "5GB",
                      overwrite: bool = False, progress: bool = True,
                      log: Callable[[str], None] = print) -> str:
    """Write `save_dir`; returns the name of the layout written."""
    check_target(os.path.abspath(save_dir), "--save-dir", overwrite)
    reader = CheckpointReader(load_dir, iteration)
    cfg, head = reader.config, reader.head
    if hf_layout is not None and hf_layout not in LAYOUTS:
        raise ConversionError(f"--hf-layout {hf_layout!r} is unknown; choose one of "
                              f"{', '.join(LAYOUTS)}")
    layout = LAYOUTS[hf_layout] if hf_layout else default_layout(cfg, head)
    check_supported(layout, cfg, head)
    max_bytes = parse_size(max_shard_size)
    if dtype is not None and dtype not in DTYPES:
        raise ConversionError(f"--dtype {dtype!r} is unknown; choose one of {', '.join(DTYPES)}")
    out_dtype = DTYPES.get(dtype)

    recorded = reader.metadata.tokenizer
    tokenizer = tokenizer_files.resolve(tokenizer_model, recorded, log)
    if tokenizer is not None:
        tokenizer_files.check_fits(tokenizer, cfg.vocab_size)
    tokens = (tokenizer_files.special_tokens(tokenizer) if tokenizer is not None else
              SpecialTokens.from_dict(recorded.special_tokens if recorded else None))
    if head.is_classifier and tokens.pad is None:
        raise ConversionError("a classification model needs a pad token id (it pools the last "
                              "non-pad token): pass --tokenizer-model")

    def dtype_of(name: str) -> torch.dtype:
        return out_dtype or reader.dtype_of(name)

    plan = hf_plan(layout, cfg, head, dtype_of)
    weights_dtype = out_dtype or reader.dtype_of("embedding.word_embeddings.weight")
    log(f"exporting {reader.iter_dir} (TP={reader.tp} x PP={reader.pp}, iteration "
        f"{reader.iteration}, {len(plan)} tensors) to {save_dir} as {layout.name}: "
        f"{layout.description}")
    with staged_output_dir(save_dir, "--save-dir", overwrite) as staging:
        writer = ShardedSafetensorsWriter(staging, [p[:3] for p in plan], max_bytes)
        for group in _progress(groups(cfg), cfg.num_layers + 2, "export", progress):
            ours = reader.read_group(group)
            hf = to_hf(layout, group, ours, cfg, head)
            writer.write({k: v if out_dtype is None else v.to(out_dtype) for k, v in hf.items()})
            del ours, hf
        writer.close()
        hf_config = layout.config_to_hf(cfg, head, tokens, weights_dtype)
        if head.is_classifier:  # the labels a finetuning run recorded, if any
            hf_config.update(hf_classifier_fields(reader.metadata))
        _write_json(os.path.join(staging, "config.json"), hf_config)
        _write_json(os.path.join(staging, "generation_config.json"),
                    _generation_config(hf_config))
        if layout.remote_code is not None:
            for module in layout.remote_code:
                shutil.copy(os.path.join(REMOTE_CODE_DIR, module + ".py"), staging)
        if tokenizer is not None:
            tokenizer_files.write(tokenizer, staging, REMOTE_CODE_DIR, cfg.max_position_embeddings)
        if layout.name.startswith("chatglm") and layout.remote_code is None:
            log(f"note: the {layout.name} layout needs THUDM's configuration_chatglm.py and "
                "modeling_chatglm.py next to the weights to load with transformers")
    log(f"wrote {save_dir}: {len(writer.files)} safetensors shard(s), "
        f"{writer.total_size / 1e6:.1f} MB")
    return layout.name


def _generation_config(hf_config: dict) -> dict:
    out = {k: hf_config.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    if hf_config.get("use_cache") is False:
        out["use_cache"] = False
    return out


def _write_json(path: str, value: dict):
    with open(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=False)
        f.write("\n")
