"""tools/evaluate.py: perplexity and last-word accuracy of a checkpoint equal the same
computation through transformers on the model it was imported from."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from glm_testing import glm_config, randomize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = [
    "The interpreter reads a line of input and runs it before it reads the next one.",
    "A list keeps its items in order, and a dictionary maps each key to a value.",
    "Every module has its own namespace, so names in one file do not clash with another.",
    "When the loop ends the file is closed and the program prints its last result.",
]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A random transformers GLM with the built-in tokenizer's vocabulary, and our import."""
    from transformers import GlmForCausalLM
    from glm_megatron.data.builtin import ensure_builtin_data
    from glm_megatron.data.tokenizer import GLMTokenizer
    tmp = tmp_path_factory.mktemp("evaluate")
    tokenizer_path = ensure_builtin_data()[1]
    tokenizer = GLMTokenizer(tokenizer_path)
    hf = randomize(GlmForCausalLM(glm_config(vocab_size=tokenizer.vocab_size, num_hidden_layers=2,
                                             max_position_embeddings=64)), 7).eval()
    hf.save_pretrained(tmp / "hf")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "checkpoint", "convert.py"),
                    "--no-progress", "--direction", "hf-to-megatron", "--load-dir",
                    str(tmp / "hf"), "--save-dir", str(tmp / "ckpt")], check=True,
                   capture_output=True)
    text_file = tmp / "texts.txt"
    text_file.write_text("\n".join(TEXTS) + "\n")
    return hf, tokenizer, str(tmp / "ckpt"), str(text_file)


def evaluate(*args: str) -> dict:
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "evaluate.py"),
                             "--no-progress", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@torch.no_grad()
def hf_strided_perplexity(model, ids: list[int], window: int, stride: int) -> float:
    """transformers' documented strided perplexity, token-weighted."""
    nll, count, predicted = 0.0, 0, 1
    while predicted < len(ids):
        end = min(predicted + stride, len(ids))
        begin = max(0, end - window)
        inputs = torch.tensor([ids[begin:end]])
        logits = model(input_ids=inputs).logits[0, :-1].float()
        targets = inputs[0, 1:]
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        new = end - predicted
        nll += float(losses[-new:].sum())
        count += new
        predicted = end
    return math.exp(nll / count)


@torch.no_grad()
def hf_last_word_accuracy(model, tokenizer) -> float:
    correct = 0
    for text in TEXTS:
        cut = text.rfind(" ")
        context, whole = tokenizer.tokenize(text[:cut]), tokenizer.tokenize(text)
        assert whole[:len(context)] == context
        logits = model(input_ids=torch.tensor([whole])).logits[0]
        predicted = logits[len(context) - 1:-1].argmax(-1).tolist()
        correct += predicted == whole[len(context):]
    return correct / len(TEXTS)


def test_perplexity_and_last_word_equal_transformers(imported):
    hf, tokenizer, ckpt, text_file = imported
    results = evaluate("--load", ckpt, "--tokenizer-model", tokenizer.model_path, "--input",
                       text_file, "--window", "24", "--stride", "10", "--batch-size", "3")
    assert results["mode"] == "causal"  # an imported glm model: causal by default
    stream = tokenizer.tokenize("\n".join(TEXTS) + "\n") + [tokenizer.eod]
    expected = hf_strided_perplexity(hf, stream, 24, 10)
    assert results["perplexity"]["tokens"] == len(stream) - 1
    assert results["perplexity"]["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert results["last-word"]["examples"] == len(TEXTS)
    assert results["last-word"]["accuracy"] == hf_last_word_accuracy(hf, tokenizer)


def test_batching_does_not_change_scores(imported):
    """Rows of different lengths share a padded batch without changing each other (both modes:
    padding sits after every real token, in the causal part)."""
    from glm_megatron.convert.checkpoint import CheckpointReader
    from glm_megatron.evaluation import last_word_items, perplexity_windows, target_log_probs
    from glm_megatron.generation import load_model
    _, tokenizer, ckpt, _ = imported
    model = load_model(CheckpointReader(ckpt))
    stream = tokenizer.tokenize(" ".join(TEXTS))
    items = perplexity_windows(stream, 20, 7) + last_word_items(TEXTS, tokenizer)
    for mode in ("causal", "gmask"):
        one = target_log_probs(model, items, mode, tokenizer, batch_size=1)
        many = target_log_probs(model, items, mode, tokenizer, batch_size=5)
        for (a, hit_a), (b, hit_b) in zip(one, many):
            assert a == pytest.approx(b, abs=1e-4) and hit_a == hit_b


def test_gmask_rows_follow_glm():
    """Part A = context + [gMASK]; Part B = <sop> + target; Part B at the [gMASK]'s position
    with block positions 1, 2, ...; the targets are predicted from <sop> onwards."""
    from glm_megatron.evaluation import Scored, model_input

    class Ids:
        gmask, sop, pad = 90, 91, 0

    row = model_input(Scored([5, 6, 7], [8, 9]), "gmask", Ids, 8)
    assert row["tokens"] == [5, 6, 7, 90, 91, 8, 0, 0] and row["sep"] == 4
    assert row["labels"][4:6] == [8, 9] and row["loss_mask"] == [0, 0, 0, 0, 1, 1, 0, 0]
    assert row["position_ids"] == [[0, 1, 2, 3, 3, 3, 0, 0], [0, 0, 0, 0, 1, 2, 0, 0]]
    causal = model_input(Scored([5, 6, 7], [8, 9]), "causal", Ids, 5)
    assert causal["tokens"] == [5, 6, 7, 8, 0] and causal["labels"][2:4] == [8, 9]
    assert causal["loss_mask"] == [0, 0, 1, 1, 0] and "sep" not in causal


def test_strided_windows_predict_every_token_once():
    from glm_megatron.evaluation import perplexity_windows
    windows = perplexity_windows(list(range(23)), 8, 5)
    assert [t for w in windows for t in w.target] == list(range(1, 23))
    assert all(len(w.context) + len(w.target) <= 8 for w in windows)
    assert windows[0].context == [0] and windows[1].context == [3, 4, 5]
    assert windows[1].target == [6, 7, 8, 9, 10]


def test_bad_input(imported, tmp_path):
    _, tokenizer, ckpt, text_file = imported
    script = os.path.join(ROOT, "tools", "evaluate.py")
    cases = [
        (["--input", str(tmp_path / "missing.txt")], "--input"),
        (["--input", text_file, "--window", "200"], "--window"),
        (["--input", text_file, "--window", "10", "--stride", "20"], "--stride"),
    ]
    for extra, flag in cases:
        result = subprocess.run([sys.executable, script, "--load", ckpt, "--tokenizer-model",
                                 tokenizer.model_path, "--task", "perplexity", *extra],
                                capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert flag in result.stderr and "Traceback" not in result.stderr
