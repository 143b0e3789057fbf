"""finetune_glm.py end to end, as a user runs it: every layout equals one process, resume is
bit-exact, time limits and Ctrl-C stop cleanly, zero-shot evaluation, learning on the shipped WordNet data with both heads, clear
errors on bad input, and export of a finetuned classifier to transformers."""

import json
import os
import re
import signal

import pytest
import torch

from cli import FINETUNE, ROOT, assert_identical, run_finetune, start_pretrain, wait_for_line
from glm_megatron.checkpoint_format import LOCK_FILE

WORDNET = os.path.join(ROOT, "data", "finetune", "wordnet")
SUPERSENSE = ("--task", "text-classification", "--seq-length", "128")


def parse_log(stdout: str) -> dict:
    """{"train": {iteration: loss}, "validation": {iteration: (loss, {metric: value})}}."""
    train = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
        r"iteration\s+(\d+)/\s*\d+ \|.*?lm loss: (\S+)", stdout)}
    validation = {}
    for m in re.finditer(r" validation at iteration (\d+) \| loss: (\S+) \| (.*?) \| "
                         r"examples: \d+ \|", stdout):
        metrics = dict(item.split(": ") for item in m.group(3).split(" | "))
        validation[int(m.group(1))] = (float(m.group(2)),
                                       {k: float(v) for k, v in metrics.items()})
    return {"train": train, "validation": validation}


def read_predictions(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def subset(path, lines: int, target) -> str:
    with open(path) as f:
        target.write_text("".join(f.readlines()[:lines]))
    return str(target)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """64 training and 20 validation examples of the WordNet supersense task."""
    folder = tmp_path_factory.mktemp("data")
    return (subset(os.path.join(WORDNET, "supersense_train.jsonl"), 64, folder / "train.jsonl"),
            subset(os.path.join(WORDNET, "supersense_valid.jsonl"), 20, folder / "valid.jsonl"))


# Letters after a space are single tokens of the built-in tokenizer: single-token scoring.
LETTERS = [f"--verbalizer={label}={letter}" for letter, label in
           zip("abcdef", ("animal", "artifact", "food", "location", "person", "plant"))]
HEADS = {"cloze": ["--head", "cloze"], "single-token": ["--head", "cloze", *LETTERS],
         "seq-cls": ["--head", "seq-cls"]}
# Each head under TP (with sequence parallelism for the two heads that score one position) and
# the heads that run on the pipeline under PP; data parallelism is the heads' business only
# through the distributed optimizer's shards.
LAYOUTS = [("cloze", "tp2", ["--tensor-model-parallel-size", "2"]),
           ("cloze", "dp2-distributed-optimizer", ["--use-distributed-optimizer"]),
           ("cloze", "pp2", ["--pipeline-model-parallel-size", "2"]),
           ("single-token", "pp2", ["--pipeline-model-parallel-size", "2"]),
           ("single-token", "tp2-sequence-parallel", ["--tensor-model-parallel-size", "2",
                                                      "--sequence-parallel"]),
           ("seq-cls", "tp2", ["--tensor-model-parallel-size", "2"]),
           ("seq-cls", "tp2-sequence-parallel", ["--tensor-model-parallel-size", "2",
                                                 "--sequence-parallel"]),
           ("seq-cls", "dp2-distributed-optimizer", ["--use-distributed-optimizer"])]


def _small_run(pretrained, data, head, folder, extra=(), nproc=1):
    train, valid = data
    predictions = folder / "predictions.jsonl"
    result = run_finetune([*SUPERSENSE, "--pretrained-checkpoint", pretrained,
                           "--train-data", train, "--valid-data", valid, *HEADS[head],
                           "--epochs", "1", "--lr", "1e-3", "--micro-batch-size", "2",
                           "--global-batch-size", "8", "--log-interval", "1",
                           "--eval-interval", "4", "--predictions", str(predictions),
                           *extra], nproc=nproc)
    assert result.returncode == 0, result.stderr[-3000:]
    return parse_log(result.stdout), read_predictions(predictions), result.stdout


@pytest.fixture(scope="module")
def one_process(pretrained_checkpoint, small_data, tmp_path_factory):
    """The single-process run of each head, made when first asked for."""
    runs = {}

    def get(head):
        if head not in runs:
            runs[head] = _small_run(pretrained_checkpoint, small_data, head,
                                    tmp_path_factory.mktemp(head))
        return runs[head]
    return get


@pytest.mark.parametrize("head,layout,flags", LAYOUTS, ids=[f"{h}-{n}" for h, n, _ in LAYOUTS])
def test_layouts_equal_one_process(pretrained_checkpoint, small_data, one_process, tmp_path,
                                   head, layout, flags):
    """Training losses, validation loss and metrics and every predicted score equal the
    one-process run (fp32; losses to float rounding)."""
    log, predictions, stdout = _small_run(pretrained_checkpoint, small_data, head, tmp_path,
                                          flags, nproc=2)
    reference, reference_predictions, reference_stdout = one_process(head)
    assert ("single-token" in stdout) == (head == "single-token")
    tp, pp = 1 + layout.startswith("tp2"), 1 + (layout == "pp2")
    assert f"layout TP={tp} x PP={pp} x DP={2 // (tp * pp)}" in stdout
    assert sorted(log["train"]) == list(range(1, 9))
    assert log["train"] == pytest.approx(reference["train"], rel=2e-6)
    assert sorted(log["validation"]) == [0, 4, 8]
    for iteration, (loss, metrics) in reference["validation"].items():
        assert log["validation"][iteration][0] == pytest.approx(loss, rel=2e-6)
        assert log["validation"][iteration][1] == metrics
    assert [p["index"] for p in predictions] == list(range(20))
    assert [p["label"] for p in predictions] == [p["label"] for p in reference_predictions]
    for ours, theirs in zip(predictions, reference_predictions):
        assert ours["scores"] == pytest.approx(theirs["scores"], rel=1e-4, abs=1e-4)


def _checkpoint_files(root, iteration):
    """Weights, optimizer state and schedule of an iteration, and its metadata."""
    path = os.path.join(root, f"iter_{iteration:07d}")
    files = {name: torch.load(os.path.join(path, "mp_rank_00", name), weights_only=False)
             for name in os.listdir(os.path.join(path, "mp_rank_00"))}
    files["metadata"] = json.load(open(os.path.join(path, "metadata.json")))
    return files


def test_resume_mid_epoch_is_bit_exact(pretrained_checkpoint, small_data, tmp_path):
    """Two epochs straight, or stopped in the middle of the first (--exit-interval) and
    resumed with --load: the same losses, validations, best checkpoint and, bit for bit, the
    same weights, optimizer state and recorded best result."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    train, valid = small_data
    common = [*SUPERSENSE, "--pretrained-checkpoint", pretrained_checkpoint, "--train-data",
              train, "--valid-data", valid, "--epochs", "2", "--lr", "1e-3",
              "--micro-batch-size", "2", "--global-batch-size", "8", "--log-interval", "1",
              "--eval-interval", "3"]
    full = run_finetune(common + ["--save", str(straight)])
    assert full.returncode == 0, full.stderr[-3000:]
    first = run_finetune(common + ["--save", str(split), "--exit-interval", "5"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(parse_log(first.stdout)["train"]) == [1, 2, 3, 4, 5]
    second = run_finetune(common + ["--save", str(split), "--load", str(split)])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "loaded" in second.stdout and "at iteration 5" in second.stdout
    straight_log, parts = parse_log(full.stdout), [parse_log(r.stdout) for r in (first, second)]
    for key in ("train", "validation"):
        assert {**parts[0][key], **parts[1][key]} == straight_log[key]
    assert sorted(straight_log["validation"]) == [0, 3, 6, 9, 12, 15, 16]
    assert_identical(_checkpoint_files(str(straight), 16), _checkpoint_files(str(split), 16))
    best = json.load(open(straight / "iter_0000016" / "metadata.json"))["finetune"]
    assert best["best"]["iteration"] in straight_log["validation"]
    assert re.search(rf"best validation accuracy: \S+ at iteration {best['best']['iteration']}",
                     second.stdout)
    assert os.listdir(split / "best") == os.listdir(straight / "best")


def test_stops_cleanly_and_says_how_to_resume(pretrained_checkpoint, small_data, tmp_path):
    """As pretraining does: a --save that cannot be written is refused before training; a time
    limit (--exit-duration-in-mins) saves and exits 0; Ctrl-C stops with one line naming the
    last save and the command that resumes it, exit 130."""
    train, valid = small_data
    common = [*SUPERSENSE, "--pretrained-checkpoint", pretrained_checkpoint, "--train-data",
              train, "--valid-data", valid, "--micro-batch-size", "2", "--global-batch-size",
              "8", "--log-interval", "1"]
    (tmp_path / "a-file").write_text("")
    refused = run_finetune(common + ["--save", str(tmp_path / "a-file")])
    assert refused.returncode == 2 and "iteration" not in refused.stdout
    assert refused.stderr.strip() == \
        f"finetune_glm.py: error: --save {tmp_path / 'a-file'} is a file; give a directory"
    timed = run_finetune(common + ["--save", str(tmp_path / "timed"),
                                   "--exit-duration-in-mins", "0.001"])
    assert timed.returncode == 0, timed.stderr[-3000:]
    assert "reached --exit-duration-in-mins 0.001: saving iteration 1 and exiting" in \
        timed.stdout
    assert (tmp_path / "timed" / "latest_checkpointed_iteration.txt").read_text() == "1"

    save, log = str(tmp_path / "run"), str(tmp_path / "log.txt")
    run = start_pretrain(common + ["--epochs", "1000", "--save-interval", "2", "--save", save],
                         log, script=FINETUNE)
    try:
        wait_for_line(log, r"saved checkpoint at iteration 2 ", run)
        locked = os.path.exists(os.path.join(save, LOCK_FILE))  # no second run shares --save
    finally:
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
        status = run.wait(timeout=120)
    output = open(log).read()
    assert status == 130 and "Traceback" not in output, output[-3000:]
    assert locked and not os.path.exists(os.path.join(save, LOCK_FILE))
    (line,) = [line for line in output.splitlines() if "interrupted" in line]
    saved = int(open(os.path.join(save, "latest_checkpointed_iteration.txt")).read())
    assert re.fullmatch(rf"finetune_glm.py: interrupted at iteration \d+; the last saved "
                        rf"iteration is {saved} in {save}; resume with: python "
                        rf"finetune_glm.py .*--save {save} --load {save}", line), line


def test_zero_shot_evaluation(pretrained_checkpoint, tmp_path):
    """--epochs 0 scores the pretrained model with the cloze head: validation metrics in the
    log and TensorBoard, predictions of unlabelled test data, and no checkpoint."""
    valid = subset(os.path.join(WORDNET, "word_choice_valid.jsonl"), 30, tmp_path / "v.jsonl")
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items()
                                        if k != "label"}) + "\n"
                            for line in open(valid).readlines()[:9]))
    result = run_finetune(["--task", "multiple-choice", "--pretrained-checkpoint",
                           pretrained_checkpoint, "--valid-data", valid, "--test-data",
                           str(test), "--epochs", "0", "--seq-length", "96", "--predictions",
                           str(tmp_path / "p.jsonl"), "--tensorboard-dir",
                           str(tmp_path / "tb"), "--save", str(tmp_path / "save")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "evaluation only (--epochs 0)" in result.stdout
    (loss, metrics), = parse_log(result.stdout)["validation"].values()
    assert loss > 0 and set(metrics) == {"accuracy"}
    predictions = read_predictions(tmp_path / "p.jsonl")
    assert [p["index"] for p in predictions] == list(range(9))
    assert all(len(p["scores"]) == 4 and p["label"] == max(range(4), key=p["scores"].__getitem__)
               for p in predictions)
    assert not (tmp_path / "save").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"validation accuracy", "validation loss"} <= set(events.Tags()["scalars"])
    assert events.Scalars("validation accuracy")[0].value == pytest.approx(metrics["accuracy"],
                                                                          abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["seq-cls", "cloze"])
def test_learns_wordnet_supersenses(pretrained_checkpoint, tmp_path, head):
    """From the briefly pretrained built-in run, one epoch on the shipped WordNet data beats
    the majority class (1/6 of the balanced validation set) by far; the best checkpoint is kept
    and named, predictions are written, TensorBoard has the validation tags."""
    save, predictions = tmp_path / "save", tmp_path / "predictions.jsonl"
    result = run_finetune([*SUPERSENSE, "--pretrained-checkpoint", pretrained_checkpoint,
                           "--train-data", os.path.join(WORDNET, "supersense_train.jsonl"),
                           "--valid-data", os.path.join(WORDNET, "supersense_valid.jsonl"),
                           "--head", head, "--epochs", "1", "--lr", "1e-3",
                           "--log-interval", "25", "--save", str(save), "--predictions",
                           str(predictions), "--tensorboard-dir", str(tmp_path / "tb")],
                          timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    validation = parse_log(result.stdout)["validation"]
    assert sorted(validation) == [0, 125]
    best_iteration, (_, best) = max(validation.items(), key=lambda v: v[1][1]["accuracy"])
    assert best["accuracy"] > 0.45 and best["macro-f1"] > 0.4
    assert f"best validation accuracy: {best['accuracy']:.4f} at iteration {best_iteration}" \
        in result.stdout
    assert open(save / "best" / "latest_checkpointed_iteration.txt").read() == \
        str(best_iteration)
    assert sorted(os.listdir(save / "best")) == [f"iter_{best_iteration:07d}",
                                                 "latest_checkpointed_iteration.txt"]
    rows = read_predictions(predictions)
    labels = [json.loads(line)["label"] for line in
              open(os.path.join(WORDNET, "supersense_valid.jsonl"))]
    assert [r["index"] for r in rows] == list(range(402))
    assert sum(r["label"] == y for r, y in zip(rows, labels)) / 402 == \
        pytest.approx(best["accuracy"], abs=1e-4)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"validation accuracy", "validation macro-f1", "validation loss",
            "lm loss"} <= set(events.Tags()["scalars"])


# Bad input -----------------------------------------------------------------------------------
def _bad_files(folder):
    train = os.path.join(WORDNET, "supersense_train.jsonl")
    rows = [json.loads(line) for line in open(os.path.join(WORDNET,
                                                           "supersense_valid.jsonl"))][:5]
    files = {"train": subset(train, 64, folder / "train.jsonl")}
    for name, change in (("missing", lambda r: {"label": r["label"]}),
                         ("unknown", lambda r: {**r, "label": "mineral"})):
        bad = [change(r) if i == 3 else r for i, r in enumerate(rows)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
        files[name] = str(folder / f"{name}.jsonl")
    (folder / "empty.jsonl").write_text("")
    files["empty"] = str(folder / "empty.jsonl")
    files["valid"] = subset(os.path.join(WORDNET, "supersense_valid.jsonl"), 5,
                            folder / "valid.jsonl")
    files["choices"] = subset(os.path.join(WORDNET, "word_choice_train.jsonl"), 16,
                              folder / "choices.jsonl")
    (folder / "tensorboard").mkdir()
    files["no-model"] = str(folder / "tensorboard")
    return files


BAD_INPUTS = [
    ("missing-field", ["--valid-data", "{missing}"], 1,
     "missing.jsonl line 4: missing field 'text'"),
    ("unknown-label", ["--valid-data", "{unknown}"], 1,
     "unknown.jsonl line 4: label 'mineral' is not one of the training data's labels"),
    ("empty-file", ["--valid-data", "{empty}"], 1, "empty.jsonl: no examples (the file is empty)"),
    ("verbalizer-label", ["--verbalizer", "mineral=rock"], 1,
     "--verbalizer 'mineral=rock': label 'mineral' is not one of the task's labels"),
    ("single-token-asked", ["--no-multi-token"], 1,
     "--verbalizer: label 'animal' is answered by 'animal', 3 tokens ['▁an', 'i', 'mal']"),
    ("too-long", ["--seq-length", "24"], 1,
     "train.jsonl: 58 of 64 examples are longer than --seq-length 24 tokens"),
    ("no-model", ["--pretrained-checkpoint", "{no-model}"], 1,
     "--pretrained-checkpoint {no-model} is not a glm_megatron checkpoint"),
    ("seq-cls-multiple-choice", ["--task", "multiple-choice", "--train-data", "{choices}",
                                 "--valid-data", "{choices}", "--head", "seq-cls"], 1,
     "--head seq-cls cannot score --task multiple-choice"),
    ("seq-cls-pipeline", ["--head", "seq-cls", "--pipeline-model-parallel-size", "2"], 2,
     "--head seq-cls runs without pipeline parallelism"),
    ("zero-shot-seq-cls", ["--head", "seq-cls", "--epochs", "0"], 1,
     "has no trained classifier for --head seq-cls; use --head cloze"),
    ("batch-larger-than-data", ["--global-batch-size", "128", "--micro-batch-size", "8"], 1,
     "--global-batch-size 128 is larger than the 64 examples of --train-data"),
]


@pytest.mark.parametrize("name,flags,nproc,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_fails_cleanly(pretrained_checkpoint, tmp_path, name, flags, nproc, message):
    """One line naming the file or flag and the fix, exit status 2, nothing written."""
    files = _bad_files(tmp_path)
    save, logs, predictions = tmp_path / "save", tmp_path / "tb", tmp_path / "p.jsonl"
    args = [*SUPERSENSE, "--pretrained-checkpoint", pretrained_checkpoint, "--train-data",
            files["train"], "--valid-data", files["valid"], "--epochs", "1",
            "--global-batch-size", "8", "--micro-batch-size", "4", "--save", str(save),
            "--tensorboard-dir", str(logs), "--predictions", str(predictions)]
    args += [flag.format(**files) for flag in flags]
    result = run_finetune(args, nproc=nproc)
    assert result.returncode == (2 if nproc == 1 else 1), result.stderr[-3000:]  # torchrun: 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    # (torchrun's ranks may write their lines into one)
    assert errors and all(message.format(**files) in line for line in errors), \
        result.stderr[-3000:]
    assert not save.exists() and not logs.exists() and not predictions.exists()


# Export --------------------------------------------------------------------------------------
EXPORT_DATA = {
    "single_label_classification": lambda i: f"label{i % 3}",
    "regression": lambda i: 0.5 * (i % 4) - 0.25,
    "multi_label_classification": lambda i: [f"tag{j}" for j in range(3) if (i >> j) & 1],
}


@pytest.mark.parametrize("problem_type", list(EXPORT_DATA))
def test_classifier_exports_to_transformers(pretrained_checkpoint, tmp_path, problem_type):
    """A finetuned seq-cls checkpoint exports to transformers' GlmForSequenceClassification
    with the problem type and label names of the data, and transformers computes the logits
    finetune_glm.py predicted for every validation example."""
    from transformers import AutoModelForSequenceClassification
    from glm_megatron.data.tokenizer import GLMTokenizer
    from glm_megatron.finetune import SequenceClassificationCollator, SequenceEncoder, build_task
    texts = [json.loads(line)["text"] for line in
             open(os.path.join(WORDNET, "supersense_train.jsonl")).readlines()[:24]]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": EXPORT_DATA[problem_type](i)}) + "\n"
                            for i, t in enumerate(texts)))
    save, hf_dir = tmp_path / "save", tmp_path / "hf"
    result = run_finetune([*SUPERSENSE, "--pretrained-checkpoint", pretrained_checkpoint,
                           "--train-data", str(data), "--valid-data", str(data),
                           "--head", "seq-cls", "--epochs", "1", "--lr", "1e-3",
                           "--global-batch-size", "8", "--micro-batch-size", "4",
                           "--save", str(save), "--predictions", str(tmp_path / "p.jsonl")])
    assert result.returncode == 0, result.stderr[-3000:]
    import subprocess
    import sys
    exported = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "checkpoint",
                                                            "convert.py"),
                               "--direction", "megatron-to-hf", "--load-dir",
                               str(save / "best"), "--save-dir", str(hf_dir)],
                              cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT))
    assert exported.returncode == 0, exported.stderr[-3000:]

    hf = AutoModelForSequenceClassification.from_pretrained(str(hf_dir)).eval()
    assert type(hf).__name__ == "GlmForSequenceClassification"
    assert hf.config.problem_type == problem_type
    task = build_task("text-classification", train_data=str(data))
    names = task.label_set.names
    assert hf.config.num_labels == (1 if problem_type == "regression" else len(names))
    if problem_type != "regression":
        assert hf.config.id2label == dict(enumerate(names))
        assert hf.config.label2id == {name: i for i, name in enumerate(names)}
    metadata = _metadata(save / "best")
    tokenizer = GLMTokenizer(metadata["tokenizer"]["path"])
    encoded = SequenceEncoder(tokenizer, 128, prepend_cls=False).encode(
        task.sequence_examples(str(data), "valid"), str(data))
    batch = SequenceClassificationCollator(128, task.label_set.problem_type,
                                           task.label_set.num_labels, tokenizer)(encoded.examples)
    with torch.no_grad():
        logits = hf(input_ids=batch["tokens"]).logits
    predicted = torch.tensor([p["scores"] for p in read_predictions(tmp_path / "p.jsonl")])
    torch.testing.assert_close(logits, predicted.view_as(logits), rtol=1e-4, atol=1e-5)
    if problem_type != "single_label_classification":
        return
    # The best checkpoint evaluated as it is (--epochs 0, the seq-cls head by default for a
    # classifier) predicts what the run predicted with it.
    again = run_finetune([*SUPERSENSE, "--pretrained-checkpoint", str(save / "best"),
                          "--valid-data", str(data), "--epochs", "0", "--predictions",
                          str(tmp_path / "again.jsonl")])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "head seq-cls" in again.stdout
    assert read_predictions(tmp_path / "again.jsonl") == read_predictions(tmp_path / "p.jsonl")


def _metadata(root):
    iteration = int(open(root / "latest_checkpointed_iteration.txt").read())
    return json.load(open(root / f"iter_{iteration:07d}" / "metadata.json"))
