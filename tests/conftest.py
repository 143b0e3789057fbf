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
