"""Every parallel layout trains exactly like the single-process run of the same model and
global batch: same losses and gradient norms over 3 optimizer steps, same full parameters
afterwards (fp32). The gradient norm is taken before clipping, so a gradient scaled by a
missing division (by the data-parallel size, by the number of micro-batches) shows in it, which
AdamW's normalised updates would largely hide in the parameters."""

import pytest

from multiprocess import run_distributed
from parallel_harness import assert_same_training, load_result, train_layout

pytestmark = pytest.mark.slow  # a dozen multi-process runs

# (name, layout spec, world size). Every generation appears, with GLM's blank-infilling input
# (2D positions and sep) in the pipeline cases.
LAYOUTS = [
    ("pp2-glm", dict(preset="glm-tiny", pp=2), 2),
    ("pp4-chatglm6b", dict(preset="chatglm-6b-tiny", pp=4), 4),
    ("tp2-pp2-chatglm3", dict(preset="chatglm3-tiny", tp=2, pp=2), 4),
    ("pp2-dp2-glm4-0414", dict(preset="glm4-0414-tiny", pp=2), 4),
    ("tp2-sp-glm", dict(preset="glm-tiny", tp=2, sp=True, kind="causal"), 2),
    ("tp2-sp-chatglm3", dict(preset="chatglm3-tiny", tp=2, sp=True), 2),
    ("interleaved-pp2-v2-glm", dict(preset="glm-tiny", pp=2, virtual=2), 2),
    # One micro-batch for two stages: no 1F1B steady state, fill-drain instead.
    ("pp2-one-microbatch-glm", dict(preset="glm-tiny", pp=2, micro_batch=4), 2),
    ("dp2-distopt-chatglm3", dict(preset="chatglm3-tiny", distributed_optimizer=True,
                                  bucket_elements=20_000), 2),
    ("tp2-full-recompute-chatglm6b", dict(preset="chatglm-6b-tiny", tp=2,
                                          recompute=("full", "uniform", 1)), 2),
    ("selective-recompute-glm4-0414", dict(preset="glm4-0414-tiny",
                                           recompute=("selective", None, None)), 1),
]


_REFERENCES: dict = {}


def _reference(spec: dict, tmp_path_factory):
    """The single-process run of the same model and batches (shared by layouts that agree)."""
    reference = {k: spec[k] for k in ("preset", "kind", "layers", "config", "micro_batch")
                 if k in spec}
    key = repr(sorted(reference.items()))
    if key not in _REFERENCES:
        out = tmp_path_factory.mktemp("reference")
        run_distributed(train_layout, 1, reference, str(out))
        _REFERENCES[key] = load_result(str(out))
    return _REFERENCES[key]


@pytest.mark.parametrize("name,spec,world", LAYOUTS, ids=[n for n, _, _ in LAYOUTS])
def test_layout_matches_single_process(tmp_path, tmp_path_factory, name, spec, world):
    run_distributed(train_layout, world, spec, str(tmp_path))
    assert_same_training(_reference(spec, tmp_path_factory), load_result(str(tmp_path)), name)
