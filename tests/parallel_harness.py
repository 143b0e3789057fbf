"""Train a tiny GLM for a few steps at a given parallel layout and record what to compare
with the single-process run: per-step losses and the full (gathered) parameters."""

from __future__ import annotations

import os

import torch

from glm_testing import micro_batches, tiny_config

GLOBAL_BATCH, MICRO_BATCH, STEPS, LR = 4, 1, 3, 1e-2


def train_layout(spec: dict, out_dir: str):
    import glm_megatron  # noqa: F401
    from megatron.core import parallel_state as mpu
    from glm_megatron.model.builder import build_model_chunks
    from glm_megatron.model.options import ExecutionOptions
    from glm_megatron.parallel import state
    from glm_megatron.parallel.pipeline import PipelineSchedule
    from glm_megatron.parallel.random import set_random_seed
    from glm_megatron.parallel.sharding import gather_full
    from glm_megatron.training.grads import GradientBuffer
    from glm_megatron.training.optimizer import MixedPrecisionAdamW
    from glm_megatron.training.step import train_step

    tp, pp, virtual = spec.get("tp", 1), spec.get("pp", 1), spec.get("virtual", 1)
    state.initialize_parallel(tp, pp, "cpu")
    set_random_seed(1234)
    config = tiny_config(spec["preset"], num_layers=spec.get("layers", 4),
                         **spec.get("config", {}))
    options = ExecutionOptions(spec.get("sp", False), *spec.get("recompute", (None, None, None)))
    model = build_model_chunks(config, 7, options=options, virtual_stages=virtual)
    grads = GradientBuffer(list(model.parameters()), mpu.get_data_parallel_group(),
                           shard_over_dp=spec.get("distributed_optimizer", False),
                           deferred_params=tuple(model.tied_embedding_copies()),
                           bucket_elements=spec.get("bucket_elements", 40_000_000))
    optimizer = MixedPrecisionAdamW(model, grads, lr=LR, weight_decay=0.1, betas=(0.9, 0.95),
                                    eps=1e-6, clip_grad=1.0)
    num_micro = GLOBAL_BATCH // (MICRO_BATCH * state.dp_size())
    pipeline = (PipelineSchedule(list(model.chunks), num_micro, virtual, optimizer.scale_loss)
                if pp > 1 else None)
    losses = []
    for step in range(STEPS):
        batches = micro_batches(step, state.dp_rank(), state.dp_size(), spec.get("kind", "blank"),
                                GLOBAL_BATCH, MICRO_BATCH)
        losses.append(train_step(model, grads, optimizer, batches, num_micro, pipeline)[0])
    tp_group = mpu.get_tensor_model_parallel_group()
    params = {n: gather_full(p.detach(), p, tp_group) for n, p in model.named_parameters()
              if not getattr(p, "shared_embedding_copy", False)}
    if state.dp_rank() == 0 and state.tp_rank() == 0:
        torch.save(params, os.path.join(out_dir, f"params_pp{state.pp_rank()}.pt"))
    if torch.distributed.get_rank() == 0:
        torch.save(losses, os.path.join(out_dir, "losses.pt"))
    state.shutdown()


def load_result(out_dir: str) -> tuple[list, dict]:
    params = {}
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("params_"):
            params.update(torch.load(os.path.join(out_dir, name)))
    return torch.load(os.path.join(out_dir, "losses.pt")), params
