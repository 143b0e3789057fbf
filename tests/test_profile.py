"""--profile writes a torch.profiler trace of the chosen iterations; --compile and the
profiling flags reach the run as the flags say."""

import json
import os

import pytest

from cli import QUICK, run_pretrain


def test_profile_writes_a_trace_of_the_chosen_iterations(tmp_path):
    traces = tmp_path / "traces"
    result = run_pretrain(QUICK + ["--train-iters", "3", "--eval-interval", "0",
                                   "--profile", "--profile-step-start", "1",
                                   "--profile-step-end", "2", "--profile-dir", str(traces)])
    assert result.returncode == 0, result.stderr[-3000:]
    files = os.listdir(traces)
    assert len(files) == 1 and files[0].startswith("rank0.") and \
        files[0].endswith(".pt.trace.json"), files
    assert f"trace of iterations 1 to 1 (from 0) written to {traces}" in result.stdout
    events = json.loads((traces / files[0]).read_text())["traceEvents"]
    names = {event.get("name", "") for event in events}
    # One recorded iteration (the profiler numbers steps from 0: step 0 was its warm-up), with
    # the model's attention in it.
    assert {n for n in names if n.startswith("ProfilerStep#")} == {"ProfilerStep#1"}
    assert "aten::scaled_dot_product_attention" in names


def test_profiling_and_compile_flags():
    from glm_megatron.arguments import execution_options, parse_args
    from glm_megatron.config import ConfigError
    from glm_megatron.training.profiling import trace_dir

    assert execution_options(parse_args(["--compile"])).compile_backend == "inductor"
    assert execution_options(parse_args([])).compile_backend is None
    with pytest.raises(ConfigError, match="--profile-step-end 3 must be greater than "
                                          "--profile-step-start 3"):
        parse_args(["--profile", "--profile-step-start", "3", "--profile-step-end", "3"])
    with pytest.raises(ConfigError, match="--profile-step-start -1: must be at least 0"):
        parse_args(["--profile-step-start", "-1"])
    with pytest.raises(ConfigError, match="give --profile-dir or --tensorboard-dir"):
        trace_dir(parse_args(["--profile", "--data-path", "corpus_text_document"]))
    assert trace_dir(parse_args(["--tensorboard-dir", "tb"])) == "tb"
    assert trace_dir(parse_args(["--tensorboard-dir", "tb", "--profile-dir", "p"])) == "p"
