"""Layer placement on pipeline stages: one function decides it for training and the converters,
each naming its own flags in errors."""

import pytest

from glm_megatron.config import ConfigError
from glm_megatron.parallel.layer_split import (stage_indices, stage_layer_ranges,
                                               virtual_stage_count)


def test_stage_ranges_balance_the_middle_and_honour_the_ends():
    assert stage_layer_ranges(8, 1) == [range(8)]
    assert stage_layer_ranges(8, 4) == [range(0, 2), range(2, 4), range(4, 6), range(6, 8)]
    assert stage_layer_ranges(8, 3, first=2, last=2) == [range(0, 2), range(2, 6), range(6, 8)]
    with pytest.raises(ConfigError, match="--num-layers 7 cannot be split"):
        stage_layer_ranges(7, 2)


def test_interleaving_places_chunks_round_robin():
    assert virtual_stage_count(8, 2, None, False) == 1
    assert virtual_stage_count(8, 2, 2, False) == 2
    assert stage_indices(1, 2, 2) == [1, 3]


@pytest.mark.parametrize("pp,per_stage,ends,message", [
    (1, 1, False, "--num-layers-per-virtual-pipeline-stage needs "
                  "--pipeline-model-parallel-size > 1"),
    (2, 1, True, "--decoder-first/last-pipeline-num-layers cannot be combined"),
    (2, 3, False, "the model's 8 layers are not divisible by --pipeline-model-parallel-size 2 "
                  "x --num-layers-per-virtual-pipeline-stage 3"),
])
def test_interleaving_errors_name_the_flags(pp, per_stage, ends, message):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        virtual_stage_count(8, pp, per_stage, ends)


def test_the_converter_checks_the_same_way_with_its_own_flags():
    from glm_megatron.convert.checkpoint import pipeline_split
    from glm_megatron.convert.errors import ConversionError
    from glm_testing import tiny_config
    config = tiny_config("glm-tiny")
    assert pipeline_split(config, 2, 1) == {"virtual_stages": config.num_layers // 2}
    with pytest.raises(ConversionError, match="--target-num-layers-per-virtual-pipeline-stage "
                                              "needs --target-pipeline-parallel-size > 1"):
        pipeline_split(config, 1, 1)
