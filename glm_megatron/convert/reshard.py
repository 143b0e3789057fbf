"""Our checkpoint at one TP x PP x DP layout -> the same checkpoint at another TP x PP layout,
optimizer state included, so that `--load` continues training at the new layout.

Weights and each parameter's fp32 master copy and Adam moments are joined over TP (and over the
DP ranks of the distributed optimizer) and split again for the target, stage by stage. The
optimizer state is written as one `optimizer_dp000.pt` per rank holding whole parameters, which
`load_checkpoint` reads at any DP size, with or without the distributed optimizer. RNG states
belong to the old ranks and are not carried over (dropout masks differ after a reshard). A
checkpoint saved with its optimizer whose optimizer files are missing is an error, never
silently resharded as weights only (--no-optimizer drops the state on purpose).
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from ..checkpoint_format import records_of
from .checkpoint import CheckpointReader, CheckpointWriter, pipeline_split
from ..param_names import OUTPUT_LAYER, WORD_EMBEDDINGS
from .staging import check_target, staged_output_dir

def reshard_checkpoint(load_dir: str, save_dir: str, *, tensor_parallel: int,
                       pipeline_parallel: int, layers_per_virtual_stage: Optional[int] = None,
                       first_stage_layers: Optional[int] = None,
                       last_stage_layers: Optional[int] = None, iteration: Optional[int] = None,
                       optimizer: bool = True, overwrite: bool = False, progress: bool = True,
                       log: Callable[[str], None] = print):
    check_target(os.path.abspath(save_dir), "--save-dir", overwrite)
    reader = CheckpointReader(load_dir, iteration)
    cfg, head = reader.config, reader.head
    with_optimizer = optimizer and reader.has_optimizer_state()
    if optimizer and not with_optimizer:
        log("note: the checkpoint was saved without optimizer state (imported, or resharded "
            "with --no-optimizer); resharding the weights only")
    common = reader.optimizer_common() if with_optimizer else None
    scheduler = reader.scheduler_state()
    split = pipeline_split(cfg, pipeline_parallel, layers_per_virtual_stage, first_stage_layers,
                           last_stage_layers)
    log(f"resharding {reader.iter_dir} (iteration {reader.iteration}) from TP={reader.tp} x "
        f"PP={reader.pp} x DP={reader.dp} to TP={tensor_parallel} x PP={pipeline_parallel} "
        f"into {save_dir}" + ("" if with_optimizer else " (weights only)"))
    with staged_output_dir(save_dir, "--save-dir", overwrite) as staging:
        writer = CheckpointWriter(staging, cfg, head, tensor_parallel, pipeline_parallel,
                                  iteration=reader.iteration,
                                  consumed_samples=reader.metadata.consumed_samples,
                                  data_parallel=reader.dp, **split,
                                  **records_of(reader.metadata))
        stages = range(pipeline_parallel)
        if progress:
            from tqdm import tqdm
            stages = tqdm(stages, desc="reshard", unit="stage")
        for stage in stages:
            names = [n for g in writer.stage_groups(stage) for n in reader.group_names(g)]
            tensors = reader.read(names)
            states = reader.read_optimizer(names) if with_optimizer else None
            if writer.needs_tied_copy(stage):
                # The last stage's copy of the tied embeddings: same weight, same Adam state
                # (both copies always receive the summed gradient).
                tensors[OUTPUT_LAYER] = reader.read([WORD_EMBEDDINGS])[WORD_EMBEDDINGS]
                if states is not None:
                    states[OUTPUT_LAYER] = reader.read_optimizer([WORD_EMBEDDINGS])[WORD_EMBEDDINGS]
            writer.write_stage(stage, tensors, states, common, scheduler)
            del tensors, states
        writer.finish()
    log(f"wrote {save_dir}; continue with --load {save_dir} at TP={tensor_parallel} x "
        f"PP={pipeline_parallel} (any DP size)")
