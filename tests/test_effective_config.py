"""Each implication documented in glm_megatron/effective_config.py, asserted: what a preset, its
recipe, the objective and a checkpoint imply, and that each is said."""

import re

import pytest

from glm_megatron.arguments import parse_args
from glm_megatron.config import ConfigError, GLMConfig
from glm_megatron.effective_config import architecture
from glm_megatron.presets import PRESETS


def _resolve(flags, saved=None):
    args = parse_args(flags)
    values, notes = architecture(args, set(args.given_flags), saved)
    return args, values, notes


def test_1_the_preset_fills_what_no_flag_gives():
    _, values, notes = _resolve(["--train-iters", "5"])
    assert values == PRESETS["glm4-small"] and notes == []
    _, values, _ = _resolve(["--model-preset", "glm-tiny", "--num-layers", "3"])
    assert values == dict(PRESETS["glm-tiny"], num_layers=3)


def test_2_a_published_recipe_gives_flag_defaults_and_says_so():
    args = parse_args(["--model-preset", "glm-large", "--seq-length", "256"])
    assert (args.objective, args.bert_prob, args.prepend_cls, args.seq_length) == (
        "blank-infilling", 1.0, True, 256)
    assert "--objective blank-infilling (the published recipe of --model-preset glm-large)" \
        in args.implied
    assert not any(line.startswith("--seq-length") for line in args.implied)


SAVED = GLMConfig(**PRESETS["chatglm3-tiny"], vocab_size=8064).to_dict()


def test_3_a_checkpoint_gives_the_architecture_when_no_flag_does():
    args, values, notes = _resolve(["--load", "ckpt"], SAVED)
    assert GLMConfig(**values, vocab_size=8064).to_dict() == SAVED
    assert notes == ["architecture from the checkpoint in --load ckpt (--use-checkpoint-args, "
                     "implied: no architecture flag given)"]
    _, values, _ = _resolve(["--load", "ckpt", "--num-layers", "3"], SAVED)
    assert values["num_layers"] == 3 and values["hidden_size"] == PRESETS["glm4-small"][
        "hidden_size"]  # flags given: the resume checks compare them with the checkpoint
    _, values, _ = _resolve(["--load", "ckpt", "--no-use-checkpoint-args"], SAVED)
    assert values == PRESETS["glm4-small"]
    with pytest.raises(ConfigError, match="drop --num-layers or drop --use-checkpoint-args"):
        _resolve(["--use-checkpoint-args", "--num-layers", "3"], SAVED)
    with pytest.raises(ConfigError, match="give --load .* that holds one"):
        _resolve(["--use-checkpoint-args"])


def test_4_glm_objectives_turn_block_positions_on_where_rope_leaves_room_and_say_so():
    _, values, notes = _resolve(["--objective", "blank-infilling"])
    assert values["block_position_encoding"] is True
    assert notes == ["--block-position-encoding (--objective blank-infilling on the RoPE of "
                     "glm4-small: block ids rotate the next slice of each head; "
                     "--no-block-position keeps the architecture)"]
    for kept in (["--no-block-position"], ["--no-block-position-encoding"]):
        _, values, notes = _resolve(["--objective", "prefix-lm"] + kept)
        assert values["block_position_encoding"] is False and notes == []
    # GLM-130B rotates the whole head: no room; ChatGLM-6B has block positions of its own.
    _, values, notes = _resolve(["--model-preset", "glm-130b-tiny", "--objective", "prefix-lm"])
    assert values["block_position_encoding"] is False and notes == []
    for flags in ([], ["--no-block-position"]):
        _, values, notes = _resolve(["--model-preset", "chatglm-6b-tiny", "--objective",
                                     "blank-infilling"] + flags)
        assert values["block_position_encoding"] is True and notes == []
    _, values, notes = _resolve(["--objective", "causal"])
    assert values["block_position_encoding"] is False and notes == []


def test_5_group_query_attention_is_a_tri_state():
    _, values, _ = _resolve(["--no-group-query-attention"])
    assert GLMConfig(**values).num_query_groups == values["num_attention_heads"]
    _, values, _ = _resolve(["--group-query-attention", "--num-query-groups", "1"])
    assert values["num_query_groups"] == 1
    with pytest.raises(ConfigError, match="--group-query-attention needs --num-query-groups"):
        _resolve(["--model-preset", "glm-tiny", "--group-query-attention"])


def test_6_activation_and_bias_flags():
    assert _resolve(["--model-preset", "glm-tiny", "--swiglu"])[1]["activation"] == "swiglu"
    assert _resolve(["--model-preset", "glm-tiny", "--geglu"])[1]["activation"] == "geglu"
    assert _resolve(["--no-swiglu"])[1]["activation"] == "gelu"
    assert _resolve(["--model-preset", "glm-tiny", "--disable-bias-linear"])[1][
        "add_bias_linear"] is False


def test_the_effective_configuration_block():
    from glm_megatron.effective_config import effective_arguments, format_arguments
    args = parse_args(["--objective", "prefix-lm", "--micro-batch-size", "2"])
    values, notes = architecture(args, set(args.given_flags), None)
    config = GLMConfig(**values, vocab_size=8064)
    text = format_arguments(effective_arguments(args, config, data_path=["/d/x"]), notes)
    lines = text.splitlines()
    assert lines[0] == "-" * 24 + " arguments " + "-" * 25 and "end of arguments" in lines[-1]
    settings = dict((line.split()[0], line.split()[-1]) for line in lines[1:-1]
                    if not line.startswith("  implied:"))
    assert settings["micro_batch_size"] == "2" and settings["block_position_encoding"] == "True"
    assert settings["num_query_groups"] == "2" and settings["data_path"] == "/d/x"
    assert "swiglu" not in settings and "given_flags" not in settings  # resolved, not raw
    assert lines[-2].startswith("  implied: --block-position-encoding (--objective prefix-lm")


def test_start_up_output_and_tensorboard_text(tmp_path):
    """At TP 2 with sequence parallelism (two processes): no warning lines; the total parameter
    count is the single-process model's; the block is printed and written to TensorBoard as
    text; threads per rank are said."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cli import QUICK, run_pretrain
    from glm_megatron.model.builder import build_model
    from glm_megatron.parallel.context import single_process_context
    result = run_pretrain(QUICK + ["--train-iters", "1", "--tensor-model-parallel-size", "2",
                                   "--sequence-parallel", "--tensorboard-dir",
                                   str(tmp_path / "tb")], nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    # Nothing a user cannot act on (torch's deprecations, megatron-core's missing kernels).
    assert "Warning" not in result.stdout + result.stderr, result.stderr[-3000:]
    model = build_model(GLMConfig(**PRESETS["chatglm3-tiny"], vocab_size=8192),
                        single_process_context("cpu"), seed=0)
    total = sum(p.numel() for p in model.parameters())
    assert f"{total / 1e6:.2f}M parameters in all" in result.stdout
    assert "(1 threads per rank)" in result.stdout  # OMP_NUM_THREADS=1 in tests
    block = result.stdout.split(" arguments ---")[1].split("--- end of arguments")[0]
    assert re.search(r"\n  tensor_model_parallel_size \.{3,} 2\n", block)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("arguments/text_summary")
    assert re.search(r"tensor_model_parallel_size \.{3,} 2\n",
                     text.tensor_proto.string_val[0].decode())
