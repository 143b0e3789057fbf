"""--compile: the model with each transformer layer compiled trains like the eager model at
the same layout (3 AdamW steps, fp32: losses, gradient norms, parameters), and each layer is
one graph (no graph break, no recompilation) except where recomputation puts an eager
boundary inside it.

The single-process case runs inductor, what --compile uses, so its generated kernels are
checked. The multi-process cases run the aot_eager backend: the same Dynamo capture and
AOTAutograd forward/backward graphs, wrapped around the same collectives, gradient-buffer hooks
and recomputation boundaries, without inductor's C++ code generation, which costs ~10 s of CPU
per process (two cores, several processes)."""

import os

import pytest
import torch

from multiprocess import run_distributed
from parallel_harness import assert_same_training, load_result, train_eager_and_compiled

pytestmark = pytest.mark.slow  # compilation, and two-process runs

# (name, layout spec, world size, graphs per layer)
LAYOUTS = [
    ("single-process-causal", dict(preset="chatglm3-tiny", layers=2, kind="causal",
                                   compile="inductor"), 1, 1),
    ("tp2-sp-full-recompute", dict(preset="chatglm3-tiny", layers=2, tp=2, sp=True,
                                   recompute=("full", "uniform", 1), compile="aot_eager"), 2, 1),
    # One layer per stage, four micro-batches: 1F1B's steady state. Selective recomputation
    # runs the attention core eagerly; the break splits the layer's frame and the attention's
    # frame in two each.
    ("pp2-1f1b-selective-recompute", dict(preset="glm4-0414-tiny", layers=2, pp=2,
                                          recompute=("selective", None, None),
                                          compile="aot_eager"), 2, 4),
]


@pytest.mark.parametrize("name,spec,world,graphs", LAYOUTS, ids=[n for n, *_ in LAYOUTS])
def test_compiled_matches_eager(tmp_path, name, spec, world, graphs):
    run_distributed(train_eager_and_compiled, world, spec, str(tmp_path))
    eager = load_result(str(tmp_path / "eager"))
    compiled = load_result(str(tmp_path / "compiled"))
    assert_same_training(eager, compiled, name)
    for rank in range(world):
        counted = torch.load(os.path.join(tmp_path, "compiled", f"graphs_rank{rank}.pt"))
        assert counted == graphs, f"{name}: rank {rank} compiled {counted} graphs"
