"""fp16 training: the dynamic loss scaler (growth, back-off, hysteresis, its floor), scaled
gradients unscaled before the update, overflowing steps skipped, and a resume that carries the
scaler's state."""

import math
import os

import pytest
import torch

from glm_testing import make_trainer, micro_batches, tiny_config
from glm_megatron.training.optimizer import DynamicLossScaler

GLOBAL_BATCH = 4


def _scales(scaler: DynamicLossScaler, overflows) -> list[float]:
    out = []
    for found_inf in overflows:
        scaler.update(found_inf)
        out.append(scaler.scale)
    return out


def test_scale_grows_after_a_window_of_clean_steps():
    scaler = DynamicLossScaler(8.0, 1.0, window=3, hysteresis=2)
    assert _scales(scaler, [False] * 7) == [8, 8, 16, 16, 16, 32, 32]


def test_scale_backs_off_after_hysteresis_overflows_and_not_below_the_minimum():
    scaler = DynamicLossScaler(8.0, 2.0, window=100, hysteresis=2)
    # The first overflow is tolerated; then every further one halves, down to the minimum.
    assert _scales(scaler, [True] * 5) == [8, 4, 2, 2, 2]
    # A clean window restores the hysteresis: again one overflow is tolerated.
    scaler = DynamicLossScaler(8.0, 1.0, window=2, hysteresis=2)
    assert _scales(scaler, [True, True, False, False, True, True]) == [8, 4, 4, 8, 8, 4]
    # A clean step between overflows does not restore it before the window is full.
    scaler = DynamicLossScaler(8.0, 1.0, window=5, hysteresis=2)
    assert _scales(scaler, [True, False, True]) == [8, 8, 4]


def test_the_search_is_exhausted_after_hysteresis_overflows_at_the_floor():
    scaler = DynamicLossScaler(4.0, 1.0, window=100, hysteresis=2)
    outcome = []
    for _ in range(6):
        scaler.update(True)
        outcome.append((scaler.scale, scaler.overflows_at_floor, scaler.search_exhausted))
    # 4 -> (tolerated) 4 -> 2 -> 1; only overflows that happen at scale 1 count.
    assert outcome == [(4, 0, False), (2, 0, False), (1, 0, False), (1, 1, False),
                       (1, 2, True), (1, 3, True)]
    scaler.update(False)
    assert (scaler.overflows_at_floor, scaler.search_exhausted) == (0, False)
    static = DynamicLossScaler(1e4, 1.0, window=1, hysteresis=3, dynamic=False)
    assert _scales(static, [False, True, True]) == [1e4] * 3 and not static.search_exhausted
    static.update(True)
    assert static.search_exhausted


def test_scaler_state_round_trips_and_reads_older_states():
    scaler = DynamicLossScaler(64.0, 1.0, window=3, hysteresis=2)
    _scales(scaler, [True, True, False, True])
    copy = DynamicLossScaler(1.0, 1.0, window=3, hysteresis=2)
    copy.load_state_dict(scaler.state_dict())
    assert copy.state_dict() == scaler.state_dict()
    assert _scales(copy, [True, False, False, False, True]) == \
        _scales(scaler, [True, False, False, False, True])
    old = {k: v for k, v in scaler.state_dict().items() if k != "overflows_at_floor"}
    copy.load_state_dict(old)  # saved before the counter existed
    assert copy.overflows_at_floor == 0


# A trainer on an fp16 model -------------------------------------------------------------------
def _fp16_trainer(ctx, scale: float, **scaler_args):
    from glm_megatron.model.builder import build_model_chunks
    model = build_model_chunks(tiny_config("chatglm3-tiny"), ctx, 7,
                               params_dtype=torch.float16)
    scaler = DynamicLossScaler(scale, scaler_args.pop("min_scale", 1.0),
                               scaler_args.pop("window", 1000), scaler_args.pop("hysteresis", 2),
                               **scaler_args)
    return make_trainer(ctx, model, GLOBAL_BATCH, loss_scaler=scaler)


def _gradients(trainer, step: int = 0) -> torch.Tensor:
    trainer.model.train()
    trainer.grads.start(trainer.num_microbatches)
    trainer.forward_backward(micro_batches(step, 0, 1, "causal", GLOBAL_BATCH))
    trainer.finalize_grads()
    return trainer.grads.buffer.clone()


def test_gradients_are_scaled_and_the_update_unscales_them(ctx):
    unscaled, scaled = _fp16_trainer(ctx, 1.0), _fp16_trainer(ctx, 1024.0)
    reference = _gradients(unscaled)
    # The same gradient to fp16 precision (unscaled, the smallest ones underflow to 0).
    difference = _gradients(scaled) / 1024 - reference
    assert difference.norm() < 1e-2 * reference.norm()
    steps = [t.train_step(micro_batches(0, 0, 1, "causal", GLOBAL_BATCH))
             for t in (unscaled, scaled)]
    (_, applied_1, norm_1), (_, applied_1024, norm_1024) = steps
    assert applied_1 and applied_1024
    assert norm_1 == pytest.approx(reference.norm().item(), rel=1e-3)
    # Unscaled before the norm (and so before clipping and the update).
    assert norm_1024 == pytest.approx(norm_1, rel=1e-2)


def test_overflowing_steps_are_skipped_and_the_scale_backs_off(ctx):
    trainer = _fp16_trainer(ctx, 2.0 ** 40, hysteresis=2)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    masters = [m.clone() for m in trainer.optimizer.masters()]
    results = [trainer.train_step(micro_batches(s, 0, 1, "causal", GLOBAL_BATCH))
               for s in range(3)]
    assert [(applied, math.isnan(norm)) for _, applied, norm in results] == [(False, True)] * 3
    assert trainer.optimizer.loss_scaler.scale == 2.0 ** 38  # tolerated, halved, halved
    for p, q in zip(before, trainer.model.parameters()):
        assert torch.equal(p, q)
    for m, n in zip(masters, trainer.optimizer.masters()):
        assert torch.equal(m, n)
    assert not trainer.optimizer.optimizer.state  # Adam never stepped


def _run(ctx, root: str, start: int, stop: int, load: bool, save: bool):
    from glm_megatron.parallel.random import seed_all
    from glm_megatron.training import checkpointing
    seed_all(ctx, 1234)
    trainer = _fp16_trainer(ctx, 2.0 ** 22, window=2)
    config = tiny_config("chatglm3-tiny")
    if load:
        checkpointing.load_checkpoint(root, trainer.model, trainer.optimizer, None, ctx)
    applied = [trainer.train_step(micro_batches(s, 0, 1, "causal", GLOBAL_BATCH))[1]
               for s in range(start, stop)]
    if save:
        checkpointing.save_checkpoint(root, checkpointing.TrainingState(stop, 0), trainer.model,
                                      trainer.optimizer, None, config, ctx)
    return applied, trainer


def test_resume_carries_the_loss_scaler(ctx, tmp_path):
    """Saved in the middle of the scale search (after overflows, between growth steps), the
    resumed run skips, grows and updates exactly as the uninterrupted one."""
    root = str(tmp_path / "ckpt")
    straight_applied, straight = _run(ctx, root, 0, 8, load=False, save=False)
    first_applied, first = _run(ctx, root, 0, 4, load=False, save=True)
    second_applied, second = _run(ctx, root, 4, 8, load=True, save=False)
    assert first_applied + second_applied == straight_applied
    assert False in straight_applied and True in straight_applied  # both kinds of step
    scaler_state = first.optimizer.loss_scaler.state_dict()
    saved = torch.load(os.path.join(root, "iter_0000004", "mp_rank_00", "optimizer_dp000.pt"),
                       weights_only=False)
    assert saved["loss_scaler"] == scaler_state
    assert second.optimizer.loss_scaler.state_dict() == straight.optimizer.loss_scaler.state_dict()
    for p, q in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.equal(p, q)
