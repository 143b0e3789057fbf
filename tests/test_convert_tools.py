"""The conversion tools as a user runs them: --help, the tokenizer export, bad input (one clear
line, non-zero exit, nothing half-written), the schema every converter writes, and the export's
peak memory on a model with ~1 GB of weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from glm_testing import GENERATIONS, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools", "checkpoint")


def run_tool(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(TOOLS, name), "--no-progress", *args]
                          if "--help" not in args else
                          [sys.executable, os.path.join(TOOLS, name), *args],
                          capture_output=True, text=True, env=env)


def write_checkpoint(root: str, config, tp: int = 1, pp: int = 1, fill=None,
                     optimizer: bool = False) -> dict:
    """A checkpoint of `config` written by our CheckpointWriter (random weights and, with
    `optimizer`, random optimizer state); returns the full optimizer state written."""
    from glm_megatron.convert.checkpoint import CheckpointWriter
    from glm_megatron.convert.schema import Head
    writer = CheckpointWriter(root, config, Head(), tp, pp, iteration=3)
    g = torch.Generator().manual_seed(0)
    states = {}
    for stage in range(pp):
        params = writer.stage_params(stage)
        tensors = {name: (fill(param.shape) if fill else
                          0.02 * torch.randn(param.shape, generator=g))
                   for name, param in params.items()}
        stage_states = None
        if optimizer:
            stage_states = {name: {"master": tensors[name].float(),
                                   "exp_avg": torch.randn(p.shape, generator=g),
                                   "exp_avg_sq": torch.rand(p.shape, generator=g)}
                            for name, p in params.items()}
            states.update(stage_states)
        writer.write_stage(stage, tensors, stage_states, {"step": 3.0, "loss_scaler": None})
        del tensors
    writer.finish()
    return states


def assert_refused(result: subprocess.CompletedProcess, *fragments: str):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in message[0], (fragment, message[0])


def assert_nothing_written(parent, target: str):
    assert not os.path.exists(target)
    leftovers = [n for n in os.listdir(parent) if ".partial-" in n or ".old-" in n]
    assert not leftovers, leftovers


# --help -------------------------------------------------------------------------------------
@pytest.mark.parametrize("tool", ["convert.py", "reshard.py"])
def test_help_documents_every_option(tool):
    result = run_tool(tool, "--help")
    assert result.returncode == 0, result.stderr
    sys.path.insert(0, TOOLS)
    try:
        module = __import__(tool[:-3])
    finally:
        sys.path.remove(TOOLS)
    for action in module.build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{tool} {action.option_strings} has no help text"
            assert action.option_strings[0] in result.stdout


# Schema --------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", GENERATIONS)
def test_schema_is_the_models_state_dict(ctx, preset):
    """What the converters write is exactly what build_model's state dict holds: names (with
    megatron-core's _extra_state entries), shapes and TP split specs."""
    from glm_megatron.convert.schema import (Head, full_model_params, layer_extra_state,
                                             post_extra_state, post_params)
    from glm_megatron.model.builder import build_model
    from glm_megatron.parallel.param_roles import role_of
    for head in (Head(), Head(3)) if preset == "chatglm3-tiny" else (Head(),):
        config = tiny_config(preset)
        model = build_model(config, ctx, 0, num_labels=head.num_labels, pad_token_id=0)
        params = full_model_params(config, head)
        named = dict(model.named_parameters())
        assert set(named) == set(params)
        for name, param in named.items():
            assert tuple(param.shape) == params[name].shape, name
            assert role_of(param).partition == params[name].partition, name
        extra = {n for i in range(config.num_layers) for n in layer_extra_state(config, i)}
        extra |= set(post_extra_state(config, head))
        assert set(model.state_dict()) == set(params) | extra
    # The last pipeline stage of a tied model keeps its own copy of the word embeddings.
    config = tiny_config(preset)
    last_stage = build_model(config, ctx, 0, layer_numbers=range(0), pre_process=False)
    copy = post_params(config, Head(), holds_embedding=False)
    assert {n: (tuple(p.shape), role_of(p).partition)
            for n, p in last_stage.named_parameters()} == {
        n: (p.shape, p.partition) for n, p in copy.items()}


# Tokenizer -----------------------------------------------------------------------------------
TEXT = ("GLM pretrains with autoregressive blank infilling: spans are masked and predicted "
        "in random order.\n  Indented line, numbers 12345, accents é and 漢字.")


@pytest.fixture(scope="module")
def tokenizer_model(tmp_path_factory):
    import itertools
    from glm_megatron.data.builtin_corpus import iter_builtin_documents
    from glm_megatron.data.tokenizer import train_sentencepiece
    docs = list(itertools.islice(iter_builtin_documents(), 20))
    return train_sentencepiece(docs, 400, str(tmp_path_factory.mktemp("tok") / "sp"))


def test_exported_tokenizer_gives_our_ids(tmp_path, tokenizer_model, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from glm_megatron.data.tokenizer import GLMTokenizer
    ours = GLMTokenizer(tokenizer_model)
    config = tiny_config("chatglm3-tiny", vocab_size=512)
    write_checkpoint(str(tmp_path / "ckpt"), config, tp=2)
    result = run_tool("convert.py", "--direction", "megatron-to-hf", "--load-dir",
                      str(tmp_path / "ckpt"), "--save-dir", str(tmp_path / "hf"),
                      "--tokenizer-model", tokenizer_model)
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = ours.tokenize(TEXT)
    for remote in (False, True):  # tokenizer.json, or SentencePiece itself (remote code)
        hf = AutoTokenizer.from_pretrained(str(tmp_path / "hf"), trust_remote_code=remote)
        assert hf(TEXT)["input_ids"] == expected, remote
        assert hf.decode(expected) == TEXT
        assert hf.convert_tokens_to_ids(["[MASK]", "<sop>", "<eop>", "[gMASK]"]) == \
            [ours.mask, ours.sop, ours.eop, ours.gmask]
        assert (hf.pad_token_id, hf.eos_token_id) == (ours.pad, ours.eod)
    with open(tmp_path / "hf" / "config.json") as f:
        hf_config = json.load(f)
    assert (hf_config["pad_token_id"], hf_config["eos_token_id"]) == (ours.pad, ours.eod)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    assert model.config.pad_token_id == ours.pad


# Bad input -----------------------------------------------------------------------------------
def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    target = str(tmp_path / "out")
    result = run_tool("convert.py", "--direction", "megatron-to-hf", "--load-dir",
                      str(tmp_path / "notes"), "--save-dir", target)
    assert_refused(result, "--load-dir", "not a glm_megatron checkpoint")
    assert_nothing_written(tmp_path, target)
    result = run_tool("convert.py", "--direction", "hf-to-megatron", "--load-dir",
                      str(tmp_path / "notes"), "--save-dir", target)
    assert_refused(result, "--load-dir", "config.json")
    result = run_tool("reshard.py", "--load-dir", str(tmp_path / "missing"), "--save-dir",
                      target, "--target-tensor-parallel-size", "1",
                      "--target-pipeline-parallel-size", "1")
    assert_refused(result, "--load-dir", "does not exist")
    assert_nothing_written(tmp_path, target)


def test_unsupported_architecture(tmp_path):
    hf_dir = tmp_path / "llama"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps(
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64}))
    target = str(tmp_path / "out")
    result = run_tool("convert.py", "--direction", "hf-to-megatron", "--load-dir", str(hf_dir),
                      "--save-dir", target)
    assert_refused(result, "config.json", "LlamaForCausalLM", "not supported")
    assert_nothing_written(tmp_path, target)


def test_existing_target_needs_overwrite(tmp_path):
    config = tiny_config("chatglm3-tiny")
    write_checkpoint(str(tmp_path / "ckpt"), config)
    target = tmp_path / "hf"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    args = ["--direction", "megatron-to-hf", "--load-dir", str(tmp_path / "ckpt"),
            "--save-dir", str(target)]
    assert_refused(run_tool("convert.py", *args), "--save-dir", "--overwrite")
    assert (target / "precious.txt").read_text() == "keep me"
    result = run_tool("convert.py", *args, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert not (target / "precious.txt").exists()
    assert (target / "model.safetensors.index.json").exists()
    assert_nothing_written(tmp_path, str(tmp_path / "none"))


def test_shapes_that_disagree_with_the_config(tmp_path):
    config = tiny_config("chatglm3-tiny")
    write_checkpoint(str(tmp_path / "ckpt"), config)
    assert run_tool("convert.py", "--direction", "megatron-to-hf", "--load-dir",
                    str(tmp_path / "ckpt"), "--save-dir", str(tmp_path / "hf")).returncode == 0
    # A Hugging Face directory whose config.json promises a wider MLP than its weights hold.
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    hf_config["intermediate_size"] *= 2
    (tmp_path / "hf" / "config.json").write_text(json.dumps(hf_config))
    target = str(tmp_path / "out")
    result = run_tool("convert.py", "--direction", "hf-to-megatron", "--load-dir",
                      str(tmp_path / "hf"), "--save-dir", target)
    assert_refused(result, "gate_up_proj", "config.json")
    assert_nothing_written(tmp_path, target)
    # Our checkpoint whose metadata.json disagrees with its weights.
    metadata_path = tmp_path / "ckpt" / "iter_0000003" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["config"]["hidden_size"] = 128
    metadata["config"]["kv_channels"] = 32
    metadata_path.write_text(json.dumps(metadata))
    result = run_tool("convert.py", "--direction", "megatron-to-hf", "--load-dir",
                      str(tmp_path / "ckpt"), "--save-dir", target)
    assert_refused(result, "shape", "metadata.json")
    assert_nothing_written(tmp_path, target)
    # A tensor no rule maps is an error, not a warning.
    from safetensors.torch import save_file
    hf_config["intermediate_size"] //= 2
    (tmp_path / "hf" / "config.json").write_text(json.dumps(hf_config))
    index_path = tmp_path / "hf" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    save_file({"model.layers.0.mlp.adapter.weight": torch.zeros(4, 4)},
              str(tmp_path / "hf" / "extra.safetensors"))
    index["weight_map"]["model.layers.0.mlp.adapter.weight"] = "extra.safetensors"
    index_path.write_text(json.dumps(index))
    result = run_tool("convert.py", "--direction", "hf-to-megatron", "--load-dir",
                      str(tmp_path / "hf"), "--save-dir", target)
    assert_refused(result, "model.layers.0.mlp.adapter.weight", "no place")
    assert_nothing_written(tmp_path, target)
    del index["weight_map"]["model.layers.0.mlp.adapter.weight"]
    index_path.write_text(json.dumps(index))
    # A weight file cut short: the failure comes mid-import, after writing has begun.
    shard = next(p for p in (tmp_path / "hf").iterdir() if p.name.startswith("model-"))
    data = shard.read_bytes()
    shard.write_bytes(data[:len(data) - 1000])
    result = run_tool("convert.py", "--direction", "hf-to-megatron", "--load-dir",
                      str(tmp_path / "hf"), "--save-dir", target,
                      "--target-pipeline-parallel-size", "2")
    assert_refused(result, "truncated")
    assert_nothing_written(tmp_path, target)


def test_layout_flags_are_checked(tmp_path):
    config = tiny_config("glm-tiny")
    write_checkpoint(str(tmp_path / "ckpt"), config)
    target = str(tmp_path / "out")
    result = run_tool("reshard.py", "--load-dir", str(tmp_path / "ckpt"), "--save-dir", target,
                      "--target-tensor-parallel-size", "3", "--target-pipeline-parallel-size", "1")
    assert_refused(result, "--target-tensor-parallel-size 3")
    result = run_tool("convert.py", "--direction", "megatron-to-hf", "--load-dir",
                      str(tmp_path / "ckpt"), "--save-dir", target, "--hf-layout", "glm")
    assert_refused(result, "--hf-layout glm", "glm-10b")
    assert_nothing_written(tmp_path, target)

    # GLM-4's architecture with block positions (blank infilling): no layout, and why.
    blank = str(tmp_path / "blank")
    write_checkpoint(blank, tiny_config("chatglm3-tiny", block_position_encoding=True))
    result = run_tool("convert.py", "--direction", "megatron-to-hf", "--load-dir", blank,
                      "--save-dir", target)
    assert_refused(result, "no Hugging Face layout holds this model", "--no-block-position")
    assert_nothing_written(tmp_path, target)


# Resharding -----------------------------------------------------------------------------------
def test_reshard_joins_distributed_optimizer_shards(tmp_path):
    """A distributed-optimizer checkpoint (each DP rank's element ranges of every parameter in
    its own optimizer_dpDDD.pt) reshards to the same state as the whole-parameter one."""
    from glm_megatron.convert.checkpoint import CheckpointReader
    config = tiny_config("chatglm3-tiny")
    states = write_checkpoint(str(tmp_path / "whole"), config, tp=2, optimizer=True)
    write_checkpoint(str(tmp_path / "zero1"), config, tp=2, optimizer=True)
    for rank_dir in (tmp_path / "zero1" / "iter_0000003").glob("mp_rank_*"):
        whole = torch.load(rank_dir / "optimizer_dp000.pt")
        parts = [dict(whole, params={}) for _ in range(2)]
        for name, (entry,) in whole["params"].items():
            cut = entry["end"] // 3  # uneven, as bucket boundaries fall
            for part, (lo, hi) in zip(parts, ((0, cut), (cut, entry["end"]))):
                part["params"][name] = [{"start": lo, "end": hi,
                                         **{k: entry[k][lo:hi] for k in
                                            ("master", "exp_avg", "exp_avg_sq")}}]
        for dp, part in enumerate(parts):
            torch.save(part, rank_dir / f"optimizer_dp{dp:03d}.pt")
    metadata_path = tmp_path / "zero1" / "iter_0000003" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())  # as a DP=2 run with ZeRO-1 saves it
    metadata["layout"].update(data=2, distributed_optimizer=True)
    metadata_path.write_text(json.dumps(metadata))
    for source in ("whole", "zero1"):
        result = run_tool("reshard.py", "--load-dir", str(tmp_path / source), "--save-dir",
                          str(tmp_path / f"{source}-tp1-pp2"), "--target-tensor-parallel-size",
                          "1", "--target-pipeline-parallel-size", "2")
        assert result.returncode == 0, result.stderr
        reader = CheckpointReader(str(tmp_path / f"{source}-tp1-pp2"))
        assert (reader.tp, reader.pp) == (1, 2)
        read = reader.read_optimizer(list(states))
        for name, state in states.items():
            for key, value in state.items():
                assert torch.equal(read[name][key], value), (source, name, key)


def test_reshard_round_trip_through_virtual_pipeline(tmp_path):
    """TP=2 -> TP=1 x PP=2 with 2 virtual stages (layers 0, 2 | 1, 3) -> TP=2: unchanged."""
    from glm_megatron.convert.checkpoint import CheckpointReader
    config = tiny_config("glm-tiny", num_layers=4)
    write_checkpoint(str(tmp_path / "a"), config, tp=2)
    steps = [("a", "b", ["1", "2", "--target-num-layers-per-virtual-pipeline-stage", "1"]),
             ("b", "c", ["2", "1"])]
    for source, target, (tp, pp, *extra) in steps:
        result = run_tool("reshard.py", "--load-dir", str(tmp_path / source), "--save-dir",
                          str(tmp_path / target), "--target-tensor-parallel-size", tp,
                          "--target-pipeline-parallel-size", pp, *extra)
        assert result.returncode == 0, result.stderr
    middle = torch.load(tmp_path / "b" / "iter_0000003" / "mp_rank_00_000" / "model_optim_rng.pt")
    layers = {n.split(".")[2] for n in middle["model"] if n.startswith("decoder.layers.")}
    assert layers == {"0", "2"} and "embedding.word_embeddings.weight" in middle["model"]
    a, c = CheckpointReader(str(tmp_path / "a")), CheckpointReader(str(tmp_path / "c"))
    names = list(a.entries)
    for name, value in a.read(names).items():
        assert torch.equal(c.read([name])[name], value), name


# Memory --------------------------------------------------------------------------------------
_MEASURE = """
import resource, runpy, sys
sys.argv = [sys.argv[1]] + sys.argv[2:]
if sys.argv[1:] != ["--baseline"]:
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        assert not e.code, e.code
else:
    import glm_megatron.convert.export, glm_megatron.convert.checkpoint, tqdm  # noqa
# VmHWM: this process' own peak (ru_maxrss would include the parent's, inherited over exec).
with open("/proc/self/status") as f:
    peak = [int(line.split()[1]) for line in f if line.startswith("VmHWM:")]
print("PEAK_KB", peak[0] if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_kb(*args: str) -> int:
    result = subprocess.run([sys.executable, "-c", _MEASURE, os.path.join(TOOLS, "convert.py"),
                             *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split("PEAK_KB")[-1])


def test_export_memory_stays_under_half_the_weights(tmp_path):
    """~1 GB of fp32 weights in one rank file; the export holds a layer at a time."""
    config = tiny_config("chatglm3-tiny", num_layers=20, hidden_size=1024,
                         num_attention_heads=8, num_query_groups=2, kv_channels=128,
                         ffn_hidden_size=2816, vocab_size=8192)
    write_checkpoint(str(tmp_path / "ckpt"), config, fill=torch.ones)
    weight_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in
                       os.walk(tmp_path / "ckpt") for f in files)
    assert weight_bytes > 0.9e9
    baseline = 1024 * _peak_kb("--baseline")
    peak = 1024 * _peak_kb("--direction", "megatron-to-hf", "--load-dir", str(tmp_path / "ckpt"),
                    "--save-dir", str(tmp_path / "hf"), "--no-progress",
                    "--max-shard-size", "300MB")
    assert os.path.exists(tmp_path / "hf" / "model.safetensors.index.json")
    print(f"peak {peak / 1e6:.0f} MB, baseline {baseline / 1e6:.0f} MB, weights {weight_bytes / 1e6:.0f} MB")
    assert peak - baseline < 0.5 * weight_bytes, (peak / 1e6, baseline / 1e6, weight_bytes / 1e6)
