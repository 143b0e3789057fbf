"""Finetuning data: task readers and GLM's patterns, encoding, batches (against an oracle written
from the GLM paper), metrics, bad input, and the shipped WordNet data."""

import itertools
import json
import math
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

from glm_megatron.finetune import (ClozeEncoder, FinetuneDataError, LabelSet,
                                   MultiTokenClozeCollator, SequenceClassificationCollator,
                                   SequenceEncoder, SingleTokenClozeCollator, build_task,
                                   check_head, compute_metrics, max_num_choices,
                                   task_metric_names)
from glm_megatron.finetune.examples import MASK
from glm_megatron.finetune.metrics import (accuracy, exact_match, macro_f1, mean_squared_error,
                                           micro_f1, pearson)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPERGLUE = os.path.join(ROOT, "tests", "fixtures", "superglue")
WORDNET = os.path.join(ROOT, "data", "finetune", "wordnet")
SEQ = 96


def fixture(name):
    return os.path.join(SUPERGLUE, f"{name}.jsonl")


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from glm_megatron.data.builtin_corpus import iter_builtin_documents
    from glm_megatron.data.tokenizer import GLMTokenizer, train_sentencepiece
    docs = list(itertools.islice(iter_builtin_documents(), 30))
    return GLMTokenizer(train_sentencepiece(docs, 1000, str(tmp_path_factory.mktemp("tok") /
                                                               "sp")))


def rendered(example):
    """The pattern's text with "[MASK]" at the blank."""
    return "".join("[MASK]" if p is MASK else p.text for p in example.parts)


# Readers and GLM's patterns ------------------------------------------------------------------
BOOLQ_P = ("Tomato - Botanically, a tomato is a fruit: the ovary of a flowering plant together "
           "with its seeds. Cooks treat it as a vegetable.")
RTE_P = "The river flooded the valley after three days of heavy rain."
CB_P = "She said the train had left, but I doubt that it had."
WIC_1, WIC_2 = "He sat on the bank of the river.", "She opened an account at the bank."
# (task, pattern id) -> (the first fixture example's pattern, GLM's verbalizers in label order)
PATTERNS = {
    ("boolq", 0): (f"{BOOLQ_P} Question: is a tomato a fruit? Answer:[MASK].", (" No", " Yes")),
    ("boolq", 1): (f"{BOOLQ_P} Question: is a tomato a fruit? Answer:[MASK].",
                   (" false", " true")),
    ("boolq", 2): (f"{BOOLQ_P} Based on the previous passage, is a tomato a fruit?[MASK].",
                   (" No", " Yes")),
    ("boolq", 3): (f"{BOOLQ_P} Based on the previous passage, is a tomato a fruit?[MASK].",
                   (" false", " true")),
    ("boolq", 4): (f"Based on the following passage is a tomato a fruit?[MASK]. {BOOLQ_P}",
                   (" No", " Yes")),
    ("boolq", 5): (f"Based on the following passage is a tomato a fruit?[MASK]. {BOOLQ_P}",
                   (" false", " true")),
    ("rte", 0): (f'"It rained for three days" ?[MASK], "{RTE_P}"', (" Yes", " No")),
    ("rte", 1): (f"It rained for three days?[MASK], {RTE_P}", (" Yes", " No")),
    ("rte", 2): (f'"It rained for three days" ?[MASK]. "{RTE_P}"', (" Yes", " No")),
    ("rte", 3): (f"It rained for three days?[MASK]. {RTE_P}", (" Yes", " No")),
    ("rte", 4): (f"{RTE_P} question: It rained for three days True or False? answer:[MASK]",
                 (" true", " false")),
    ("cb", 0): (f'"the train had left" ?[MASK], "{CB_P}"', (" Yes", " No", " Maybe")),
    ("cb", 1): (f"the train had left?[MASK], {CB_P}", (" Yes", " No", " Maybe")),
    ("cb", 2): (f'"the train had left" ?[MASK]. "{CB_P}"', (" Yes", " No", " Maybe")),
    ("cb", 3): (f"the train had left?[MASK]. {CB_P}", (" Yes", " No", " Maybe")),
    ("cb", 4): (f"{CB_P} question: the train had left true, false or neither? answer:[MASK]",
                (" true", " false", " neither")),
    ("wic", 0): (f'"{WIC_1}" / "{WIC_2}" Similar sense of "bank"?[MASK].', (" No", " Yes")),
    ("wic", 1): (f"{WIC_1} {WIC_2} Does bank have the same meaning in both sentences?[MASK]",
                 (" No", " Yes")),
    ("wic", 2): (f'bank . Sense (1) (a) "{WIC_1}" ([MASK]) "{WIC_2}"', ("2", "b")),
}
COPA_0 = ('"he dropped a hammer on his foot" or "he got a hole in his sock"? The man broke his '
          'toe because[MASK].')
COPA_1 = ("he dropped a hammer on his foot or he got a hole in his sock? The man broke his toe "
          "because[MASK].")


@pytest.mark.parametrize("task_name,pattern_id", sorted(PATTERNS))
def test_superglue_patterns_and_verbalizers_per_pattern_id(task_name, pattern_id):
    task = build_task(task_name, pattern_id=pattern_id)
    examples = task.cloze_examples(fixture(task_name), "valid")
    text, verbalizers = PATTERNS[task_name, pattern_id]
    assert rendered(examples[0]) == text
    assert examples[0].answers == verbalizers
    assert examples[0].label_names == task.label_set.names


def test_superglue_labels_fields_and_defaults():
    labels = {"boolq": [1, 0, 0], "rte": [0, 1, 0], "cb": [2, 0, 1], "wic": [0, 1, 0],
              "copa": [0, 1, 0]}
    defaults = {"boolq": 4, "rte": 0, "cb": 3, "wic": 1, "copa": 0}  # GLM's task configs
    for name, expected in labels.items():
        examples = build_task(name).cloze_examples(fixture(name), "valid")
        assert [e.label for e in examples] == expected, name
        assert [e.index for e in examples] == [0, 1, 2] and [e.line for e in examples] == [1, 2, 3]
        assert examples[0] == build_task(name, pattern_id=defaults[name]).cloze_examples(
            fixture(name), "valid")[0]
    assert build_task("cb").label_set.names == ("entailment", "contradiction", "neutral")
    # GLM's punctuation standardisation: curly quotes to straight ones.
    rte = build_task("rte", pattern_id=1).cloze_examples(fixture("rte"), "valid")
    assert rendered(rte[2]) == ('The captain spoke about the cup?[MASK], "We won the cup," the '
                                "captain said on Sunday.")
    # CB's pattern 4 keeps the hypothesis' final punctuation, RTE's patterns drop it.
    cb = build_task("cb", pattern_id=4).cloze_examples(fixture("cb"), "valid")
    assert "question: he finished the race. true, false" in rendered(cb[2])
    assert rendered(build_task("cb", pattern_id=3).cloze_examples(fixture("cb"), "valid")[2]) \
        .startswith("he finished the race?[MASK].")
    # Sequence classification reads GLM's classifier inputs.
    wic = build_task("wic").sequence_examples(fixture("wic"), "valid")
    assert (wic[0].text, wic[0].text_pair, wic[0].label) == (f"bank: {WIC_1}", WIC_2, 0)
    boolq = build_task("boolq").sequence_examples(fixture("boolq"), "train")
    assert (boolq[1].text, boolq[1].text_pair, boolq[1].label) == (
        "Penguins are flightless birds. Their wings have evolved into flippers for swimming in "
        "the sea.", "can penguins fly", 0)


def test_copa_patterns_and_mirrored_training_examples():
    task = build_task("copa")
    valid = task.cloze_examples(fixture("copa"), "valid")
    assert rendered(valid[0]) == COPA_0
    assert valid[0].answers == (" he dropped a hammer on his foot", " he got a hole in his sock")
    assert rendered(valid[2]).endswith("The girl was thirsty, so[MASK].")
    assert rendered(build_task("copa", pattern_id=1).cloze_examples(fixture("copa"),
                                                                    "valid")[0]) == COPA_1
    train = task.cloze_examples(fixture("copa"), "train")
    assert len(valid) == 3 and len(train) == 6 and train[:3] == valid
    for original, mirrored in zip(train[:3], train[3:]):
        assert mirrored.answers == original.answers[::-1]
        assert mirrored.label == 1 - original.label
        assert (mirrored.index, mirrored.line) == (original.index, original.line)
        assert rendered(mirrored).split("?")[1] == rendered(original).split("?")[1]
    test = task.cloze_examples(fixture("copa_test"), "test")
    assert [e.label for e in test] == [-1, -1]


def test_text_classification_reader(tmp_path):
    train = write_lines(tmp_path / "train.jsonl", [
        {"text": "a cat", "label": "pet"}, {"text": "an oak", "text_pair": "tall", "label":
                                           "tree"},
        {"text": "a dog", "label": "pet"}])
    task = build_task("text-classification", train_data=train,
                      verbalizers=["tree=large plant"])
    assert task.label_set == LabelSet("single_label_classification", ("pet", "tree"))
    assert LabelSet.from_dict(json.loads(json.dumps(task.label_set.to_dict()))) == \
        task.label_set
    assert task.label_set.id2label == {0: "pet", 1: "tree"}
    examples = task.cloze_examples(train, "train")
    assert [rendered(e) for e in examples] == ["a cat Answer: [MASK].",
                                               "an oak tall Answer: [MASK].",
                                               "a dog Answer: [MASK]."]
    assert examples[0].answers == ("pet", "large plant") and [e.label for e in examples] == \
        [0, 1, 0]
    custom = build_task("text-classification", train_data=train,
                        pattern="{text_pair} | {text} is a [MASK]")
    assert [rendered(e) for e in custom.cloze_examples(train, "valid")][:2] == \
        ["| a cat is a [MASK]", "tall | an oak is a [MASK]"]
    sequences = task.sequence_examples(train, "valid")
    assert [(s.text, s.text_pair, s.label) for s in sequences] == \
        [("a cat", None, 0), ("an oak", "tall", 1), ("a dog", None, 0)]
    assert task_metric_names("text-classification", task.label_set) == ("accuracy",)


def test_text_classification_problem_types(tmp_path):
    regression = write_lines(tmp_path / "r.jsonl", [{"text": "a", "label": 0.5},
                                                    {"text": "b", "label": 2}])
    task = build_task("text-classification", train_data=regression)
    assert task.label_set.problem_type == "regression" and task.label_set.num_labels == 1
    assert [s.label for s in task.sequence_examples(regression, "train")] == [0.5, 2.0]
    multi = write_lines(tmp_path / "m.jsonl", [{"text": "a", "label": ["x", "z"]},
                                               {"text": "b", "label": ["y"]},
                                               {"text": "c", "label": []}])
    task = build_task("text-classification", train_data=multi)
    assert task.label_set.names == ("x", "y", "z")
    assert [s.label for s in task.sequence_examples(multi, "train")] == \
        [(1, 0, 1), (0, 1, 0), (0, 0, 0)]
    assert task.metric_names == ("exact-match", "micro-f1")
    ints = write_lines(tmp_path / "i.jsonl", [{"text": "a", "label": 10}, {"text": "b", "label":
                                                                           2}])
    task = build_task("text-classification", train_data=ints,
                      problem_type="single_label_classification")
    assert task.label_set.names == ("2", "10")
    unlabeled = write_lines(tmp_path / "t.jsonl", [{"text": "q"}])
    assert build_task("text-classification", train_data=multi).sequence_examples(
        unlabeled, "test")[0].label == (-1, -1, -1)
    assert math.isnan(build_task("text-classification", train_data=regression)
                      .sequence_examples(unlabeled, "test")[0].label)


def test_multiple_choice_reader(tmp_path):
    path = write_lines(tmp_path / "mc.jsonl", [
        {"context": "The capital of France is [MASK].", "choices": ["Paris", "Rome"], "label": 0},
        {"context": "[MASK]: a domestic animal", "choices": ["cat", "oak", "tea"], "label": 2},
        {"context": "Two plus two is", "choices": ["four", "five"], "label": 0}])
    examples = build_task("multiple-choice").cloze_examples(path, "train")
    assert [rendered(e) for e in examples] == ["The capital of France is [MASK].",
                                               "[MASK]: a domestic animal",
                                               "Two plus two is [MASK]"]
    assert [e.answers for e in examples] == [("Paris", "Rome"), ("cat", "oak", "tea"),
                                             ("four", "five")]
    assert [e.label for e in examples] == [0, 2, 0] and examples[0].label_names is None
    assert max_num_choices(examples) == 3


# Encoding ------------------------------------------------------------------------------------
def splice(part_a, mask_position, answer):
    return list(part_a[:mask_position]) + list(answer) + list(part_a[mask_position + 1:])


def glm_text(example, answer):
    """The whole example as GLM writes it: the pattern's parts with the answer in the blank."""
    return rendered(example).replace("[MASK]", answer)


SPLICE_CASES = [(name, pattern_id) for name, pattern_id in PATTERNS] + [("copa", 0),
                                                                         ("copa", 1)]


@pytest.mark.parametrize("prepend_cls", [False, True])
def test_pieces_join_as_the_whole_text(tokenizer, prepend_cls):
    """Part A with an answer in place of [MASK] spells exactly the text of the whole example."""
    encoder = ClozeEncoder(tokenizer, 256, prepend_cls=prepend_cls)
    prefix = [tokenizer.cls] if prepend_cls else []
    for name, pattern_id in SPLICE_CASES:
        examples = build_task(name, pattern_id=pattern_id).cloze_examples(fixture(name),
                                                                          "valid")
        for example, encoded in zip(examples, encoder.encode(examples, name).examples):
            part_a = encoded.part_a.tolist()
            assert part_a[-1] == tokenizer.eod and part_a[:len(prefix)] == prefix
            assert [i for i, t in enumerate(part_a) if t == tokenizer.mask] == \
                [encoded.mask_position]
            for text, ids in zip(example.answers, encoded.answers):
                whole = prefix + tokenizer.tokenize(glm_text(example, text)) + [tokenizer.eod]
                assert tokenizer.detokenize(splice(part_a, encoded.mask_position, ids)) == \
                    tokenizer.detokenize(whole), (name, pattern_id, text)


def test_answer_spacing(tokenizer, tmp_path):
    """The space before the blank goes with the answer, once; an answer at the start of the
    text or glued to the word before it gets none."""
    path = write_lines(tmp_path / "mc.jsonl", [
        {"context": "It is [MASK].", "choices": ["red", " red"], "label": 0},
        {"context": "It is", "choices": ["red", " red"], "label": 0},
        {"context": "[MASK] is red.", "choices": ["it", " it"], "label": 0},
        {"context": "(x[MASK])", "choices": ["yz", "y z"], "label": 0}])
    examples = build_task("multiple-choice").cloze_examples(path, "train")
    encoded = ClozeEncoder(tokenizer, SEQ, prepend_cls=False).encode(examples, path).examples
    texts = [[tokenizer.detokenize(splice(e.part_a, e.mask_position, a))[:-len("</s>")]
              for a in e.answers] for e in encoded]
    assert texts == [["It is red.", "It is red."], ["It is red", "It is red"],
                     ["it is red.", "it is red."], ["(xyz)", "(xy z)"]]
    assert encoded[0].answers[0].tolist() == encoded[0].answers[1].tolist() == \
        tokenizer.tokenize("red")


def test_too_long_examples_and_truncate(tokenizer):
    examples = build_task("boolq", pattern_id=0).cloze_examples(fixture("boolq"), "train")
    full = ClozeEncoder(tokenizer, 256, prepend_cls=True).encode(examples, "boolq.jsonl")
    needed = [len(e.part_a) + 1 + max(map(len, e.answers)) for e in full.examples]
    seq = sorted(needed)[1] - 1  # two of three examples are too long
    with pytest.raises(FinetuneDataError, match=rf"^boolq.jsonl: 2 of 3 examples are longer "
                       rf"than --seq-length {seq} tokens \(the longest, line \d, needs "
                       rf"{max(needed)}\); pass --truncate"):
        ClozeEncoder(tokenizer, seq, prepend_cls=True).encode(examples, "boolq.jsonl")
    cut = ClozeEncoder(tokenizer, seq, prepend_cls=True, truncate=True).encode(examples,
                                                                               "boolq.jsonl")
    assert cut.num_truncated == 2 and full.num_truncated == 0
    for before, after, example in zip(full.examples, cut.examples, examples):
        assert len(after.part_a) + 1 + max(map(len, after.answers)) <= seq
        assert [a.tolist() for a in after.answers] == [a.tolist() for a in before.answers]
        text = tokenizer.detokenize(after.part_a)
        assert " Question:" in text and "? Answer:[MASK].</s>" in text
        assert after.part_a[after.mask_position] == tokenizer.mask
    # The shortenable passage lost its end; the question (shorter) is whole.
    assert "is a tomato a fruit? Answer:" in tokenizer.detokenize(cut.examples[0].part_a)
    assert len(cut.examples[0].part_a) < len(full.examples[0].part_a)
    with pytest.raises(FinetuneDataError, match=r"^boolq.jsonl line 1: even with its text cut, "
                       r"the example needs more than --seq-length 12 tokens .*; raise "
                       r"--seq-length$"):
        ClozeEncoder(tokenizer, 12, prepend_cls=True, truncate=True).encode(examples,
                                                                            "boolq.jsonl")


# Batches against the GLM paper ---------------------------------------------------------------
# GLM (Du et al., ACL 2022), section 2.1-2.3: the input is Part A, the text with the blank
# replaced by [MASK] (attending bidirectionally), then Part B, the span to fill, fed as [START]
# + span and trained to output span + [END]. 2D positions: every Part A token has its index as
# position and 0 as block position; every Part B token has the position of its [MASK] and
# block positions 1, 2, ..., length + 1. For classification (section 2.3) the blank's
# candidates are scored in Part B. Rows are padded to seq_length; padding is excluded.
def oracle_row(part_a, inputs, targets, mask_id, pad, seq_length, block_from=1):
    """One row from the paper's description, element by element."""
    mask_at = max(i for i, t in enumerate(part_a) if t == mask_id)  # the (last) [MASK]
    row = {"tokens": [], "labels": [], "loss": [], "positions": [], "blocks": []}
    for i, token in enumerate(part_a):
        for key, value in zip(row, (token, token, 0, i, 0)):
            row[key].append(value)
    for j, (x, y) in enumerate(zip(inputs, targets)):
        for key, value in zip(row, (x, y, 1, mask_at, block_from + j)):
            row[key].append(value)
    assert len(row["tokens"]) <= seq_length
    for key, fill in zip(row, (pad, pad, 0, 0, 0)):
        row[key] += [fill] * (seq_length - len(row[key]))
    return row, len(part_a)


def oracle_multi_token(examples, tokenizer, seq_length, num_choices):
    out = {k: [] for k in ("tokens", "labels", "loss_mask", "position_ids", "sep",
                           "choice_mask", "label", "index")}
    for example in examples:
        part_a = example.part_a.tolist()
        for c in range(num_choices):
            if c < len(example.answers):
                answer = example.answers[c].tolist()
                row, sep = oracle_row(part_a, [tokenizer.sop] + answer,
                                      answer + [tokenizer.eop], tokenizer.mask, tokenizer.pad,
                                      seq_length)
            else:  # a padded choice: a row of padding
                row = {k: [tokenizer.pad if k in ("tokens", "labels") else 0] * seq_length
                       for k in ("tokens", "labels", "loss", "positions", "blocks")}
                sep = 0
            out["tokens"].append(row["tokens"])
            out["labels"].append(row["labels"])
            out["loss_mask"].append(row["loss"])
            out["position_ids"].append([row["positions"], row["blocks"]])
            out["sep"].append(sep)
        out["choice_mask"].append([c < len(example.answers) for c in range(num_choices)])
        out["label"].append(example.label)
        out["index"].append(example.index)
    return out


def oracle_single_token(examples, tokenizer, seq_length, num_choices):
    out = {k: [] for k in ("tokens", "position_ids", "sep", "answer_position",
                           "choice_token_ids", "choice_mask", "label", "index")}
    for example in examples:
        row, sep = oracle_row(example.part_a.tolist(), [tokenizer.sop], [tokenizer.sop],
                              tokenizer.mask, tokenizer.pad, seq_length)
        out["tokens"].append(row["tokens"])
        out["position_ids"].append([row["positions"], row["blocks"]])
        out["sep"].append(sep)
        out["answer_position"].append(sep)  # the <sop>: its logits score the candidates
        ids = [a.tolist() for a in example.answers]
        out["choice_token_ids"].append([a[0] for a in ids] + [tokenizer.pad] *
                                       (num_choices - len(ids)))
        out["choice_mask"].append([c < len(ids) for c in range(num_choices)])
        out["label"].append(example.label)
        out["index"].append(example.index)
    return out


DTYPES = {"tokens": np.int64, "labels": np.int64, "loss_mask": np.float32,
          "position_ids": np.int64, "sep": np.int64, "choice_mask": np.bool_,
          "label": np.int64, "index": np.int64, "answer_position": np.int64,
          "choice_token_ids": np.int64}


def assert_batch_equals(batch, expected):
    assert set(batch) == set(expected)
    for key, value in expected.items():
        got = batch[key].numpy()
        assert got.dtype == DTYPES[key], key
        np.testing.assert_array_equal(got, np.asarray(value, dtype=DTYPES[key]), err_msg=key)


def multi_token_examples(tmp_path):
    """COPA (multi-token answers) and multiple-choice (2 to 4 choices, one-token answers too)."""
    mc = write_lines(tmp_path / "mc.jsonl", [
        {"context": "[MASK]: a tree", "choices": ["oak", "a", "salt", "the red dog"], "label": 3},
        {"context": "Water is [MASK].", "choices": ["wet", "of"], "label": 0},
        {"context": "It is", "choices": ["here", "there", "everywhere at once"], "label": 1}])
    return (build_task("copa").cloze_examples(fixture("copa"), "train")[:3] +
            build_task("multiple-choice").cloze_examples(mc, "valid"))


@pytest.mark.parametrize("prepend_cls", [False, True])
def test_multi_token_cloze_batch_equals_paper_oracle(tokenizer, tmp_path, prepend_cls):
    examples = multi_token_examples(tmp_path)
    encoded = ClozeEncoder(tokenizer, SEQ, prepend_cls=prepend_cls).encode(examples, "x")
    lengths = {len(a) for e in encoded.examples for a in e.answers}
    assert min(lengths) == 1 and max(lengths) > 2
    num_choices = max_num_choices(examples)
    assert num_choices == 4
    collate = MultiTokenClozeCollator(SEQ, num_choices, tokenizer)
    batch = collate(encoded.examples)
    assert_batch_equals(batch, oracle_multi_token(encoded.examples, tokenizer, SEQ, num_choices))
    real_rows = batch["choice_mask"].view(-1)
    assert (batch["tokens"][real_rows, 0] == tokenizer.cls).all() == prepend_cls
    # The number of targets per row (for --length-penalty) is the answer's length + <eop>.
    rows = batch["loss_mask"].sum(1).view(-1, num_choices)
    lengths = [[len(a) + 1 for a in e.answers] + [0] * (num_choices - len(e.answers))
               for e in encoded.examples]
    assert rows.tolist() == lengths
    # Deterministic and picklable (DataLoader workers).
    again = pickle.loads(pickle.dumps(collate))(encoded.examples)
    assert all((again[k] == batch[k]).all() for k in batch)


@pytest.mark.parametrize("prepend_cls", [False, True])
def test_single_token_cloze_batch_equals_paper_oracle(tokenizer, tmp_path, prepend_cls):
    train = write_lines(tmp_path / "tc.jsonl", [{"text": "yes it is", "label": "true"},
                                                {"text": "no it is not", "label": "false"}])
    examples = (build_task("text-classification", train_data=train).cloze_examples(train,
                                                                                  "train") +
                build_task("boolq", verbalizers=["true=true", "false=false"]).cloze_examples(
                    fixture("boolq"), "valid"))
    encoded = ClozeEncoder(tokenizer, 128, prepend_cls=prepend_cls,
                           single_token=True).encode(examples, "x").examples
    assert all(tokenizer.detokenize(a).strip() in ("true", "false") for e in encoded
               for a in e.answers)
    batch = SingleTokenClozeCollator(128, 3, tokenizer)(encoded)
    assert_batch_equals(batch, oracle_single_token(encoded, tokenizer, 128, 3))


def test_sequence_classification_batch(tokenizer, tmp_path):
    train = write_lines(tmp_path / "tc.jsonl", [
        {"text": "a cat", "label": ["pet"]}, {"text": "an oak", "text_pair": "tall",
                                             "label": ["tree", "pet"]}])
    task = build_task("text-classification", train_data=train)
    check_head(task, "seq-cls")
    for prepend_cls in (False, True):
        encoded = SequenceEncoder(tokenizer, 16, prepend_cls=prepend_cls).encode(
            task.sequence_examples(train, "train"), train).examples
        batch = SequenceClassificationCollator(16, task.label_set.problem_type,
                                               task.label_set.num_labels, tokenizer)(encoded)
        first = [tokenizer.cls] if prepend_cls else []
        rows = [first + tokenizer.tokenize("a cat") + [tokenizer.eod],
                first + tokenizer.tokenize("an oak") + [tokenizer.eod] +
                tokenizer.tokenize("tall") + [tokenizer.eod]]
        assert batch["tokens"].tolist() == [r + [tokenizer.pad] * (16 - len(r)) for r in rows]
        assert batch["position_ids"].tolist() == [
            [list(range(len(r))) + [0] * (16 - len(r)), [0] * 16] for r in rows]
        assert batch["label"].dtype == np.float32 or str(batch["label"].dtype) == "torch.float32"
        assert batch["label"].tolist() == [[1.0, 0.0], [1.0, 1.0]]
        assert batch["index"].tolist() == [0, 1] and set(batch) == {"tokens", "position_ids",
                                                                    "label", "index"}
    examples = build_task("rte").sequence_examples(fixture("rte"), "valid")
    with pytest.raises(FinetuneDataError, match=r"^rte: 3 of 3 examples are longer than "
                       r"--seq-length 12 tokens .*; pass --truncate"):
        SequenceEncoder(tokenizer, 12, prepend_cls=True).encode(examples, "rte")
    cut = SequenceEncoder(tokenizer, 12, prepend_cls=True, truncate=True).encode(examples, "rte")
    assert cut.num_truncated == 3
    for encoded in cut.examples:  # both texts keep their start and their end-of-text token
        ids = encoded.tokens.tolist()
        assert len(ids) <= 12 and ids[0] == tokenizer.cls and ids.count(tokenizer.eod) == 2
        first = ids.index(tokenizer.eod) - 1
        assert ids[-1] == tokenizer.eod and abs(first - (len(ids) - first - 3)) <= 1, ids
    assert tokenizer.detokenize(cut.examples[0].tokens).startswith("[CLS] The river")
    for labels, dtype in (([0.5, 2], "torch.float32"), (["x", "y"], "torch.int64")):
        path = write_lines(tmp_path / "p.jsonl", [{"text": "a", "label": v} for v in labels])
        task = build_task("text-classification", train_data=path)
        encoded = SequenceEncoder(tokenizer, 8, prepend_cls=False).encode(
            task.sequence_examples(path, "train"), path).examples
        batch = SequenceClassificationCollator(8, task.label_set.problem_type,
                                               task.label_set.num_labels, tokenizer)(encoded)
        assert str(batch["label"].dtype) == dtype and batch["label"].shape == (2,)


# Metrics -------------------------------------------------------------------------------------
def test_metrics_against_hand_computed_values():
    predictions, labels = [0, 1, 2, 2, 1, 0], [0, 2, 2, 2, 1, 1]
    assert accuracy(predictions, labels) == pytest.approx(4 / 6)
    # Per class (TP, FP, FN): 0 (1, 1, 0) F1 2/3; 1 (1, 1, 1) F1 1/2; 2 (2, 0, 1) F1 4/5.
    assert macro_f1(predictions, labels) == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3)
    # A class nobody predicts counts as F1 0; classes in neither side do not count.
    assert macro_f1([0, 0], [0, 1]) == pytest.approx((2 / 3 + 0) / 2)
    assert macro_f1([0, 2], [0, 1]) == pytest.approx((1 + 0 + 0) / 3)
    assert mean_squared_error([1.0, 2.0, 4.0], [1.0, 3.0, 2.0]) == pytest.approx(5 / 3)
    # x = (1, 2, 3), y = (1, 3, 2): covariance 1/2 (times n), variances 2 and 2.
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    multi_pred, multi_gold = [[1, 0, 1], [0, 1, 0], [1, 1, 0]], [[1, 0, 1], [0, 0, 0], [1, 0, 1]]
    assert exact_match(multi_pred, multi_gold) == pytest.approx(1 / 3)
    # TP 3, FP 2, FN 1: 6 / (6 + 3).
    assert micro_f1(multi_pred, multi_gold) == pytest.approx(6 / 9)
    assert compute_metrics(("accuracy", "macro-f1"), predictions, labels) == {
        "accuracy": pytest.approx(4 / 6), "macro-f1": pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3)}
    three = LabelSet("single_label_classification", ("a", "b", "c"))
    assert task_metric_names("cb", build_task("cb").label_set) == ("accuracy", "macro-f1")
    assert task_metric_names("text-classification", three) == ("accuracy", "macro-f1")
    assert task_metric_names("rte", build_task("rte").label_set) == ("accuracy",)
    assert task_metric_names("copa", None) == ("accuracy",)
    assert task_metric_names("text-classification", LabelSet("regression")) == ("mse", "pearson")
    try:
        import sklearn.metrics as sk
    except ImportError:  # the hand-computed values above are the reference then
        return
    rng = np.random.default_rng(0)
    p, g = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert macro_f1(p, g) == pytest.approx(sk.f1_score(g, p, average="macro"))
    mp, mg = rng.integers(0, 2, (30, 5)), rng.integers(0, 2, (30, 5))
    assert micro_f1(mp, mg) == pytest.approx(sk.f1_score(mg, mp, average="micro"))
    assert exact_match(mp, mg) == pytest.approx(sk.accuracy_score(mg, mp))


# Bad input -----------------------------------------------------------------------------------
def bad_file(tmp_path, text):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    return str(path)


def test_bad_data_files(tmp_path):
    good = write_lines(tmp_path / "train.jsonl", [{"text": "a", "label": "x"},
                                                  {"text": "b", "label": "y"}])
    task = build_task("text-classification", train_data=good)
    cases = [
        ('{"text": "a", "label": "x"}\n{"label": "y"}\n', "train",
         r"bad.jsonl line 2: missing field 'text'; every line of this file needs 'text' and"),
        ('{"text": "a", "label": "z"}\n', "valid",
         r"bad.jsonl line 1: label 'z' is not one of the training data's labels \('x', 'y'\); "
         "fix the label or add examples of it to the training data"),
        ('{"text": "a", "label": "z"}\n', "test", r"label 'z' is not one of"),
        ('{"text": "a"}\n', "valid", r"line 1: missing field 'label'"),
        ("", "train", r"bad.jsonl: no examples \(the file is empty\); give a JSON-lines file"),
        ("\n  \n", "train", r"bad.jsonl: no examples"),
        ('{"text": "a", "label": "x"}\n{"text": "b", "label" "y"}\n', "train",
         r"bad.jsonl line 2: not valid JSON \(Expecting ':' delimiter at column 23\); each line "
         "must be one JSON object"),
        ('["a", "x"]\n', "train", r"bad.jsonl line 1: a JSON list, not an object"),
        ('{"text": 3, "label": "x"}\n', "train", r"line 1: field 'text' must be a string, got 3"),
    ]
    for text, split, message in cases:
        with pytest.raises(FinetuneDataError, match=message):
            task.cloze_examples(bad_file(tmp_path, text), split)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes('{"text": "a", "label": "y"}\n'.encode("utf-8-sig"))
    assert task.cloze_examples(str(bom), "valid")[0].label == 1
    with pytest.raises(FinetuneDataError, match=r"missing\.jsonl: no such file"):
        task.cloze_examples(str(tmp_path / "missing.jsonl"), "train")
    with pytest.raises(FinetuneDataError, match=r"bad.jsonl line 2: missing field 'label'"):
        build_task("text-classification", train_data=bad_file(
            tmp_path, '{"text": "a", "label": "x"}\n{"text": "b"}\n'))
    with pytest.raises(FinetuneDataError, match=r"only the label\(s\) \['x'\]; a classifier "
                       "needs at least two"):
        build_task("text-classification", train_data=bad_file(
            tmp_path, '{"text": "a", "label": "x"}\n'))
    mixed = '{"text": "a", "label": "x"}\n{"text": "b", "label": ["y"]}\n'
    with pytest.raises(FinetuneDataError, match=r"line 2: label \['y'\] does not fit"):
        build_task("text-classification", train_data=bad_file(tmp_path, mixed))
    with pytest.raises(FinetuneDataError, match=r"line 2: label 'x' is not a finite number"):
        build_task("text-classification", train_data=bad_file(
            tmp_path, '{"text": "a", "label": 1.5}\n{"text": "b", "label": "x"}\n'))


def test_bad_task_specific_data(tmp_path):
    cases = [
        ("multiple-choice", '{"context": "a [MASK] b [MASK]", "choices": ["x", "y"], "label": 0}',
         r"line 1: the context has 2 \[MASK\]s; keep one"),
        ("multiple-choice", '{"context": "a", "choices": ["x"], "label": 0}',
         r"line 1: field 'choices' must be a list of at least two non-empty strings"),
        ("multiple-choice", '{"context": "a", "choices": ["x", "y"], "label": 2}',
         r"line 1: label 2 is not an index into its 2 choices \(0..1\)"),
        ("multiple-choice", '{"context": "a", "choices": ["x", "y"], "label": true}',
         r"line 1: field 'label' must be an integer, got true"),
        ("copa", '{"premise": "p", "choice1": "a", "choice2": "b", "question": "why", '
                 '"label": 0}', r"line 1: field 'question' must be \"cause\" or \"effect\""),
        ("copa", '{"premise": "p", "choice1": "a", "question": "cause", "label": 0}',
         r"line 1: missing field 'choice2'; every line of this file needs 'premise', "
         "'choice1', 'choice2', 'question' and 'label'"),
        ("rte", '{"premise": "p", "hypothesis": "h", "label": "neutral"}',
         r"line 1: label 'neutral' is not one of the training data's labels \('entailment', "
         r"'not_entailment'\)"),
        ("boolq", '{"passage": "p", "label": true}', r"line 1: missing field 'question'"),
    ]
    for task_name, line, message in cases:
        with pytest.raises(FinetuneDataError, match=message):
            build_task(task_name).cloze_examples(bad_file(tmp_path, line + "\n"), "valid")


def test_bad_flags(tokenizer, tmp_path):
    train = write_lines(tmp_path / "train.jsonl", [{"text": "a", "label": "animal"},
                                                   {"text": "b", "label": "true"}])
    cases = [
        (dict(name="text-classification", train_data=train, verbalizers=["plant=a tree"]),
         r"--verbalizer 'plant=a tree': label 'plant' is not one of the task's labels "
         r"\('animal', 'true'\); fix the label name"),
        (dict(name="text-classification", train_data=train, verbalizers=["animal"]),
         r"--verbalizer 'animal': write LABEL=WORDS"),
        (dict(name="rte", verbalizers=["neutral=Maybe"]), r"label 'neutral' is not one of"),
        (dict(name="copa", verbalizers=["0=x"]), r"--verbalizer applies to tasks with labels"),
        (dict(name="text-classification", train_data=train, pattern="{text} {label} [MASK]"),
         r"--pattern '\{text\} \{label\} \[MASK\]': unknown placeholder \{label\}"),
        (dict(name="text-classification", train_data=train, pattern="{text}"),
         r"needs \{text\} and exactly one \[MASK\]"),
        (dict(name="rte", pattern_id=5), r"--pattern-id 5: --task rte has GLM's patterns "
                                         "0, 1, 2, 3, 4"),
        (dict(name="rte", pattern="{text} [MASK]"), r"--pattern applies to --task "
                                                    "text-classification"),
        (dict(name="multiple-choice", pattern_id=1), r"--pattern-id applies to the SuperGLUE"),
        (dict(name="text-classification"), r"reads its labels from --train-data"),
        (dict(name="squad"), r"--task 'squad': choose one of text-classification, "),
    ]
    for kwargs, message in cases:
        with pytest.raises(FinetuneDataError, match=message):
            build_task(kwargs.pop("name"), **kwargs)
    # A single-token head with a multi-token verbalizer names the label and its pieces.
    task = build_task("text-classification", train_data=train)
    pieces = "[" + ", ".join(repr(tokenizer.pieces()[i]) for i in
                             tokenizer.tokenize("animal")) + "]"
    assert len(tokenizer.tokenize("animal")) > 1
    encoder = ClozeEncoder(tokenizer, SEQ, prepend_cls=False, single_token=True)
    with pytest.raises(FinetuneDataError) as error:
        encoder.encode(task.cloze_examples(train, "train"), train)
    assert str(error.value) == (
        f"--verbalizer: label 'animal' is answered by 'animal', "
        f"{len(tokenizer.tokenize('animal'))} tokens {pieces}, but single-token cloze scoring "
        "needs one token per label; give a one-token --verbalizer animal=WORD or score "
        "multi-token answers (--multi-token)")
    with pytest.raises(FinetuneDataError, match=r"copa.jsonl line 1: choice 0 ' he dropped a "
                       r"hammer on his foot' is \d+ tokens \[.*\], but single-token"):
        encoder.encode(build_task("copa").cloze_examples(fixture("copa"), "valid"),
                       fixture("copa"))


def test_heads_each_task_allows():
    for name in ("multiple-choice", "copa"):
        with pytest.raises(FinetuneDataError, match=rf"^--head seq-cls cannot score --task "
                           rf"{name}: its answers are each example's own choices; use --head "
                           "cloze$"):
            check_head(build_task(name), "seq-cls")
        with pytest.raises(FinetuneDataError, match=r"^--head seq-cls cannot score"):
            build_task(name).sequence_examples(fixture("copa"), "train")
        check_head(build_task(name), "cloze")
    for name in ("boolq", "rte", "cb", "wic"):
        check_head(build_task(name), "cloze")
        check_head(build_task(name), "seq-cls")
    task = build_task("text-classification",
                      train_data=os.path.join(WORDNET, "supersense_train.jsonl"))
    check_head(task, "cloze")
    regression = build_task("text-classification", label_set=LabelSet("regression"))
    with pytest.raises(FinetuneDataError, match=r"--head cloze picks one label per example, "
                       "but the data is regression; use --head seq-cls"):
        check_head(regression, "cloze")
    with pytest.raises(FinetuneDataError, match=r"--head cloze picks one label"):
        regression.cloze_examples(os.path.join(WORDNET, "supersense_valid.jsonl"), "valid")
    with pytest.raises(FinetuneDataError, match=r"--head 'mlp': choose one of cloze, seq-cls"):
        check_head(task, "mlp")
    with pytest.raises(FinetuneDataError, match=r"--problem-type regression: --task rte is "):
        build_task("rte", problem_type="regression")


# Shipped data --------------------------------------------------------------------------------
def test_shipped_wordnet_data(tokenizer):
    supersense = os.path.join(WORDNET, "supersense_train.jsonl")
    task = build_task("text-classification", train_data=supersense)
    assert task.label_set.names == ("animal", "artifact", "food", "location", "person", "plant")
    assert task.metric_names == ("accuracy", "macro-f1")
    word_choice = build_task("multiple-choice")
    for split, count in (("train", 2004), ("valid", 402)):
        labels = [e.label for e in task.cloze_examples(
            os.path.join(WORDNET, f"supersense_{split}.jsonl"), split)]
        assert len(labels) == count and set(np.bincount(labels)) == {count // 6}
        examples = word_choice.cloze_examples(os.path.join(WORDNET, f"word_choice_{split}.jsonl"),
                                              split)
        assert len(examples) == count and max(np.bincount([e.label for e in examples])) <= \
            count // 4 + 1
        assert all(len(set(e.answers)) == 4 and rendered(e).startswith("[MASK]: ")
                   and not re.search(rf"\b{e.answers[e.label]}", rendered(e).lower())
                   for e in examples)
        encoded = ClozeEncoder(tokenizer, 256, prepend_cls=True).encode(examples, split)
        assert encoded.num_truncated == 0
    with open(os.path.join(WORDNET, "LICENSE")) as f:
        assert "WordNet 3.0 Copyright 2006 by Princeton University" in f.read()


FAKE_NOUNS = """\
  1 This software and database is being provided to you, the LICENSEE, by  
  2 Princeton University under the following license.  
{lines}"""


def fake_wordnet(tmp_path):
    """A data.noun in WordNet's format: 4 synsets per supersense, plus one of another file."""
    lines, offset = [], 100
    for lex, name in ((5, "animal"), (6, "artifact"), (13, "food"), (15, "location"),
                      (18, "person"), (20, "plant"), (9, "cognition")):
        for n in range(4):
            word = f"{name}{'abcd'[n]}"
            lines.append(f"{offset:08d} {lex:02d} n 02 {word} 0 Other_{word} 0 001 @ 00000001 n "
                         f"0000 | a thing of kind {name} number {n}; \"an example of {word}\"  ")
            offset += 1
    (tmp_path / "data.noun").write_text(FAKE_NOUNS.format(lines="\n".join(lines)) + "\n")
    return str(tmp_path)


def run_builder(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_wordnet_tasks.py"),
                           *args], capture_output=True, text=True)


def test_wordnet_builder(tmp_path):
    wordnet = fake_wordnet(tmp_path)
    outputs = []
    for name in ("a", "b"):
        result = run_builder("--wordnet-dir", wordnet, "--output-dir", str(tmp_path / name),
                             "--train-per-label", "3", "--valid-per-label", "1")
        assert result.returncode == 0, result.stderr
        outputs.append({f: (tmp_path / name / f).read_text() for f in sorted(os.listdir(
            tmp_path / name))})
    assert outputs[0] == outputs[1]  # deterministic
    files = outputs[0]
    assert sorted(files) == ["LICENSE", "supersense_train.jsonl", "supersense_valid.jsonl",
                             "word_choice_train.jsonl", "word_choice_valid.jsonl"]
    assert "Princeton University under the following license." in files["LICENSE"]
    rows = [json.loads(line) for line in files["supersense_train.jsonl"].splitlines()]
    assert len(rows) == 18 and all(r["text"].startswith(f"a thing of kind {r['label']} ")
                                   and '"' not in r["text"] for r in rows)
    for split in ("train", "valid"):
        for row in map(json.loads, files[f"word_choice_{split}.jsonl"].splitlines()):
            kinds = [choice[:-1] for choice in row["choices"]]
            assert len(set(kinds)) == 4 and row["context"] == \
                f"[MASK]: a thing of kind {kinds[row['label']]} number " \
                f"{'abcd'.index(row['choices'][row['label']][-1])}"
    missing = run_builder("--wordnet-dir", str(tmp_path / "none"), "--output-dir",
                          str(tmp_path / "c"))
    assert missing.returncode == 2 and not (tmp_path / "c").exists()
    assert "data.noun not found; install WordNet 3.0 (apt-get install wordnet-base) or pass " \
        "--wordnet-dir" in missing.stderr
