"""The single-device path on GLM_TEST_DEVICE (glm_testing.TEST_DEVICE; benchmarks/gpu_check.sh
runs this file with GLM_TEST_DEVICE=cuda). On the default CPU the comparisons with CPU compare
CPU with itself: they check the test code, and mean something on a GPU."""

import re

import pytest
import torch

from cli import QUICK, run_pretrain
from glm_testing import GENERATIONS, TEST_DEVICE, make_batch, tiny_config


def _loss_and_grads(preset: str, device: str):
    """One fp32 forward-backward of a blank-infilling batch in a one-process context."""
    from glm_megatron.model.builder import build_model
    from glm_megatron.parallel.context import single_process_context
    from glm_megatron.training.losses import language_model_loss
    model = build_model(tiny_config(preset), single_process_context(device), seed=7)
    batch = make_batch("blank", device=device)
    loss, _ = language_model_loss(model(batch), batch)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def cpu_reference():
    return {preset: _loss_and_grads(preset, "cpu") for preset in GENERATIONS}


@pytest.mark.parametrize("preset", GENERATIONS)
def test_model_and_loss_equal_cpu_at_the_same_weights(cpu_reference, preset):
    """Forward loss and every parameter's gradient of one fp32 step, blank-infilling batch
    (sep mask, 2D positions), on the test device against the same model (weights are drawn
    per parameter name from the seed) and batch on CPU."""
    loss, grads = _loss_and_grads(preset, TEST_DEVICE)
    assert loss.device.type == TEST_DEVICE
    expected_loss, expected_grads = cpu_reference[preset]
    torch.testing.assert_close(loss.cpu(), expected_loss, rtol=1e-5, atol=1e-6)
    assert expected_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad.cpu(), expected_grads[name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m: f"{name}: {m}")


def _losses(stdout: str) -> list[float]:
    return [float(v) for v in re.findall(r"\| lm loss: (\S+) \|", stdout)]


def test_bf16_training_learns_and_its_checkpoint_resumes_on_cpu(tmp_path):
    """A short bf16 run on the test device learns (the loss falls well below its start); its
    checkpoint then resumes on CPU with GPUs hidden (as on a machine without one), with the
    trained weights (the loss continues from where it was, far below a fresh start)."""
    save = str(tmp_path / "checkpoints")
    trained = run_pretrain(QUICK + ["--bf16", "--train-iters", "30", "--lr", "3e-3",
                                    "--lr-warmup-iters", "3", "--lr-decay-style", "constant",
                                    "--save", save, "--save-interval", "30"])
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert f"on {TEST_DEVICE}" in trained.stdout
    losses = _losses(trained.stdout)
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < losses[0] - 1.5, losses
    resumed = run_pretrain(QUICK + ["--bf16", "--train-iters", "32", "--lr", "3e-3",
                                    "--lr-warmup-iters", "3", "--lr-decay-style", "constant",
                                    "--override-opt_param-scheduler", "--load", save,
                                    "--device", "cpu"],
                           env={"CUDA_VISIBLE_DEVICES": ""})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "on cpu" in resumed.stdout and "at iteration 30" in resumed.stdout
    after = _losses(resumed.stdout)
    print("losses on", TEST_DEVICE, losses, "resumed on cpu", after)
    assert len(after) == 2 and after[0] < losses[0] - 1.5, (losses, after)
