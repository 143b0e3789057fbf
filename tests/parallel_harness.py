"""Train a tiny GLM for a few steps at a given parallel layout and record what to compare
with the single-process run: per-step losses and gradient norms (before clipping), and the
full (gathered) parameters."""

from __future__ import annotations

import os

import torch

from glm_testing import make_trainer, micro_batches, tiny_config

GLOBAL_BATCH, MICRO_BATCH, STEPS, LR = 4, 1, 3, 1e-2


def train_layout(spec: dict, out_dir: str):
    import glm_megatron  # noqa: F401
    from glm_megatron.model.builder import build_model_chunks
    from glm_megatron.model.options import ExecutionOptions
    from glm_megatron.parallel.context import initialize_distributed, shutdown
    from glm_megatron.parallel.random import seed_all
    from glm_megatron.parallel.sharding import gather_full

    tp, pp, virtual = spec.get("tp", 1), spec.get("pp", 1), spec.get("virtual", 1)
    ctx = initialize_distributed(tp, pp, "cpu")
    seed_all(ctx, 1234)
    config = tiny_config(spec["preset"], num_layers=spec.get("layers", 4),
                         **spec.get("config", {}))
    options = ExecutionOptions(spec.get("sp", False), *spec.get("recompute", (None, None, None)),
                               compile_backend=spec.get("compile"))
    model = build_model_chunks(config, ctx, 7, options=options, virtual_stages=virtual)
    micro_batch = spec.get("micro_batch", MICRO_BATCH)
    trainer = make_trainer(ctx, model, GLOBAL_BATCH // (micro_batch * ctx.dp_size), lr=LR,
                           distributed_optimizer=spec.get("distributed_optimizer", False),
                           bucket_elements=spec.get("bucket_elements", 40_000_000))
    steps = []  # (loss, gradient norm) per step
    for step in range(STEPS):
        output, applied, grad_norm = trainer.train_step(micro_batches(
            step, ctx.dp_rank, ctx.dp_size, spec.get("kind", "blank"), GLOBAL_BATCH, micro_batch))
        assert applied
        steps.append((output.mean_loss(ctx), grad_norm))
    params = {n: gather_full(p.detach(), p, ctx.tp_group)
              for n, p in model.written_parameters()}
    if ctx.dp_rank == 0 and ctx.tp_rank == 0:
        torch.save(params, os.path.join(out_dir, f"params_pp{ctx.pp_rank}.pt"))
    if ctx.is_rank_zero:
        torch.save(steps, os.path.join(out_dir, "steps.pt"))
    shutdown()


def load_result(out_dir: str) -> tuple[list, dict]:
    params = {}
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("params_"):
            params.update(torch.load(os.path.join(out_dir, name)))
    return torch.load(os.path.join(out_dir, "steps.pt")), params
