"""Checkpoints resume bit-exactly: k steps + save + load + k steps == 2k steps, at DP=2 with
the distributed optimizer (and a plain DP=2 for comparison), via the library API."""

import os

import pytest
import torch

from glm_testing import micro_batches, tiny_config
from multiprocess import run_distributed

STEPS, GLOBAL_BATCH = 4, 4


def _run(out_dir: str, distributed: bool, start: int, stop: int, load: bool, save: bool):
    import glm_megatron  # noqa: F401
    from megatron.core import parallel_state as mpu
    from glm_megatron.model.builder import build_model_chunks
    from glm_megatron.parallel import state
    from glm_megatron.parallel.random import set_random_seed
    from glm_megatron.training import checkpointing
    from glm_megatron.training.grads import GradientBuffer
    from glm_megatron.training.optimizer import MixedPrecisionAdamW
    from glm_megatron.training.step import train_step

    state.initialize_parallel(1, 1, "cpu")
    set_random_seed(1234)
    config = tiny_config("chatglm3-tiny")
    model = build_model_chunks(config, 7)
    grads = GradientBuffer(list(model.parameters()), mpu.get_data_parallel_group(),
                           shard_over_dp=distributed, bucket_elements=30_000)
    optimizer = MixedPrecisionAdamW(model, grads, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95),
                                    eps=1e-8, clip_grad=1.0)
    ckpt = os.path.join(out_dir, "ckpt")
    if load:
        checkpointing.load_checkpoint(ckpt, model, optimizer, None)
    losses = []
    for step in range(start, stop):
        batches = micro_batches(step, state.dp_rank(), state.dp_size(), "causal", GLOBAL_BATCH)
        losses.append(train_step(model, grads, optimizer, batches,
                                 GLOBAL_BATCH // state.dp_size())[0])
    if save:
        checkpointing.save_checkpoint(ckpt, checkpointing.TrainingState(stop, 0), model,
                                      optimizer, None, config, {})
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    if torch.distributed.get_rank() == 0:
        torch.save((losses, params), os.path.join(out_dir, f"run_{start}_{stop}.pt"))
    state.shutdown()


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
