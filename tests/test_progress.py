"""The per-iteration log: a first line after the run's first iteration, then every
--log-interval, each with the time left at the run's pace."""

import torch

from glm_megatron.training.metrics import TrainingLogger


def _lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if "iteration" in line]


def test_first_iteration_and_every_interval_with_the_time_left(capsys):
    logger = TrainingLogger(interval=10, train_iters=100)
    printed = {}
    for it in range(21, 41):  # a resumed run: its first iteration is 21
        logger.iteration(it, loss=2.0, lr=1e-3, grad_norm=1.0, loss_scale=1.0, applied=True,
                         elapsed=0.5 if it < 31 else 1.5, consumed_samples=4 * it,
                         batch_size=4, tokens=256, flops=1e9, world_size=1,
                         device=torch.device("cpu"))
        for line in _lines(capsys):
            printed[it] = line
    assert sorted(printed) == [21, 30, 40]
    assert printed[21].endswith("| time left: 0:00:40 (79 iterations) |")  # 79 x 0.5 s
    assert printed[30].endswith("| time left: 0:00:35 (70 iterations) |")
    # The average of this run so far: 10 x 0.5 s and 10 x 1.5 s, 1 s an iteration.
    assert printed[40].endswith("| time left: 0:01:00 (60 iterations) |")
