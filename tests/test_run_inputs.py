"""What a run takes from its inputs: the tokenizer recorded beside a dataset by
tools/preprocess_data.py."""

import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest

from cli import QUICK, ROOT, run_pretrain
from glm_megatron.config import ConfigError
from glm_megatron.data.builtin import ensure_builtin_data
from glm_megatron.data.tokenizer_record import file_sha256
from glm_megatron.training.pretrain import _resolve_data


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    """A small corpus preprocessed with the built-in tokenizer: (prefix, tokenizer path)."""
    folder = tmp_path_factory.mktemp("data")
    with open(folder / "corpus.jsonl", "w") as f:
        for i in range(60):
            f.write(json.dumps({"text": f"Document {i}. " + "Some words of text. " * 30}) + "\n")
    tokenizer = ensure_builtin_data()[1]
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "preprocess_data.py"), "--input",
         str(folder / "corpus.jsonl"), "--tokenizer-model", tokenizer, "--output-prefix",
         str(folder / "corpus"), "--quiet"], capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr
    return str(folder / "corpus_text_document"), tokenizer


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory):
    """A second, valid SentencePiece model."""
    import itertools

    from glm_megatron.data.builtin_corpus import iter_builtin_documents
    from glm_megatron.data.tokenizer import train_sentencepiece
    texts = list(itertools.islice(iter_builtin_documents(), 40))
    return train_sentencepiece(texts, 400, str(tmp_path_factory.mktemp("other") / "other"))


def _args(**flags):
    return argparse.Namespace(**{"data_path": None, "tokenizer_model": None, **flags})


def test_preprocessing_records_the_tokenizer(preprocessed):
    prefix, tokenizer = preprocessed
    record = json.load(open(prefix + ".tokenizer.json"))
    assert record["path"] == os.path.abspath(tokenizer)
    assert record["sha256"] == file_sha256(tokenizer) and record["vocab_size"] == 8012
    assert record["special_tokens"]["eos"] == 1 and record["special_tokens"]["mask"] == 8000


def test_the_recorded_tokenizer_is_taken_and_no_other(preprocessed, other_tokenizer, tmp_path):
    prefix, tokenizer = preprocessed
    assert _resolve_data(_args(data_path=[prefix]))[1].model_path == tokenizer
    copy = tmp_path / "same.model"  # the same content elsewhere is the same tokenizer
    shutil.copy(tokenizer, copy)
    assert _resolve_data(_args(data_path=[prefix], tokenizer_model=str(copy)))[1].model_path \
        == str(copy)
    other = other_tokenizer
    with pytest.raises(ConfigError, match=f"--tokenizer-model {other} is not the tokenizer "
                                          f"--data-path {prefix} was preprocessed with "
                                          f"\\({tokenizer},"):
        _resolve_data(_args(data_path=[prefix], tokenizer_model=other))


def test_data_without_a_record_needs_the_flag(preprocessed, tmp_path):
    prefix, tokenizer = preprocessed
    bare = str(tmp_path / "bare_text_document")
    for ext in (".bin", ".idx"):
        shutil.copy(prefix + ext, bare + ext)
    with pytest.raises(ConfigError, match="does not record its tokenizer .* give "
                                          "--tokenizer-model"):
        _resolve_data(_args(data_path=[bare]))
    assert _resolve_data(_args(data_path=[bare], tokenizer_model=tokenizer))[1].vocab_size \
        == 8012


def test_a_recorded_tokenizer_that_moved_away_is_named(preprocessed, tmp_path):
    prefix, tokenizer = preprocessed
    moved = str(tmp_path / "moved_text_document")
    for ext in (".bin", ".idx"):
        shutil.copy(prefix + ext, moved + ext)
    record = json.load(open(prefix + ".tokenizer.json"))
    json.dump(dict(record, path=str(tmp_path / "gone.model")), open(moved + ".tokenizer.json",
                                                                    "w"))
    with pytest.raises(ConfigError, match=f"preprocessed with {tmp_path}/gone.model, which no "
                                          "longer exists; give --tokenizer-model"):
        _resolve_data(_args(data_path=[moved]))


def test_pretraining_refuses_another_tokenizer_in_one_line(preprocessed, other_tokenizer):
    prefix, tokenizer = preprocessed
    other = other_tokenizer
    result = run_pretrain(QUICK + ["--train-iters", "1", "--data-path", prefix,
                                   "--tokenizer-model", other])
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and str(other) in errors[0] and tokenizer in errors[0], \
        result.stderr[-2000:]
