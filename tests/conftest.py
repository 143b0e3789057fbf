import os
import sys
import tempfile

# Tests import helpers from this folder (multiprocess.py) and run workers in spawned processes.
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("OMP_NUM_THREADS", "1")
# One fresh built-in corpus build per test session, never the user's own cache.
os.environ.setdefault("GLM_MEGATRON_CACHE", tempfile.mkdtemp(prefix="glm_megatron_cache_"))

import pytest  # noqa: E402

from glm_testing import TEST_DEVICE  # noqa: E402

if TEST_DEVICE == "cpu":
    # The suite's default is CPU: hide GPUs from it and from every process it starts, so that
    # `--device auto` in a subprocess picks CPU too.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


@pytest.fixture
def ctx():
    """A one-process parallel context (no process group), seeded, for in-process model tests."""
    import glm_megatron  # noqa: F401
    from glm_megatron.parallel.context import single_process_context
    from glm_megatron.parallel.random import seed_all

    context = single_process_context(TEST_DEVICE)
    seed_all(context, 1234)
    return context


@pytest.fixture(scope="module")
def distributed_world():
    """torch.distributed with a world of one, for references that need one (SwissArmyTransformer
    sets up its own groups on it); our models still take the one-process context."""
    from glm_megatron.parallel.context import initialize_distributed, shutdown

    initialize_distributed(1, 1, "cpu")
    yield
    shutdown()


@pytest.fixture(scope="session")
def pretrained_checkpoint(tmp_path_factory):
    """A briefly pretrained checkpoint of the built-in run (pretrain_glm.py on the built-in
    corpus, the tiny GLM-4-architecture preset), made once per test session: the model the
    finetuning tests and examples start from."""
    from cli import run_pretrain
    run = tmp_path_factory.mktemp("pretrained")
    result = run_pretrain(["--model-preset", "chatglm3-tiny", "--seq-length", "128",
                           "--micro-batch-size", "4", "--global-batch-size", "16",
                           "--train-iters", "40", "--log-interval", "20",
                           "--eval-interval", "1000", "--eval-iters", "1",
                           "--save", str(run / "checkpoints"),
                           "--tensorboard-dir", str(run / "tensorboard")])
    assert result.returncode == 0, result.stderr[-3000:]
    return str(run / "checkpoints")
