"""A Hugging Face model directory -> our checkpoint at TP x PP, ready for `--load` with
`--finetune` (weights only, iteration 0).

Before anything is written, the directory's config.json is translated to our GLMConfig, every
tensor the config implies is checked for presence and shape (from the same tables export uses,
run on meta tensors), and every tensor in the files must be claimed by a rule: a file with
weights the layout does not know is refused, not silently dropped.
"""

from __future__ import annotations

import json
import os
import re
from typing import Callable, Optional

import torch

from ..checkpoint_format import TokenizerRecord
from .checkpoint import CheckpointWriter, pipeline_split
from .errors import ConversionError
from .hf_files import HFWeights
from .layouts import LAYOUTS, detect_layout
from .mapping import from_hf, hf_plan
from ..param_names import OUTPUT_LAYER, WORD_EMBEDDINGS
from .staging import check_target, staged_output_dir


def read_hf_config(directory: str) -> dict:
    if not os.path.isdir(directory):
        raise ConversionError(f"--load-dir {directory} does not exist; give a Hugging Face "
                              "model directory")
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise ConversionError(f"--load-dir {directory} has no config.json; give a Hugging Face "
                              "model directory (the one save_pretrained wrote)")
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise ConversionError(f"{path} is not valid JSON ({e})") from None


def import_checkpoint(load_dir: str, save_dir: str, *, tensor_parallel: int = 1,
                      pipeline_parallel: int = 1, layers_per_virtual_stage: Optional[int] = None,
                      first_stage_layers: Optional[int] = None,
                      last_stage_layers: Optional[int] = None, hf_layout: Optional[str] = None,
                      overwrite: bool = False, progress: bool = True,
                      log: Callable[[str], None] = print) -> str:
    """Write our checkpoint of `load_dir` into `save_dir`; returns the layout read."""
    check_target(os.path.abspath(save_dir), "--save-dir", overwrite)
    hf_config = read_hf_config(load_dir)
    if hf_layout is not None:
        if hf_layout not in LAYOUTS:
            raise ConversionError(f"--hf-layout {hf_layout!r} is unknown; choose one of "
                                  f"{', '.join(LAYOUTS)}")
        layout = LAYOUTS[hf_layout]
    else:
        layout = detect_layout(hf_config, os.path.join(load_dir, "config.json"))
    cfg, head, tokens = layout.config_from_hf(hf_config)
    split = pipeline_split(cfg, pipeline_parallel, layers_per_virtual_stage, first_stage_layers,
                           last_stage_layers)
    weights = HFWeights(load_dir)

    # Every tensor the config implies, with its shape; nothing left over.
    plan = hf_plan(layout, cfg, head, lambda _name: torch.float32)
    expected = {name: shape for name, shape, _, _ in plan}
    present = {n for n in weights.files if not any(re.fullmatch(p, n) for p in layout.ignorable)}
    if not cfg.untie_embeddings_and_output_weights and not head.is_classifier:
        present.discard("lm_head.weight")  # a tied head saved anyway: the embedding itself
    missing = sorted(set(expected) - present)
    if missing:
        raise ConversionError(f"{load_dir}: tensors its config.json implies are missing: "
                              f"{', '.join(missing[:6])}; the weights and config disagree or "
                              "shards are missing")
    unmapped = sorted(present - set(expected))
    if unmapped:
        raise ConversionError(f"{load_dir}: tensors with no place in our model ({layout.name} "
                              f"layout): {', '.join(unmapped[:6])}; this architecture variant "
                              "is not supported")
    for name, shape in expected.items():
        if tuple(weights.shapes[name]) != tuple(shape):
            raise ConversionError(
                f"{load_dir}: {name} has shape {list(weights.shapes[name])} but config.json "
                f"implies {list(shape)}; the weights and config.json disagree")

    special = {k: v for k, v in tokens.to_dict().items() if v is not None}
    records = {"converted_from": os.path.abspath(load_dir), "hf_layout": layout.name,
               "tokenizer": TokenizerRecord(special_tokens=special)}
    log(f"importing {load_dir} ({layout.name}: {layout.description}; {cfg.num_layers} layers x "
        f"{cfg.hidden_size}) to {save_dir} at TP={tensor_parallel} x PP={pipeline_parallel}")
    with staged_output_dir(save_dir, "--save-dir", overwrite) as staging:
        writer = CheckpointWriter(staging, cfg, head, tensor_parallel, pipeline_parallel,
                                  **records, **split)
        bar = _bar(cfg.num_layers + 2, progress)
        for stage in range(pipeline_parallel):
            tensors = {}
            for group in writer.stage_groups(stage):
                tensors.update(from_hf(layout, group, weights.read, cfg, head))
                if bar is not None:
                    bar.update(1)
            if writer.needs_tied_copy(stage):
                tensors[OUTPUT_LAYER] = from_hf(layout, "pre", weights.read, cfg,
                                                head)[WORD_EMBEDDINGS]
            writer.write_stage(stage, tensors)
            del tensors
        writer.finish()
        if bar is not None:
            bar.close()
    log(f"wrote {save_dir}; continue pretraining with --load {save_dir} --finetune and the "
        "architecture flags of the imported model")
    return layout.name


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc="import", unit="group")
