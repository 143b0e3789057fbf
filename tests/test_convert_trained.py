"""Checkpoints of models we trained at TP=2: export to Hugging Face (every generation) and
continue training at another layout after `tools/checkpoint/reshard.py`.

- Each generation trains 2 steps at TP=2, is saved, and its logits on a blank-infilling batch
  (2D positions, sep) and a causal batch are recorded; transformers (native `glm`/`glm4`, or our
  remote code for the 2D-position generations) must compute the same logits from the export.
- The TP=2 x PP=1 x DP=1 checkpoints of GLM (tied, 2D learned positions) and ChatGLM3 (GQA,
  SwiGLU) are resharded and continue at TP=1 x PP=2 (GLM also interleaved, 2 virtual stages)
  and at DP=2 (with and without the distributed optimizer): the next two steps' losses equal
  the uninterrupted run's.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from glm_testing import (GENERATIONS, make_batch, make_trainer, micro_batches, step_loss,
                         tiny_config)
from multiprocess import run_distributed

pytestmark = pytest.mark.slow  # every generation trained at TP=2, resharded, continued

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools", "checkpoint")
GLOBAL_BATCH, MICRO_BATCH, LR = 4, 1, 1e-2
SAVED_AT, CONTINUE = 2, 2  # steps before the save, steps after it
LAYERS = 4
RESHARDED = ["glm-tiny", "chatglm3-tiny"]
# Generation -> the model_type its export loads as (2D-position generations: our remote code).
EXPORTED_AS = {"chatglm3-tiny": "glm", "glm4-0414-tiny": "glm4", "glm-tiny": "glm",
               "chatglm-6b-tiny": "chatglm"}
REMOTE = {"glm-tiny", "chatglm-6b-tiny"}
# Blank-infilling token ids recorded in the checkpoint (no tokenizer in this test).
MASK, SOP, EOP = 250, 251, 252
PROMPT = [5, 6, 7, MASK, 8, 9, 10, SOP]  # Part A with one blank, then the blank's sop
FILL_STEPS = 4


def tool(name: str, *args: str):
    result = subprocess.run([sys.executable, os.path.join(TOOLS, name), "--no-progress", *args],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def _setup(preset: str, tp: int, pp: int, distributed_optimizer: bool = False,
           virtual: int = 1):
    from glm_megatron.model.builder import build_model_chunks
    from glm_megatron.parallel.context import initialize_distributed
    from glm_megatron.parallel.random import seed_all

    ctx = initialize_distributed(tp, pp, "cpu")
    seed_all(ctx, 1234)
    config = tiny_config(preset, num_layers=LAYERS)
    model = build_model_chunks(config, ctx, 7, virtual_stages=virtual)
    trainer = make_trainer(ctx, model, GLOBAL_BATCH // (MICRO_BATCH * ctx.dp_size), lr=LR,
                           distributed_optimizer=distributed_optimizer)
    return config, model, trainer


def _train(trainer, steps) -> list[float]:
    ctx = trainer.ctx
    return [step_loss(trainer, micro_batches(step, ctx.dp_rank, ctx.dp_size, "blank",
                                             GLOBAL_BATCH, MICRO_BATCH))
            for step in steps]


def _full_logits(model, batch, group) -> torch.Tensor:
    with torch.no_grad():
        local = model.chunks[0].eval().logits(batch["tokens"], batch["position_ids"],
                                              batch.get("sep")).contiguous()
    parts = [torch.empty_like(local) for _ in range(torch.distributed.get_world_size(group))]
    torch.distributed.all_gather(parts, local, group=group)
    return torch.cat(parts, dim=-1).transpose(0, 1)


def _greedy_fill(model, group) -> list[int]:
    """Fill PROMPT's blank greedily with our model: the blank's tokens take the mask's position
    and block positions 1, 2, ...; Part A (before sop) is bidirectional."""
    ids, sep, mask_at = list(PROMPT), PROMPT.index(SOP), PROMPT.index(MASK)
    for _ in range(FILL_STEPS):
        part_b = len(ids) - sep
        positions = list(range(sep)) + [mask_at] * part_b
        blocks = [0] * sep + list(range(1, part_b + 1))
        batch = {"tokens": torch.tensor([ids]), "sep": torch.tensor([sep]),
                 "position_ids": torch.tensor([[positions, blocks]])}
        ids.append(int(_full_logits(model, batch, group)[0, -1].argmax()))
        if ids[-1] == EOP:
            break
    return ids


def _train_and_save_worker(out_dir: str):
    import glm_megatron  # noqa: F401
    from megatron.core import parallel_state as mpu
    from glm_megatron.parallel.context import shutdown
    from glm_megatron.checkpoint_format import TokenizerRecord
    from glm_megatron.training.checkpointing import TrainingState, save_checkpoint

    results = {}
    for preset in GENERATIONS:
        config, model, trainer = _setup(preset, 2, 1)
        _train(trainer, range(SAVED_AT))
        token_ids = {"mask": MASK, "sop": SOP, "eop": EOP, "pad": 0, "eos": 1}
        save_checkpoint(os.path.join(out_dir, preset), TrainingState(SAVED_AT, 8), model,
                        trainer.optimizer, None, config, trainer.ctx,
                        tokenizer=TokenizerRecord(special_tokens=token_ids))
        batches = {"blank": make_batch("blank", seed=11), "causal": make_batch("causal", seed=12)}
        group = trainer.ctx.tp_group
        logits = {kind: _full_logits(model, b, group) for kind, b in batches.items()}
        filled = _greedy_fill(model, group) if preset in REMOTE else None
        continued = (_train(trainer, range(SAVED_AT, SAVED_AT + CONTINUE))
                     if preset in RESHARDED else None)
        results[preset] = dict(batches=batches, logits=logits, continued=continued, filled=filled)
        mpu.destroy_model_parallel()
    if torch.distributed.get_rank() == 0:
        torch.save(results, os.path.join(out_dir, "results.pt"))
    shutdown()


def _continue_worker(jobs: list[dict], out_dir: str):
    import glm_megatron  # noqa: F401
    from megatron.core import parallel_state as mpu
    from glm_megatron.parallel.context import shutdown
    from glm_megatron.training.checkpointing import load_checkpoint

    losses = {}
    for job in jobs:
        _, model, trainer = _setup(job["preset"], job["tp"], job["pp"],
                                   job.get("distributed_optimizer", False), job.get("virtual", 1))
        progress = load_checkpoint(job["ckpt"], model, trainer.optimizer, None, trainer.ctx)
        assert progress.iteration == SAVED_AT
        losses[job["name"]] = _train(trainer, range(SAVED_AT, SAVED_AT + CONTINUE))
        mpu.destroy_model_parallel()
    if torch.distributed.get_rank() == 0:
        torch.save(losses, os.path.join(out_dir, "continued.pt"))
    shutdown()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    run_distributed(_train_and_save_worker, 2, str(out))
    return out, torch.load(out / "results.pt", weights_only=False)


def test_reshard_continues_at_other_layouts(trained):
    out, results = trained
    jobs = []
    for preset in RESHARDED:
        source = str(out / preset)
        for tp, pp, *extra in ((1, 2), (1, 1), (1, 2, "--target-num-layers-per-virtual-pipeline-"
                                                   "stage", "1")):
            target = str(out / f"{preset}-tp{tp}-pp{pp}{'-v' if extra else ''}")
            tool("reshard.py", "--load-dir", source, "--save-dir", target,
                 "--target-tensor-parallel-size", str(tp),
                 "--target-pipeline-parallel-size", str(pp), *extra)
        jobs.append(dict(name=f"{preset} tp1 pp2", preset=preset, tp=1, pp=2,
                         ckpt=str(out / f"{preset}-tp1-pp2")))
        # World of 2 at TP=1 x PP=1: data parallel over 2 ranks.
        jobs.append(dict(name=f"{preset} dp2", preset=preset, tp=1, pp=1,
                         ckpt=str(out / f"{preset}-tp1-pp1")))
        jobs.append(dict(name=f"{preset} dp2 distributed optimizer", preset=preset, tp=1, pp=1,
                         distributed_optimizer=True, ckpt=str(out / f"{preset}-tp1-pp1")))
    jobs.append(dict(name="glm-tiny tp1 pp2 interleaved", preset="glm-tiny", tp=1, pp=2,
                     virtual=2, ckpt=str(out / "glm-tiny-tp1-pp2-v")))
    run_distributed(_continue_worker, 2, jobs, str(out))
    continued = torch.load(out / "continued.pt")
    for job in jobs:
        reference = results[job["preset"]]["continued"]
        for a, b in zip(reference, continued[job["name"]]):
            assert abs(a - b) < 2e-5 * max(1.0, abs(a)), (job["name"], reference,
                                                         continued[job["name"]])


def _export(source: str, target: str, *extra: str):
    tool("convert.py", "--direction", "megatron-to-hf", "--load-dir", source,
         "--save-dir", target, *extra)


def _load_export(preset: str, target: str, auto_class: str = "AutoModelForCausalLM"):
    import transformers
    auto = getattr(transformers, auto_class)
    model = auto.from_pretrained(target, trust_remote_code=preset in REMOTE).eval()
    assert model.config.model_type == EXPORTED_AS[preset]
    return model


def _blank_logits(preset: str, model, blank: dict) -> torch.Tensor:
    if preset in REMOTE:  # 2D positions [b, 2, s] and sep, as GLM's own code takes them
        return model(input_ids=blank["tokens"], position_ids=blank["position_ids"],
                     attention_mask=blank["sep"]).logits
    # The 1D-RoPE generations: positions of the first row, GLM's mask (Part A bidirectional,
    # Part B causal) as a 4D additive mask.
    rows = torch.arange(blank["tokens"].shape[1])
    allowed = (rows[None, :] <= rows[:, None])[None] | (rows[None, None, :] < blank["sep"][:, None, None])
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    return model(input_ids=blank["tokens"], position_ids=blank["position_ids"][:, 0],
                 attention_mask=mask[:, None]).logits


@pytest.mark.parametrize("preset", GENERATIONS)
def test_export_computes_our_logits(trained, preset, monkeypatch):
    out, results = trained
    target = str(out / f"{preset}-hf")
    _export(str(out / preset), target)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _load_export(preset, target)
    case = results[preset]
    causal, blank = case["batches"]["causal"], case["batches"]["blank"]
    with torch.no_grad():
        extra = {"attention_mask": torch.zeros(causal["tokens"].shape[0], dtype=torch.long)} \
            if preset in REMOTE else {}  # sep 0: no Part A, causal throughout
        logits = model(input_ids=causal["tokens"], position_ids=causal["position_ids"],
                       **extra).logits
        torch.testing.assert_close(logits, case["logits"]["causal"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(_blank_logits(preset, model, blank), case["logits"]["blank"],
                                   rtol=1e-4, atol=1e-5)
    # Importing the export (native or remote-code layout) gives our checkpoint back bit for bit.
    from glm_megatron.convert.checkpoint import CheckpointReader
    tool("convert.py", "--direction", "hf-to-megatron", "--load-dir", target, "--save-dir",
         str(out / f"{preset}-reimported"), "--target-tensor-parallel-size", "2",
         "--target-pipeline-parallel-size", "2")
    original = CheckpointReader(str(out / preset))
    reimported = CheckpointReader(str(out / f"{preset}-reimported"))
    assert reimported.config == original.config
    names = [n for group in ["pre", *range(LAYERS), "post"] for n in original.group_names(group)]
    assert names == [n for group in ["pre", *range(LAYERS), "post"]
                     for n in reimported.group_names(group)]
    for name, value in original.read(names).items():
        assert torch.equal(reimported.read([name])[name], value), name
    if preset in REMOTE:
        # generate fills the [MASK] from the sop as our model does (positions and the mask are
        # derived from the ids by the remote code).
        filled = model.generate(torch.tensor([PROMPT]), max_new_tokens=FILL_STEPS,
                                do_sample=False)
        assert filled[0].tolist() == case["filled"]
        if preset == "glm-tiny":  # GLM's published class is a seq2seq one
            assert type(_load_export(preset, target, "AutoModelForSeq2SeqLM")) is type(model)
