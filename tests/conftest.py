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


@pytest.fixture(scope="module")
def single_process_world():
    """A world of one with megatron-core's groups on GLM_TEST_DEVICE, for in-process tests."""
    import glm_megatron  # noqa: F401
    from glm_megatron.parallel import state
    from glm_megatron.parallel.random import set_random_seed

    state.initialize_parallel(1, 1, TEST_DEVICE)
    set_random_seed(1234)
    yield
    state.shutdown()
