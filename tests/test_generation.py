"""Blank filling (glm_megatron.generation, tools/generate.py): the key/value cache changes
nothing but the cost, sampling, several blanks, [CLS], a file of texts, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from cli import QUICK, ROOT, run_pretrain
from glm_testing import TEST_DEVICE, VOCAB, randomize, tiny_config

# Special ids of a tokenizer-like object over the tiny vocabulary.
TOKENS = SimpleNamespace(mask=250, smask=251, gmask=252, sop=253, eop=254, eod=255, cls=249,
                         vocab_size=VOCAB)
CONFIGS = {
    "glm": tiny_config("glm-tiny"),
    "chatglm-6b": tiny_config("chatglm-6b-tiny"),
    "chatglm3-2d": tiny_config("chatglm3-tiny", block_position_encoding=True),
    "glm-130b": tiny_config("glm-130b-tiny"),
}


def _model(name: str):
    from glm_megatron.model.builder import build_model
    from glm_megatron.parallel.context import single_process_context
    return randomize(build_model(CONFIGS[name], single_process_context("cpu"), seed=0),
                     seed=3).eval()


def _part_a():
    """Part A with three blanks of the three kinds."""
    ids = list(range(10, 40))
    blanks = [4, 15, 29]
    for at, token in zip(blanks, (TOKENS.mask, TOKENS.smask, TOKENS.gmask)):
        ids[at] = token
    return ids, blanks


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_steps_give_the_logits_of_the_full_row(ctx, name):
    from glm_megatron.generation import _Cached, _Recompute
    model = _model(name)
    part_a, blanks = _part_a()
    sep = len(part_a)
    cached, full = _Cached(model, torch.device("cpu")), _Recompute(model, torch.device("cpu"))
    steps = [(part_a, list(range(sep)), [0] * sep)]
    steps += [([TOKENS.sop], [blanks[0]], [1]), ([7], [blanks[0]], [2]), ([8], [blanks[0]], [3]),
              # several tokens at once after the cache: causal among themselves
              ([TOKENS.sop, 9, 10], [blanks[1]] * 3, [1, 2, 3]), ([11], [blanks[1]], [4])]
    with torch.no_grad():
        for tokens, positions, block in steps:
            torch.testing.assert_close(cached(tokens, positions, block, sep),
                                       full(tokens, positions, block, sep), rtol=1e-5,
                                       atol=1e-5)


@pytest.mark.parametrize("name", ["glm", "chatglm-6b"])
def test_greedy_fill_with_cache_equals_without(ctx, name):
    from glm_megatron.generation import generate_spans
    model = _model(name)
    part_a, blanks = _part_a()
    with_cache = generate_spans(model, TOKENS, part_a, blanks, max_span_tokens=6)
    without = generate_spans(model, TOKENS, part_a, blanks, max_span_tokens=6, use_cache=False)
    assert with_cache == without
    assert [len(span) for span in with_cache] == [6, 6, 6]  # random weights never end a span


def test_sampling(ctx):
    from glm_megatron.generation import Sampling, generate_spans, next_token
    model = _model("glm")
    part_a, blanks = _part_a()

    def fill(**sampling):
        return generate_spans(model, TOKENS, part_a, blanks, 6, Sampling(**sampling))

    greedy = fill()
    assert fill(temperature=1.0, seed=5) == fill(temperature=1.0, seed=5)
    assert fill(temperature=1.0, seed=5) != fill(temperature=1.0, seed=6)
    assert fill(temperature=2.0, top_k=1) == greedy
    assert fill(temperature=2.0, top_p=1e-6) == greedy
    logits = torch.tensor([0.0, 3.0, 2.9, 2.8, 2.7, 1.0])
    g = torch.Generator().manual_seed(0)
    assert {next_token(logits, Sampling(1.0, top_k=3), g) for _ in range(200)} == {1, 2, 3}
    # top-p 0.6: the smallest set of most likely tokens whose probability reaches 0.6.
    probs = logits.softmax(-1)
    assert probs[1] + probs[2] < 0.6 <= probs[1] + probs[2] + probs[3]
    assert {next_token(logits, Sampling(1.0, top_p=0.6), g) for _ in range(200)} == {1, 2, 3}


@pytest.mark.parametrize("values, message", [
    (dict(temperature=-1.0), "--temperature"),
    (dict(top_k=5), "--temperature > 0"),
    (dict(temperature=1.0, top_p=1.5), "--top-p 1.5"),
])
def test_bad_sampling_flags(values, message):
    from glm_megatron.generation import Sampling
    with pytest.raises(ValueError, match=message):
        Sampling(**values)


def test_text_longer_than_the_positions_is_a_clear_error(ctx):
    from glm_megatron.generation import generate_spans
    for name in ("glm", "chatglm-6b"):  # learned table, rotary positions
        model = _model(name)
        limit = CONFIGS[name].max_position_embeddings
        with pytest.raises(ValueError, match=f"{limit} positions"):
            generate_spans(model, TOKENS, [TOKENS.mask] + [5] * limit, [0])
        with pytest.raises(ValueError, match="--max-span-tokens"):
            generate_spans(model, TOKENS, [TOKENS.mask, 5], [0], max_span_tokens=limit)


def test_encode_blanks_of_every_kind_and_cls():
    from glm_megatron.generation import encode_blanks
    tokenizer = SimpleNamespace(tokenize=lambda text: [ord(c) % 200 for c in text], **vars(TOKENS))
    ids, blanks = encode_blanks(tokenizer, "ab[MASK]c[sMASK]d[gMASK]", prepend_cls=True)
    assert ids[0] == TOKENS.cls
    assert [ids[b] for b in blanks] == [TOKENS.mask, TOKENS.smask, TOKENS.gmask]
    assert blanks == [3, 5, 7]


@pytest.fixture(scope="module")
def glm_checkpoint(tmp_path_factory):
    """A one-iteration GLM (learned 2D positions) pretrained with [CLS] prepended."""
    save = str(tmp_path_factory.mktemp("glm") / "save")
    result = run_pretrain(QUICK + ["--model-preset", "glm-tiny", "--objective", "blank-infilling",
                                   "--prepend-cls", "--train-iters", "1", "--save", save])
    assert result.returncode == 0, result.stderr[-3000:]
    return save


def _generate(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "generate.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_input_file_gives_json_lines(glm_checkpoint, tmp_path):
    texts = ["Python is a [MASK] language.", "The [MASK] of a [sMASK] and [gMASK]"]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n\n")
    result = _generate("--load", glm_checkpoint, "--input", str(source), "--max-span-tokens", "4",
                       "--temperature", "0.7", "--top-k", "20", "--seed", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == texts
    assert [len(line["blanks"]) for line in lines] == [1, 3]
    again = _generate("--load", glm_checkpoint, "--input", str(source), "--max-span-tokens", "4",
                      "--temperature", "0.7", "--top-k", "20", "--seed", "3", "--no-kv-cache")
    assert again.stdout == result.stdout


@pytest.mark.parametrize("args, message", [
    (["--text", "no blank here"], "--text 1: 'no blank here' has no blank"),
    (["--text", "a [MASK]", "--top-p", "0.5"], "--temperature > 0"),
    (["--input", "/nonexistent/texts.txt"], "--input /nonexistent/texts.txt does not exist"),
    (["--text", "a [MASK] " + "word " * 400], "--text 1: the text is"),
], ids=["no-blank", "top-p-greedy", "missing-input", "too-long"])
def test_bad_input_is_one_clear_line(glm_checkpoint, args, message):
    result = _generate("--load", glm_checkpoint, *args)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert result.stdout == ""


def native_glm_twin(model, config):
    """transformers' GlmForCausalLM with our model's weights, through the export's mapping."""
    from transformers import GlmConfig, GlmForCausalLM
    from glm_megatron.convert.layouts import LAYOUTS, SpecialTokens
    from glm_megatron.convert.mapping import to_hf_state_dict
    from glm_megatron.convert.schema import Head
    layout = LAYOUTS["glm"]
    hf_config = layout.config_to_hf(config, Head(), SpecialTokens(pad=0), torch.float32)
    twin = GlmForCausalLM(GlmConfig(**hf_config)).eval()
    twin.load_state_dict(to_hf_state_dict(layout, model.state_dict(), config, Head()))
    return twin


def test_causal_generation_equals_transformers_generate(ctx):
    from glm_megatron.generation import generate_causal
    from glm_megatron.model.builder import build_model
    config = tiny_config("chatglm3-tiny")
    model = randomize(build_model(config, ctx, seed=0), seed=8).eval()
    prompt = list(range(3, 20))
    ours = generate_causal(model, prompt, 10)
    assert ours == generate_causal(model, prompt, 10, use_cache=False)
    twin = native_glm_twin(model, config)
    with torch.no_grad():
        theirs = twin.generate(torch.tensor([prompt]), max_new_tokens=10, min_new_tokens=10,
                               do_sample=False, pad_token_id=0)
    assert ours == theirs[0, len(prompt):].tolist()


def test_prompt_continues_a_causal_checkpoint(pretrained_checkpoint, tmp_path):
    """The built-in run's kind of checkpoint (--objective causal): --prompt gives the greedy
    continuation generate_causal gives in process; --input gives JSON lines."""
    from glm_megatron.convert.checkpoint import CheckpointReader
    from glm_megatron.data.tokenizer import GLMTokenizer
    from glm_megatron.generation import generate_causal, load_model
    reader = CheckpointReader(pretrained_checkpoint)
    tokenizer = GLMTokenizer(reader.tokenizer_path)
    model = load_model(reader, TEST_DEVICE)
    prompt = "The Python tutorial"
    expected = tokenizer.detokenize(generate_causal(model, tokenizer.tokenize(prompt), 12,
                                                    end_tokens=(tokenizer.eod,)))
    result = _generate("--load", pretrained_checkpoint, "--prompt", prompt,
                       "--max-new-tokens", "12")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == f"{prompt}\n  continuation: {expected!r}\n"
    source = tmp_path / "prompts.txt"
    source.write_text(f"{prompt}\n")
    lines = _generate("--load", pretrained_checkpoint, "--input", str(source),
                      "--max-new-tokens", "12").stdout.splitlines()
    assert [json.loads(line) for line in lines] == [{"prompt": prompt,
                                                     "continuation": expected}]


def test_each_checkpoint_does_only_what_it_was_trained_for(pretrained_checkpoint,
                                                           glm_checkpoint):
    blanks = _generate("--load", pretrained_checkpoint, "--text", "Python is a [MASK].")
    prompt = _generate("--load", glm_checkpoint, "--prompt", "Python is")
    for result, message in ((blanks, "--text: --load {} was pretrained with --objective causal "
                                     "(left to right) and never saw blanks; continue a prompt "
                                     "with --prompt".format(pretrained_checkpoint)),
                            (prompt, "--prompt: --load {} was pretrained with --objective "
                                     "blank-infilling, which generates only into blanks; write "
                                     "the continuation as a trailing blank: --text 'PROMPT "
                                     "[gMASK]'".format(glm_checkpoint))):
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.splitlines() == [f"tools/generate.py: error: {message}"]
