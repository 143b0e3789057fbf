"""The examples/ scripts run as written (shortened through their own environment knobs)."""

import os
import re
import subprocess

import pytest

from cli import ROOT

pytestmark = pytest.mark.slow  # torchrun with up to 8 processes


def _run_example(name: str, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    """Several ranks on one machine: on CPU (gloo), GPUs hidden, whatever GLM_TEST_DEVICE is."""
    return subprocess.run(["bash", os.path.join(ROOT, "examples", name)], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="", **env),
                          capture_output=True, text=True, timeout=timeout)


def test_blank_infilling_recipe_from_raw_text(tmp_path):
    """Tokenizer, preprocessing and blank-infilling pretraining (TP=2), then blank filling."""
    work = tmp_path / "work"
    result = _run_example("pretrain_blank_infilling.sh",
                          {"WORK": str(work), "TP": "2", "NPROC": "2", "TRAIN_ITERS": "4",
                           "EVAL_INTERVAL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    for made in ("corpus.jsonl", "tokenizer.model", "corpus_text_document.bin",
                 "corpus_text_document.idx", "checkpoints/latest_checkpointed_iteration.txt"):
        assert (work / made).is_file(), made
    assert "layout TP=2 x PP=1 x DP=1" in result.stdout
    assert "objective blank-infilling" in result.stdout
    assert re.search(r"validation loss at iteration 4 \| lm loss value", result.stdout)
    # The blank filled by tools/generate.py is the one the trained model fills in-process.
    from glm_megatron.convert.checkpoint import CheckpointReader
    from glm_megatron.data.tokenizer import GLMTokenizer
    from glm_megatron.generation import fill_blanks, load_model
    text = "If the file cannot be opened, an [MASK] is raised."
    model = load_model(CheckpointReader(str(work / "checkpoints")))
    (span,) = fill_blanks(model, GLMTokenizer(str(work / "tokenizer.model")), text)
    assert f"{text}\n  blank 1: {span!r}\n" in result.stdout


def test_glm10b_3d_layout_with_a_tiny_preset(tmp_path):
    """TP 2 x PP 2 x DP 2 with the distributed optimizer, sequence parallelism and full
    recomputation, as the README's one-machine command runs it (8 gloo processes)."""
    result = _run_example("pretrain_glm10b_3d.sh",
                          {"PRESET": "glm-tiny", "TP": "2", "PP": "2", "NPROC": "8",
                           "SEQ_LENGTH": "128", "TRAIN_ITERS": "2", "GLOBAL_BATCH": "8",
                           "RUN_DIR": str(tmp_path / "run")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "layout TP=2 x PP=2 x DP=2" in result.stdout
    assert re.search(r"iteration\s+2/\s+2 \|", result.stdout)
    assert (tmp_path / "run" / "checkpoints" / "latest_checkpointed_iteration.txt").is_file()


def test_tp2_dp2(tmp_path):
    result = _run_example("pretrain_tp2_dp2.sh",
                          {"TRAIN_ITERS": "2", "RUN_DIR": str(tmp_path / "run")}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "layout TP=2 x PP=1 x DP=2" in result.stdout
    assert re.search(r"iteration\s+2/\s+2 \|", result.stdout)


def test_finetune_wordnet(tmp_path, pretrained_checkpoint):
    """The WordNet example with the sequence-classification head, one epoch, from the session's
    briefly pretrained built-in run."""
    run = tmp_path / "run"
    result = _run_example("finetune_wordnet.sh",
                          {"HEAD": "seq-cls", "EPOCHS": "1", "PRETRAINED": pretrained_checkpoint,
                           "RUN_DIR": str(run)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "head seq-cls (rightmost-token), 1 epochs of 125 iterations" in result.stdout
    assert re.search(r"validation at iteration 125 \| loss: \S+ \| accuracy: \S+ \| macro-f1",
                     result.stdout)
    assert (run / "checkpoints" / "best" / "latest_checkpointed_iteration.txt").is_file()
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 402


def test_finetune_superglue_sample(tmp_path, pretrained_checkpoint):
    """The SuperGLUE recipe on the hand-written COPA sample: multi-token cloze, mirrored
    training examples."""
    run = tmp_path / "run"
    result = _run_example("finetune_superglue.sh",
                          {"TASK": "copa", "EPOCHS": "1", "PRETRAINED": pretrained_checkpoint,
                           "RUN_DIR": str(run)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train: 6 examples" in result.stdout and "head cloze (multi-token)" in result.stdout
    assert re.search(r"validation at iteration 3 \| loss: \S+ \| accuracy: \S+ \| examples: 3",
                     result.stdout)
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 3
