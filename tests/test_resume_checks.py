"""Resume checks name the flag the user changed and the flag that accepts the change."""

import argparse
import dataclasses

import pytest

from glm_megatron.checkpoint_format import (CheckpointError, CheckpointMetadata, DataRecord,
                                            DataSource, ScheduleRecord, TokenizerRecord)
from glm_megatron.training.resume_checks import check_resume

DATA = DataRecord(sources=(DataSource("/data/a_text_document", 0.7, "1-2-aa"),
                           DataSource("/data/b_text_document", 0.3, "3-4-bb")),
                  split="969,30,1", seq_length=256, seed=1234, objective="causal",
                  global_batch_size=16, micro_batch_size=4)
SCHEDULE = ScheduleRecord(train_iters=100, lr=1e-3, min_lr=1e-4, lr_decay_style="cosine",
                          lr_decay_iters=100, lr_warmup_iters=10, lr_wsd_decay_iters=None,
                          lr_wsd_decay_style="linear", weight_decay=0.1)
SAVED = CheckpointMetadata(100, 1600, {}, tokenizer=TokenizerRecord("/t/tok.model", "abc", 8012),
                           data=DATA, schedule=SCHEDULE)


def _args(**flags) -> argparse.Namespace:
    values = dict(finetune=False, override_data_settings=False, override_tokenizer=False,
                  override_opt_param_scheduler=False, use_checkpoint_opt_param_scheduler=False)
    values.update(flags)
    return argparse.Namespace(**values)


def _check(args=None, data=DATA, schedule=SCHEDULE, sha="abc"):
    check_resume("ckpt", SAVED, args or _args(), config={}, data=data, schedule=schedule,
                 tokenizer_path="/t/other.model", tokenizer_sha256=sha)


def test_the_same_settings_resume():
    _check()
    moved = dataclasses.replace(DATA, sources=tuple(
        dataclasses.replace(s, prefix="/elsewhere/" + s.prefix.split("/")[-1])
        for s in DATA.sources))
    _check(data=moved)  # the same files, copied elsewhere


@pytest.mark.parametrize("change,message", [
    (dict(global_batch_size=32), "--global-batch-size 32 (checkpoint: 16)"),
    (dict(micro_batch_size=2), "--micro-batch-size 2 (checkpoint: 4)"),
    (dict(seq_length=512), "--seq-length 512 (checkpoint: 256)"),
    (dict(split="98,2,0"), "--split 98,2,0 (checkpoint: 969,30,1)"),
    (dict(seed=7), "--seed 7 (checkpoint: 1234)"),
    (dict(objective="blank-infilling"), "--objective blank-infilling (checkpoint: causal)"),
    (dict(sources=(DataSource("/data/a_text_document", 0.5, "1-2-aa"),
                   DataSource("/data/b_text_document", 0.5, "3-4-bb"))),
     "--data-path 0.5 /data/a_text_document 0.5 /data/b_text_document (checkpoint: 0.7 "
     "/data/a_text_document 0.3 /data/b_text_document)"),
    (dict(sources=(DataSource("/data/a_text_document", 0.7, "1-2-aa"),
                   DataSource("/data/b_text_document", 0.3, "9-9-cc"))), "--data-path"),
], ids=["global-batch", "micro-batch", "seq-length", "split", "seed", "objective", "blend",
        "rewritten-data"])
def test_a_changed_data_stream_is_refused_unless_overridden(change, message):
    data = dataclasses.replace(DATA, **change)
    with pytest.raises(CheckpointError) as refused:
        _check(data=data)
    assert message in str(refused.value)
    assert "--override-data-settings to accept the change" in str(refused.value)
    _check(_args(override_data_settings=True), data=data)
    _check(_args(finetune=True), data=data)  # a finetune run starts its data afresh


def test_the_schedule_names_the_flag_not_what_follows_from_it():
    longer = dataclasses.replace(SCHEDULE, train_iters=200, lr_decay_iters=200,
                                 lr_warmup_iters=20)
    with pytest.raises(CheckpointError) as refused:
        _check(schedule=longer)
    message = str(refused.value)
    assert "--train-iters 200 (checkpoint: 100):" in message
    assert "--lr-decay-iters" not in message and "--lr-warmup-iters" not in message
    assert "--override-opt_param-scheduler" in message
    # An explicit --lr-decay-iters change is named, with the warm-up that follows it left out.
    decay = dataclasses.replace(SCHEDULE, lr_decay_iters=80, lr_warmup_iters=8)
    with pytest.raises(CheckpointError, match=r"--lr-decay-iters 80 \(checkpoint: 100\):"):
        _check(schedule=decay)
    both = dataclasses.replace(longer, lr=3e-4)
    with pytest.raises(CheckpointError, match=r"--train-iters 200 \(checkpoint: 100\), --lr "
                                              r"0.0003 \(checkpoint: 0.001\):"):
        _check(schedule=both)
    for accept in ("override_opt_param_scheduler", "use_checkpoint_opt_param_scheduler"):
        _check(_args(**{accept: True}), schedule=both)


def test_another_tokenizer_is_refused_unless_overridden():
    with pytest.raises(CheckpointError, match=r"--tokenizer-model /t/other.model is not the "
                                              r"tokenizer the checkpoint was trained with "
                                              r"\(/t/tok.model.*--override-tokenizer"):
        _check(sha="def")
    with pytest.raises(CheckpointError):
        _check(_args(finetune=True), sha="def")  # the weights still index its vocabulary
    _check(_args(override_tokenizer=True), sha="def")


def test_another_architecture_names_a_few_differences_and_the_matching_preset():
    from glm_megatron.config import GLMConfig
    from glm_megatron.presets import PRESETS
    from glm_megatron.training.resume_checks import check_architecture
    saved = GLMConfig(**PRESETS["chatglm3-tiny"], vocab_size=8064).to_dict()
    current = GLMConfig(**PRESETS["glm-tiny"], vocab_size=8064).to_dict()
    check_architecture("--load ckpt", saved, saved)
    with pytest.raises(CheckpointError) as refused:
        check_architecture("--load ckpt", saved, current)
    message = str(refused.value)
    assert message.startswith("--load ckpt: the checkpoint is of another architecture "
                              "(--ffn-hidden-size 256 (checkpoint: 160), --num-query-groups 4 "
                              "(checkpoint: 2), ")
    assert message.count("(checkpoint:") == 3 and " more); " in message
    assert message.endswith("or pass --model-preset chatglm3-tiny")
