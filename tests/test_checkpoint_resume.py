"""Checkpoints resume bit-exactly: k steps + save + load + k steps == 2k steps, at DP=2 with
the distributed optimizer (and a plain DP=2 for comparison), via the library API."""

import os

import pytest
import torch

from glm_testing import make_trainer, micro_batches, step_loss, tiny_config
from multiprocess import run_distributed

STEPS, GLOBAL_BATCH = 4, 4


def _run(out_dir: str, distributed: bool, start: int, stop: int, load: bool, save: bool):
    import glm_megatron  # noqa: F401
    from glm_megatron.model.builder import build_model_chunks
    from glm_megatron.parallel.context import initialize_distributed, shutdown
    from glm_megatron.parallel.random import seed_all
    from glm_megatron.training import checkpointing

    ctx = initialize_distributed(1, 1, "cpu")
    seed_all(ctx, 1234)
    config = tiny_config("chatglm3-tiny")
    model = build_model_chunks(config, ctx, 7)
    trainer = make_trainer(ctx, model, GLOBAL_BATCH // ctx.dp_size,
                           distributed_optimizer=distributed, bucket_elements=30_000, eps=1e-8)
    ckpt = os.path.join(out_dir, "ckpt")
    if load:
        checkpointing.load_checkpoint(ckpt, model, trainer.optimizer, None, ctx)
    losses = [step_loss(trainer, micro_batches(step, ctx.dp_rank, ctx.dp_size, "causal",
                                               GLOBAL_BATCH))
              for step in range(start, stop)]
    if save:
        checkpointing.save_checkpoint(ckpt, checkpointing.TrainingState(stop, 0), model,
                                      trainer.optimizer, None, config, ctx)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    if ctx.is_rank_zero:
        torch.save((losses, params), os.path.join(out_dir, f"run_{start}_{stop}.pt"))
    shutdown()


@pytest.mark.parametrize("distributed", [True, False], ids=["distopt", "plain"])
def test_resume_is_bit_exact_at_dp2(tmp_path, distributed):
    half = STEPS // 2
    run_distributed(_run, 2, str(tmp_path), distributed, 0, STEPS, False, False)
    run_distributed(_run, 2, str(tmp_path), distributed, 0, half, False, True)
    run_distributed(_run, 2, str(tmp_path), distributed, half, STEPS, True, False)
    straight_losses, straight = torch.load(tmp_path / f"run_0_{STEPS}.pt")
    first, _ = torch.load(tmp_path / f"run_0_{half}.pt")
    second, resumed = torch.load(tmp_path / f"run_{half}_{STEPS}.pt")
    assert first + second == straight_losses
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name
    files = os.listdir(tmp_path / "ckpt" / f"iter_{half:07d}" / "mp_rank_00")
    assert sorted(f for f in files if f.startswith("optimizer")) == (
        ["optimizer_dp000.pt", "optimizer_dp001.pt"] if distributed else ["optimizer_dp000.pt"])
