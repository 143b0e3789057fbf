"""Finetuning in process: batched cloze scores against one forward pass per candidate, the
training order of the epochs, and pretrained weights loaded at any layout."""

import argparse
import itertools
import json
import os

import pytest
import torch
import torch.nn.functional as F

from multiprocess import run_distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = 64


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from glm_megatron.data.builtin_corpus import iter_builtin_documents
    from glm_megatron.data.tokenizer import GLMTokenizer, train_sentencepiece
    docs = list(itertools.islice(iter_builtin_documents(), 30))
    return GLMTokenizer(train_sentencepiece(docs, 1000, str(tmp_path_factory.mktemp("tok") /
                                                               "sp")))


def data_args(**values):
    """The data flags prepare_data reads, as finetune_glm.py's parser leaves them."""
    defaults = dict(task="multiple-choice", train_data=None, valid_data=None, test_data=None,
                    pattern_id=None, pattern=None, verbalizer=None, problem_type=None,
                    seq_length=SEQ, truncate=False, multi_token=None)
    return argparse.Namespace(**{**defaults, **values})


def write_lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def one_token_words(tokenizer, count):
    """Words that the tokenizer spells with one piece after a space."""
    found = [p[1:] for p in tokenizer.pieces() if p.startswith("\u2581") and p[1:].isalpha() and
             len(p) > 3 and len(tokenizer.tokenize(p[1:])) == 1]
    return found[:count]


def choice_file(tmp_path, tokenizer, single_token):
    if single_token:
        w = one_token_words(tokenizer, 8)
        rows = [{"context": "The [MASK] is here.", "choices": w[:4], "label": 2},
                {"context": "Which one: [MASK]", "choices": w[4:7], "label": 0},
                {"context": "[MASK] and more text after it", "choices": w[5:8], "label": 1}]
    else:
        rows = [{"context": "[MASK]: a tree that grows tall", "choices":
                 ["oak", "a", "salt water", "the red dog barks"], "label": 3},
                {"context": "Water is [MASK].", "choices": ["wet", "of"], "label": 0},
                {"context": "It is", "choices": ["here", "there", "everywhere at once"],
                 "label": 1},
                {"context": "A much longer context, so that its row is the longest, and then "
                            "[MASK] with short answers", "choices": ["no", "yes"], "label": 1}]
    return write_lines(tmp_path / "choices.jsonl", rows)


def naive_scores(model, tokenizer, encoded, single_token, length_penalty):
    """GLM's cloze score of every candidate, each from a forward pass of its own over the
    unpadded row Part A + <sop> + answer, with the full vocabulary's log-softmax."""
    scores = torch.full((len(encoded), max(len(e.answers) for e in encoded)), float("-inf"),
                        dtype=torch.float64)
    for i, example in enumerate(encoded):
        part_a, n = example.part_a.tolist(), len(example.part_a)
        for c, answer in enumerate(example.answers):
            answer = answer.tolist()
            inputs = [tokenizer.sop] + ([] if single_token else answer)
            targets = answer[:1] if single_token else answer + [tokenizer.eop]
            tokens = torch.tensor([part_a + inputs])
            positions = list(range(n)) + [example.mask_position] * len(inputs)
            blocks = [0] * n + list(range(1, len(inputs) + 1))
            with torch.no_grad():
                logits = model.logits(tokens, torch.tensor([[positions, blocks]]),
                                      torch.tensor([n]))
            log_probs = torch.log_softmax(logits[:, 0].double(), dim=-1)
            score = sum(log_probs[n + j, t] for j, t in enumerate(targets))
            if length_penalty > 0:
                score = score / len(targets) ** length_penalty
            scores[i, c] = score
    return scores


@pytest.mark.parametrize("preset", ["glm-tiny", "chatglm3-tiny"])
@pytest.mark.parametrize("single_token,length_penalty", [(False, 0.0), (False, 1.0),
                                                         (True, 0.0)])
def test_batched_cloze_scores_equal_one_forward_per_candidate(ctx, tmp_path, tokenizer, preset,
                                                              single_token, length_penalty):
    """All candidates of a batch in one forward pass (padded choices, target positions only)
    give each candidate the score of its own unbatched forward pass, and the loss is the cross
    entropy over those scores."""
    from glm_testing import tiny_config
    from glm_megatron.data.tokenizer import padded_vocab_size
    from glm_megatron.finetune.data import MULTI_TOKEN, SINGLE_TOKEN, prepare_data
    from glm_megatron.finetune.heads import loss_function
    from glm_megatron.model.builder import build_model
    from glm_megatron.training.losses import choice_scores

    path = choice_file(tmp_path, tokenizer, single_token)
    # Rows as short as the data allows, so the longest fills its row: the targets of a long
    # Part A with short answers then reach past the row's end.
    probe = prepare_data(data_args(valid_data=path), "cloze", tokenizer, prepend_cls=False)
    fit = max(len(e.part_a) + 1 + (0 if single_token else max(map(len, e.answers)))
              for e in probe.splits["valid"].examples)
    data = prepare_data(data_args(valid_data=path, seq_length=fit), "cloze", tokenizer,
                        prepend_cls=False)
    assert data.scoring == (SINGLE_TOKEN if single_token else MULTI_TOKEN)
    config = tiny_config(preset, vocab_size=padded_vocab_size(tokenizer.vocab_size))
    model = build_model(config, ctx, seed=5).eval()
    encoded = data.splits["valid"].examples
    batch = data.collate(encoded)
    if not single_token:
        positions = batch["target_positions"]
        assert (positions[:, -1] == positions[:, -2]).any()  # clamped at the row's end
    with torch.no_grad():
        output = model(batch)
        batched = choice_scores(output, batch, length_penalty)
        loss, report = loss_function("cloze", "single_label_classification",
                                     length_penalty)(output, batch)
    expected = naive_scores(model, tokenizer, encoded, single_token, length_penalty)
    torch.testing.assert_close(batched.double(), expected, rtol=1e-5, atol=1e-5)
    labels = torch.tensor([e.label for e in encoded])
    torch.testing.assert_close(loss.double(), F.cross_entropy(expected, labels),
                               rtol=1e-5, atol=1e-6)
    assert report["index"].tolist() == list(range(len(encoded)))
    assert report["label"].tolist() == labels.tolist()


def test_single_token_scoring_is_chosen_only_when_every_answer_is_one_token(tmp_path,
                                                                           tokenizer):
    from glm_megatron.finetune.data import MULTI_TOKEN, SINGLE_TOKEN, prepare_data
    from glm_megatron.finetune.errors import FinetuneDataError
    single = choice_file(tmp_path, tokenizer, single_token=True)
    assert prepare_data(data_args(valid_data=single), "cloze", tokenizer,
                        False).scoring == SINGLE_TOKEN
    assert prepare_data(data_args(valid_data=single, multi_token=True), "cloze", tokenizer,
                        False).scoring == MULTI_TOKEN
    multi = choice_file(tmp_path, tokenizer, single_token=False)
    assert prepare_data(data_args(valid_data=multi), "cloze", tokenizer,
                        False).scoring == MULTI_TOKEN
    with pytest.raises(FinetuneDataError, match=r"choices.jsonl line 1: choice 0 'oak' is \d+ "
                       r"tokens \['.*'\], but single-token cloze scoring needs one token"):
        prepare_data(data_args(valid_data=multi, multi_token=False), "cloze", tokenizer, False)


@pytest.mark.parametrize("dp_size", [1, 2])
def test_epochs_are_seeded_permutations_cut_to_whole_batches(dp_size):
    """Every epoch reads each example at most once, in an order drawn from (seed, epoch); a
    global batch holds the same examples at every DP size, and a run resumed from its
    consumed samples reads on exactly as the uninterrupted one."""
    from glm_megatron.data.sampler import build_data_loader
    from glm_megatron.finetune.data import EpochStream

    examples, epochs, global_batch, micro = list(range(21)), 3, 4, 2
    stream = EpochStream(examples, epochs, global_batch, seed=9)
    assert len(stream) == epochs * 20

    def global_batches(consumed):
        loaders = [iter(build_data_loader(stream, lambda items, _rng: items, consumed, micro,
                                          rank, dp_size, seed=9)) for rank in range(dp_size)]
        steps = (len(stream) - consumed) // global_batch
        per_rank = global_batch // (micro * dp_size)
        return [sorted(sum((next(loader) for _ in range(per_rank) for loader in loaders), []))
                for _ in range(steps)]

    batches = global_batches(0)
    reference = [sorted(stream[k] for k in range(s * 4, s * 4 + 4)) for s in range(15)]
    assert batches == reference
    for epoch in range(epochs):
        seen = sum(batches[epoch * 5:(epoch + 1) * 5], [])
        assert len(set(seen)) == 20
    assert [stream[k] for k in range(20)] != [stream[k] for k in range(20, 40)]
    assert global_batches(28) == batches[7:]
    assert EpochStream(examples, epochs, global_batch, seed=9)[33] == stream[33]


# Pretrained weights at any layout ------------------------------------------------------------
def _write_checkpoint(root, config, full, tp, pp):
    """`full` written in our checkpoint format at TP x PP (the converter's writer)."""
    from glm_megatron.convert.checkpoint import CheckpointWriter
    from glm_megatron.convert.schema import Head
    from glm_megatron.param_names import OUTPUT_LAYER, WORD_EMBEDDINGS
    writer = CheckpointWriter(root, config, Head(), tp, pp)
    for stage in range(pp):
        tensors = {name: full[name] for name in writer.stage_params(stage)
                   if name != OUTPUT_LAYER or OUTPUT_LAYER in full}
        if writer.needs_tied_copy(stage):
            tensors[OUTPUT_LAYER] = full[WORD_EMBEDDINGS]
        writer.write_stage(stage, tensors)
    writer.finish()


def _full_weights(config, seed):
    from glm_megatron.model.builder import build_model
    from glm_megatron.parallel.context import single_process_context
    model = build_model(config, single_process_context(), seed)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _load_at_tp2_pp2(cases):
    """A spawned rank: load each (checkpoint, full weights, config) into this rank's TP x PP
    slice and compare."""
    from glm_megatron.config import GLMConfig
    from glm_megatron.convert.checkpoint import CheckpointReader
    from glm_megatron.finetune.pretrained import load_weights
    from glm_megatron.model.builder import build_model_chunks
    from glm_megatron.parallel.context import initialize_distributed, shutdown
    from glm_megatron.parallel.param_roles import role_of
    from glm_megatron.parallel.sharding import shard
    ctx = initialize_distributed(2, 2, "cpu")
    try:
        for root, full_path, config_dict in cases:
            model = build_model_chunks(GLMConfig.from_dict(config_dict), ctx, seed=99)
            assert load_weights(model, CheckpointReader(root), ctx) == []
            full = torch.load(full_path)
            for name, param in model.named_parameters():
                role = role_of(param)
                expected = full[role.tied_copy_of or name]
                if role.partition is not None:
                    expected = shard(expected, *role.partition, ctx.tp_rank, ctx.tp_size)
                assert torch.equal(param.detach(), expected), name
    finally:
        shutdown()


def test_pretrained_weights_load_at_any_layout(tmp_path, ctx):
    """A checkpoint saved at TP=2 x PP=2 loads into one process and one saved by one process
    into TP=2 x PP=2, each rank reading its slice of the full tensors; a classifier gets the
    backbone and keeps its fresh score."""
    from glm_testing import tiny_config
    from glm_megatron.convert.checkpoint import CheckpointReader
    from glm_megatron.finetune.pretrained import load_weights
    from glm_megatron.model.builder import build_model
    from glm_megatron.model.chunks import ModelChunks

    config = tiny_config("glm-tiny")  # tied output, learned 2D positions, biases
    full = _full_weights(config, seed=3)
    _write_checkpoint(str(tmp_path / "tp2pp2"), config, full, tp=2, pp=2)
    model = ModelChunks([build_model(config, ctx, seed=4)])
    assert load_weights(model, CheckpointReader(str(tmp_path / "tp2pp2")), ctx) == []
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), full[name]), name

    classifier = build_model(config, ctx, seed=4, num_labels=3, pad_token_id=0)
    fresh_score = classifier.score.weight.detach().clone()
    assert load_weights(ModelChunks([classifier]), CheckpointReader(str(tmp_path / "tp2pp2")),
                        ctx) == ["score.weight"]
    assert torch.equal(classifier.score.weight.detach(), fresh_score)
    assert torch.equal(classifier.embedding.word_embeddings.weight.detach(),
                       full["embedding.word_embeddings.weight"])

    # Saved by one process, loaded at TP=2 x PP=2: the tied head's copy on the last stage
    # (GLM) and SwiGLU's [gate; up] and grouped QKV split over TP (ChatGLM3).
    cases = []
    for preset, weights in (("glm-tiny", full), ("chatglm3-tiny", None)):
        cfg = tiny_config(preset)
        weights = weights if weights is not None else _full_weights(cfg, seed=6)
        _write_checkpoint(str(tmp_path / preset), cfg, weights, tp=1, pp=1)
        torch.save(weights, tmp_path / f"{preset}.pt")
        cases.append((str(tmp_path / preset), str(tmp_path / f"{preset}.pt"), cfg.to_dict()))
    run_distributed(_load_at_tp2_pp2, 4, cases)


def test_classifier_export_fields():
    from glm_megatron.checkpoint_format import CheckpointMetadata
    from glm_megatron.finetune.labels import LabelSet
    from glm_megatron.finetune.settings import FinetuneSettings, hf_classifier_fields
    settings = FinetuneSettings("text-classification", "seq-cls", "rightmost-token",
                                LabelSet("single_label_classification", ("neg", "pos")), 0.0,
                                64, False)

    def fields():
        return hf_classifier_fields(CheckpointMetadata(1, 0, {}, finetune=settings.to_dict()))
    assert fields() == {"problem_type": "single_label_classification",
                        "id2label": {"0": "neg", "1": "pos"}, "label2id": {"neg": 0, "pos": 1}}
    settings.label_set = LabelSet("regression")
    assert fields() == {"problem_type": "regression"}
    assert hf_classifier_fields(CheckpointMetadata(1, 0, {})) == {}
    assert FinetuneSettings.from_dict(settings.to_dict()) == settings
