"""Train a tiny GLM for a few steps at a given parallel layout and record what to compare
with the single-process run: per-step losses and gradient norms (before clipping), and the
full (gathered) parameters."""

from __future__ import annotations

import os

import torch

from glm_testing import make_trainer, micro_batches, tiny_config

GLOBAL_BATCH, MICRO_BATCH, STEPS, LR = 4, 1, 3, 1e-2


def _context(spec: dict):
    import glm_megatron  # noqa: F401
    from glm_megatron.parallel.context import initialize_distributed
    return initialize_distributed(spec.get("tp", 1), spec.get("pp", 1), "cpu")


def _train(ctx, spec: dict, out_dir: str):
    from glm_megatron.model.builder import build_model_chunks
    from glm_megatron.model.options import ExecutionOptions
    from glm_megatron.parallel.random import seed_all
    from glm_megatron.parallel.sharding import gather_full

    seed_all(ctx, 1234)
    config = tiny_config(spec["preset"], num_layers=spec.get("layers", 4),
                         **spec.get("config", {}))
    options = ExecutionOptions(spec.get("sp", False), *spec.get("recompute", (None, None, None)),
                               compile_backend=spec.get("compile"))
    model = build_model_chunks(config, ctx, 7, options=options,
                               virtual_stages=spec.get("virtual", 1))
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
    os.makedirs(out_dir, exist_ok=True)
    if ctx.dp_rank == 0 and ctx.tp_rank == 0:
        torch.save(params, os.path.join(out_dir, f"params_pp{ctx.pp_rank}.pt"))
    if ctx.is_rank_zero:
        torch.save(steps, os.path.join(out_dir, "steps.pt"))


def train_layout(spec: dict, out_dir: str):
    from glm_megatron.parallel.context import shutdown
    _train(_context(spec), spec, out_dir)
    shutdown()


def train_eager_and_compiled(spec: dict, out_dir: str):
    """The layout trained eagerly (into out_dir/eager), then with its layers compiled by
    spec["compile"] (out_dir/compiled), in the same processes; each rank also records how many
    graphs Dynamo compiled (out_dir/compiled/graphs_rank{R}.pt)."""
    import torch._dynamo.utils
    from glm_megatron.parallel.context import shutdown

    ctx = _context(spec)
    _train(ctx, {**spec, "compile": None}, os.path.join(out_dir, "eager"))
    _train(ctx, spec, os.path.join(out_dir, "compiled"))
    torch.save(torch._dynamo.utils.counters["stats"]["unique_graphs"],
               os.path.join(out_dir, "compiled", f"graphs_rank{ctx.rank}.pt"))
    shutdown()


def load_result(out_dir: str) -> tuple[list, dict]:
    params = {}
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("params_"):
            params.update(torch.load(os.path.join(out_dir, name)))
    return torch.load(os.path.join(out_dir, "steps.pt")), params


def assert_same_training(reference: tuple[list, dict], result: tuple[list, dict], name: str):
    """Per-step losses and gradient norms, and the parameters after the last step, equal within
    fp32 tolerance."""
    (ref_steps, ref_params), (steps, params) = reference, result
    assert len(steps) == len(ref_steps)
    for (ref_loss, ref_norm), (loss, norm) in zip(ref_steps, steps):
        assert abs(ref_loss - loss) < 2e-5 * max(1.0, abs(ref_loss)), (name, ref_steps, steps)
        assert abs(ref_norm - norm) < 1e-4 * ref_norm, (name, ref_steps, steps)
    assert params.keys() == ref_params.keys()
    # Adam moves a weight by ~lr (1e-2) whatever its gradient's size, so fp32 rounding in a
    # near-zero gradient (a row of a tied embedding that only the softmax reaches) can move a
    # single element by a good part of lr; a wrong gradient moves whole tensors. At most one
    # element in a thousand may stray beyond 5% of lr.
    for key, value in ref_params.items():
        apart = ~torch.isclose(params[key], value, rtol=1e-3, atol=5e-4)
        assert apart.sum() <= apart.numel() // 1000, (
            f"{name} {key}: {int(apart.sum())} of {apart.numel()} elements differ, by up to "
            f"{float((params[key] - value).abs().max()):.3g}")
