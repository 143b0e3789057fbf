"""tools/preprocess_data.py and tools/train_tokenizer.py, run as a user runs them; Megatron's
indexed format both ways; bad input; runs that fail or are stopped midway."""

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import numpy
import pytest
import sentencepiece as spm
import torch

import glm_megatron  # noqa: F401  (before megatron-core: quiets its import-time warnings)
from megatron.core.datasets.gpt_dataset import GPTDataset
from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

from glm_megatron.data.builtin_corpus import iter_builtin_documents
from glm_megatron.data.datasets import build_datasets, read_sequence_lengths
from glm_megatron.data.inputs import InputError
from glm_megatron.data.preprocess import preprocess
from glm_megatron.data.tokenizer import SPECIAL_TOKENS, GLMTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREPROCESS = os.path.join(ROOT, "tools", "preprocess_data.py")
TRAIN_TOKENIZER = os.path.join(ROOT, "tools", "train_tokenizer.py")
VOCAB = 600


def run_tool(script, *args, timeout=180, python_code=None):
    command = [sys.executable, *(["-c", python_code] if python_code else [script]), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def outputs_in(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith((".bin", ".idx", ".model"))
                  or ".tmp-" in n)


@pytest.fixture(scope="module")
def texts():
    return list(itertools.islice(iter_builtin_documents(), 80))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, texts):
    """A small tokenizer made by tools/train_tokenizer.py: (model path, its stdout)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    corpus = folder / "train.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:50]))
    result = run_tool(TRAIN_TOKENIZER, "--input", str(corpus), "--vocab-size", str(VOCAB),
                      "--model-prefix", str(folder / "tok"), "--tensor-model-parallel-size", "2")
    assert result.returncode == 0, result.stderr
    return str(folder / "tok.model"), result.stdout


@pytest.fixture(scope="module")
def tokenizer(trained):
    return GLMTokenizer(trained[0])


# Inputs: every kind, with documents to skip --------------------------------------------------
BAD_JSON_LINES = [
    b'{"text": ""}\n',                          # empty
    b'{"text": "cut off\n',                      # not JSON
    b'{"text": "caf\xe9"}\n',                    # not UTF-8 (latin-1)
    b'{"title": "no text here"}\n',              # no key 'text'
    b'{"text": 5}\n',                            # not a string
    b'{"text": "\\ud800 lone surrogate"}\n',     # not encodable
    b'[1, 2]\n',                                 # not an object
    b'\n',                                       # blank line: ignored, not a document
]
SKIPPED = {"empty": 1, "not JSON": 1, "not UTF-8": 2, "no key 'text'": 1,
           "'text' is a JSON number, not a string": 1, "not UTF-8 (lone surrogate)": 1,
           "a JSON array, not an object": 1}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, texts):
    """(input paths, the documents they hold in order): a .jsonl with good and bad lines, a text
    file of blank-line-separated blocks, and a folder (nested, with a hidden file)."""
    folder = tmp_path_factory.mktemp("inputs")
    expected = []
    lines = []
    for i, text in enumerate(texts[50:80]):
        lines.append(json.dumps({"text": text, "id": i}).encode() + b"\n")
        expected.append(text)
        if i % 4 == 1:
            lines.append(BAD_JSON_LINES[(i // 4) % len(BAD_JSON_LINES)])
    lines.append(json.dumps({"text": ["Megatron lists: ", "tokenized one by one."]}).encode()
                 + b"\n")
    expected.append(["Megatron lists: ", "tokenized one by one."])
    (folder / "a.jsonl").write_bytes(b"".join(lines))
    blocks = [f"Block {i} first line.\n  second line of block {i}" for i in range(5)]
    (folder / "b.txt").write_bytes("\n\n".join(blocks[:3]).encode() + b"\n \n\n"
                                   + b"bad \xff block\n\n" + "\n\n".join(blocks[3:]).encode()
                                   + b"\n\n\n")
    expected += blocks
    (folder / "docs" / "sub").mkdir(parents=True)
    (folder / "docs" / "z.txt").write_text("Last file.\n")
    (folder / "docs" / "sub" / "a.txt").write_text("Nested file.\n\nSecond block.")
    (folder / "docs" / ".hidden.txt").write_text("never read")
    expected += ["Nested file.", "Second block.", "Last file."]
    paths = [str(folder / "a.jsonl"), str(folder / "b.txt"), str(folder / "docs")]
    return paths, expected


def _token_ids(tokenizer, document):
    pieces = document if isinstance(document, list) else [document]
    return [i for p in pieces for i in tokenizer.tokenize(p)] + [tokenizer.eod]


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory, trained, inputs):
    """The same inputs preprocessed with 1 and with 2 workers: {workers: (prefix, stdout)}."""
    runs = {}
    for workers in (1, 2):
        folder = tmp_path_factory.mktemp(f"out{workers}")
        result = run_tool(PREPROCESS, "--input", *inputs[0], "--tokenizer-model", trained[0],
                          "--output-prefix", str(folder / "corpus"), "--workers", str(workers))
        assert result.returncode == 0, result.stderr
        runs[workers] = (str(folder / "corpus_text_document"), result.stdout, result.stderr)
    return runs


# train_tokenizer.py --------------------------------------------------------------------------
def test_train_tokenizer_prints_glm_vocabulary(trained, tokenizer):
    stdout = trained[1]
    assert f"{VOCAB} SentencePiece pieces (ids 0..{VOCAB - 1}); unk 0 '<unk>', eod 1 '</s>'" \
        in stdout
    listed = [line.split() for line in stdout.splitlines() if line.startswith("  ")]
    assert listed == [[str(VOCAB + k), t] for k, t in enumerate(SPECIAL_TOKENS)]
    assert list(tokenizer.special_tokens.items()) == [(t, int(i)) for i, t in listed]
    # 612 tokens, padded to a multiple of 128 x TP 2.
    assert "vocabulary: 612 tokens; the model's embedding: 768 rows" in stdout
    assert "--tensor-model-parallel-size 2, 384 per TP rank" in stdout


def test_describe_checks_an_existing_model(trained, tmp_path):
    result = run_tool(TRAIN_TOKENIZER, "--describe", trained[0])
    assert result.returncode == 0 and "embedding: 640 rows" in result.stdout
    (tmp_path / "small.txt").write_text("A few words.\n\nNot enough for many pieces.\n")
    result = run_tool(TRAIN_TOKENIZER, "--input", str(tmp_path / "small.txt"), "--vocab-size",
                      "100000", "--model-prefix", str(tmp_path / "big"))
    assert result.returncode == 2 and outputs_in(tmp_path) == []
    assert result.stderr.startswith("tools/train_tokenizer.py: error: --vocab-size 100000")


# preprocess_data.py: Megatron's format both ways ---------------------------------------------
def test_preprocessed_documents_are_tokens_plus_eod_in_megatron_format(
        preprocessed, inputs, tokenizer, tmp_path):
    prefix, stdout, stderr = preprocessed[2]
    expected = [_token_ids(tokenizer, d) for d in inputs[1]]
    dataset = IndexedDataset(prefix)
    assert dataset.index.dtype == numpy.uint16 and len(dataset) == len(expected)
    assert [dataset[i].tolist() for i in range(len(dataset))] == expected
    assert dataset.document_indices.tolist() == list(range(len(expected) + 1))
    # Megatron-LM's tools/preprocess_data.py, given the same token ids, writes the same bytes.
    theirs = str(tmp_path / "megatron")
    builder = IndexedDatasetBuilder(theirs + ".bin", dtype=DType.optimal_dtype(612))
    for ids in expected:
        builder.add_document(ids, [len(ids)])
    builder.finalize(theirs + ".idx")
    for ext in (".bin", ".idx"):
        with open(prefix + ext, "rb") as ours, open(theirs + ext, "rb") as megatron:
            assert ours.read() == megatron.read()
    # Skipped documents are reported by reason, with where they are; the bar shows the rates.
    assert f"{len(expected)} documents, {sum(map(len, expected)):,} tokens (uint16)" in stdout
    assert f"skipped {sum(SKIPPED.values())} of {len(expected) + sum(SKIPPED.values())}" \
        in stdout
    for reason, count in SKIPPED.items():
        assert f"  {count} {reason} [text] (" in stdout, reason
    assert "b.txt:11)" in stdout  # the undecodable block starts on line 11
    assert "docs/s" in stderr and "tokens/s" in stderr
    assert f"train with: --data-path {prefix} (its tokenizer" in stdout


def test_one_and_two_workers_write_identical_files(preprocessed):
    for ext in (".bin", ".idx"):
        with open(preprocessed[1][0] + ext, "rb") as one, \
                open(preprocessed[2][0] + ext, "rb") as two:
            assert one.read() == two.read()
    assert preprocessed[1][1].splitlines()[1:-2] == preprocessed[2][1].splitlines()[1:-2]


def test_dataset_written_the_megatron_way_reads_here(tmp_path):
    """Megatron-LM's tool writes through IndexedDatasetBuilder: add_document with one length per
    sentence (--split-sentences), or add_item + end_document. Our datasets code reads it."""
    rng = numpy.random.default_rng(0)
    sequences = [rng.integers(2, 99, int(n)).tolist() + [1] for n in rng.integers(5, 40, 60)]
    prefix = str(tmp_path / "megatron_text_sentence")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=DType.optimal_dtype(100))
    for i in range(0, 40, 2):  # documents of two sentences
        builder.add_document(sequences[i] + sequences[i + 1],
                             [len(sequences[i]), len(sequences[i + 1])])
    for sequence in sequences[40:]:
        builder.add_item(torch.tensor(sequence))
        builder.end_document()
    builder.finalize(prefix + ".idx")

    assert read_sequence_lengths(prefix).tolist() == [len(s) for s in sequences]

    class Tokenizer:
        vocab_size, eod, pad = 100, 1, 99

    seq = 16
    train = build_datasets([prefix], "1,0,0", seq, 1234, (50, 0, 0), Tokenizer(),
                           cache_path=str(tmp_path / "cache"))[0]
    gpt = train.dataset
    assert isinstance(gpt, GPTDataset) and len(train) >= 50
    # Sample k is tokens k*seq .. (k+1)*seq of the sequences in the dataset's shuffled order.
    stream = numpy.concatenate([sequences[d] for d in gpt.document_index])
    for i in range(len(train)):
        sample = train[i]
        k = int(gpt.shuffle_index[i])
        assert sample.tolist() == stream[k * seq:(k + 1) * seq + 1].tolist()


# Library options: file documents, no eod, several keys ----------------------------------------
def test_file_documents_several_keys_and_no_eod(tmp_path, trained, tokenizer):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "r.jsonl").write_text(
        json.dumps({"text": "Body one.", "title": "One"}) + "\n"
        + json.dumps({"text": "Body two.", "title": ""}) + "\n")
    (tmp_path / "in" / "t.txt").write_text("A whole file.\n\nStill the same document.\n")
    result = preprocess([str(tmp_path / "in")], str(tmp_path / "out" / "x"), trained[0],
                        json_keys=("text", "title"), append_eod=False, text_documents="file")
    text, title = (IndexedDataset(str(tmp_path / "out" / f"x_{k}_document"))
                   for k in ("text", "title"))
    assert [text[i].tolist() for i in range(len(text))] == [
        tokenizer.tokenize(t) for t in
        ("Body one.", "Body two.", "A whole file.\n\nStill the same document.\n")]
    assert len(title) == 1 and title[0].tolist() == tokenizer.tokenize("One")
    assert result.skipped == {("title", "empty"): 1, ("title", "no key 'title' (plain text)"): 1}
    assert [(o.documents, o.key) for o in result.outputs] == [(3, "text"), (1, "title")]


# Tokenizers that cannot serve GLM -------------------------------------------------------------
def _sentencepiece(path, texts, **options):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts[:10]), model_writer=model,
                                   vocab_size=300, minloglevel=2, **options)
    path.write_bytes(model.getvalue())
    return str(path)


@pytest.fixture(scope="module")
def bad_tokenizers(tmp_path_factory, texts):
    folder = tmp_path_factory.mktemp("bad_tokenizers")
    (folder / "not_sp.model").write_text("this is not a SentencePiece model")
    return {
        "no_eos": _sentencepiece(folder / "no_eos.model", texts, eos_id=-1),
        "user_mask": _sentencepiece(folder / "user_mask.model", texts,
                                    user_defined_symbols=["[MASK]"]),
        "control_gmask": _sentencepiece(folder / "control_gmask.model", texts,
                                        control_symbols=["[gMASK]"]),
        "sp_pad": _sentencepiece(folder / "sp_pad.model", texts, pad_id=3),
        "not_sp": str(folder / "not_sp.model"),
    }


def test_tokenizer_pieces_named_like_special_tokens(bad_tokenizers, tmp_path):
    with pytest.raises(ValueError, match=r"no eos piece \(</s>\)"):
        GLMTokenizer(bad_tokenizers["no_eos"])
    with pytest.raises(ValueError, match=r"'\[MASK\]' as a user-defined symbol.*two ids"):
        GLMTokenizer(bad_tokenizers["user_mask"])
    with pytest.raises(ValueError, match=r"'\[gMASK\]' as a control symbol"):
        GLMTokenizer(bad_tokenizers["control_gmask"])
    # SentencePiece's own pad piece '<pad>' stays unused: GLM pads with its appended <pad>.
    padded = GLMTokenizer(bad_tokenizers["sp_pad"])
    assert padded.pad == padded.vocab_size - 1
    # A normal piece spelled '[MASK]' is text: [MASK] is still the appended id.
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(open(bad_tokenizers["user_mask"], "rb").read())
    piece = next(p for p in proto.pieces if p.piece == "[MASK]")
    piece.type, piece.score = piece.NORMAL, 0.0
    (tmp_path / "normal.model").write_bytes(proto.SerializeToString())
    normal = GLMTokenizer(str(tmp_path / "normal.model"))
    ids = normal.tokenize("a [MASK] b")
    assert normal.mask == 300 and normal.mask not in ids and normal.detokenize(ids) == "a [MASK] b"


# Bad input: one line naming the flag, status 2, nothing written --------------------------------
BAD_INPUT = {  # name -> (arguments replacing the defaults, expected start of the message)
    "missing input": ({"--input": ["{d}/nothere.jsonl"]}, "--input {d}/nothere.jsonl: no such"),
    "empty file": ({"--input": ["{d}/empty.jsonl"]}, "--input: {d}/empty.jsonl is empty"),
    "empty folder": ({"--input": ["{d}/emptydir"]}, "--input {d}/emptydir: the folder holds"),
    "unknown key": ({"--json-keys": ["body"]}, "--json-keys: {d}/good.jsonl line 1 has no key "
                                               "'body' (its keys: 'text')"),
    "not JSON lines": ({"--input": ["{d}/array.json"]}, "--input {d}/array.json: line 1 is not"),
    "text without key": ({"--input": ["{d}/plain.txt"], "--json-keys": ["title"]},
                         "--input {d}/plain.txt is plain text"),
    "no tokenizer": ({"--tokenizer-model": ["{d}/none.model"]},
                     "--tokenizer-model {d}/none.model: no such file"),
    "not sentencepiece": ({"--tokenizer-model": ["not_sp"]},
                          "--tokenizer-model {not_sp}: not a SentencePiece model"),
    "no eos": ({"--tokenizer-model": ["no_eos"]}, "--tokenizer-model {no_eos}: the SentencePiece "
                                                  "model has no eos piece"),
    "reserved [MASK]": ({"--tokenizer-model": ["user_mask"]},
                        "--tokenizer-model {user_mask}: SentencePiece piece"),
    "no workers": ({"--workers": ["0"]}, "--workers 0: give 1 or more"),
    "only empty documents": ({"--input": ["{d}/blank.jsonl"]},
                             "--input: no document has text under the key 'text' (2 read; "
                             "skipped: 2 empty)"),
}


@pytest.fixture(scope="module")
def bad_input_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "good.jsonl").write_text('{"text": "fine"}\n')
    (d / "empty.jsonl").write_text("")
    (d / "emptydir").mkdir()
    (d / "array.json").write_text('[\n  {"text": "a"}\n]\n')
    (d / "plain.txt").write_text("some text\n")
    (d / "blank.jsonl").write_text('{"text": ""}\n{"text": ""}\n')
    return str(d)


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_writes_nothing(case, bad_input_folder, bad_tokenizers,
                                                  trained, tmp_path):
    names = dict(bad_tokenizers, d=bad_input_folder)
    flags = {"--input": [f"{bad_input_folder}/good.jsonl"], "--tokenizer-model": [trained[0]],
             "--output-prefix": [str(tmp_path / "out")]}
    changes, message = BAD_INPUT[case]
    for flag, values in changes.items():
        flags[flag] = [bad_tokenizers.get(v, v).format(**names) for v in values]
    result = run_tool(PREPROCESS, "--quiet",
                      *[x for flag, values in flags.items() for x in (flag, *values)])
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"tools/preprocess_data.py: error: {message.format(**names)}")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert outputs_in(tmp_path) == []


# Runs that fail or are stopped midway leave no .bin/.idx ---------------------------------------
_FAIL_MIDWAY = """
import runpy, sys
import glm_megatron.data.inputs as inputs
read = inputs._json_records
def failing(*args):
    for n, record in enumerate(read(*args)):
        if n == 20:
            raise OSError(5, "Input/output error")  # as if the disk went away
        yield record
inputs._json_records = failing
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def test_input_that_fails_midway_leaves_nothing(tmp_path, inputs, trained):
    out = tmp_path / "out"
    result = run_tool(None, "--input", inputs[0][0], "--tokenizer-model", trained[0],
                      "--output-prefix", str(out / "corpus"), "--workers", "2",
                      "--chunk-size", "4", python_code=_FAIL_MIDWAY.format(script=PREPROCESS))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"tools/preprocess_data.py: error: --input {inputs[0][0]}: reading it failed "
        "([Errno 5] Input/output error)")
    assert outputs_in(out) == []


def _start_on_pipe(tmp_path, trained, workers):
    """A run reading a named pipe that is fed a few documents and then held open: the run is
    midway, its temporary files exist."""
    fifo, out = str(tmp_path / "stream.jsonl"), tmp_path / "out"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [sys.executable, PREPROCESS, "--input", fifo, "--tokenizer-model", trained[0],
         "--output-prefix", str(out / "corpus"), "--workers", str(workers), "--quiet"],
        cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    writer = open(fifo, "wb")  # returns once the run opens the pipe
    writer.write(b"".join(json.dumps({"text": f"document {i}"}).encode() + b"\n"
                          for i in range(50)))
    writer.flush()
    deadline = time.monotonic() + 60
    while not (out.exists() and any(".tmp-" in n for n in os.listdir(out))):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    time.sleep(0.5)  # let it tokenize and write what it has
    return process, writer, out


def test_stopped_run_leaves_nothing(tmp_path, trained):
    process, writer, out = _start_on_pipe(tmp_path, trained, workers=2)
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while outputs_in(out):  # the run removes its temporary files first...
        assert time.monotonic() < deadline
        time.sleep(0.05)
    writer.close()  # ...then its pool's reader sees the end of the pipe and the run exits
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert outputs_in(out) == []


def test_killed_run_leaves_no_bin_or_idx(tmp_path, trained):
    process, writer, out = _start_on_pipe(tmp_path, trained, workers=1)
    process.kill()
    process.wait(timeout=30)
    writer.close()
    left = outputs_in(out)
    assert left and all(".tmp-" in n for n in left)  # only temporary names, never .bin/.idx
