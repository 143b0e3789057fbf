"""Chunked vocab-parallel cross entropy: the same per-token losses and gradients (hidden states
and output-layer weight) as megatron-core's `vocab_parallel_cross_entropy` on materialised fp32
logits, at one process (no torch.distributed group) and at TP=2, in fp32 and in bf16."""

import pytest
import torch
import torch.nn.functional as F

from multiprocess import run_distributed

SEQ, BATCH, HIDDEN, VOCAB = 7, 2, 16, 96
# 14 tokens: chunks of 3 leave a remainder; None is the default (one chunk here).
CHUNKS = (3, None)
BF16_TOLERANCE = dict(rtol=2e-2, atol=2e-3)


def _case(dtype: torch.dtype, seed: int = 0):
    """hidden [s, b, h], full weight [vocab, h], labels [b, s], upstream gradient [b, s] (CPU:
    the reference, megatron-core's loss, reduces over a gloo group)."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(SEQ, BATCH, HIDDEN, generator=g).to(dtype)
    weight = (0.5 * torch.randn(VOCAB, HIDDEN, generator=g)).to(dtype)
    labels = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)
    grad_loss = torch.rand(BATCH, SEQ, generator=g) + 0.5
    return hidden, weight, labels, grad_loss


def _with_grads(fn, hidden, weight, grad_loss):
    """(loss [b, s], grad of hidden, grad of weight) of fn(hidden, weight)."""
    hidden = hidden.clone().requires_grad_()
    weight = weight.clone().requires_grad_()
    loss = fn(hidden, weight)
    loss.backward(grad_loss)
    return loss.detach(), hidden.grad, weight.grad


def _megatron(labels):
    from megatron.core import tensor_parallel

    def loss(hidden, weight):
        logits = (hidden @ weight.t()).float()  # [s, b, vocab / tp], materialised in fp32
        return tensor_parallel.vocab_parallel_cross_entropy(logits, labels.t().contiguous()).t()
    return loss


def _chunked(labels, group, chunk_tokens):
    from glm_megatron.parallel.cross_entropy import chunked_vocab_parallel_cross_entropy
    return lambda hidden, weight: chunked_vocab_parallel_cross_entropy(
        hidden, weight, labels, group, chunk_tokens)


def _plain(labels, group, chunk_tokens):
    from glm_megatron.parallel.cross_entropy import vocab_parallel_cross_entropy
    return lambda hidden, weight: vocab_parallel_cross_entropy(
        hidden @ weight.t(), labels.t(), group, chunk_tokens).t()


def _compare_with_megatron(group, shard_of):
    """On this rank: ours (chunked and plain, every chunk size, fp32 and bf16) against
    megatron-core on the same weight shard; the loss also against torch's cross entropy on
    the full vocabulary in float64."""
    for dtype in (torch.float32, torch.bfloat16):
        hidden, weight, labels, grad_loss = _case(dtype)
        shard = shard_of(weight)
        reference = _with_grads(_megatron(labels), hidden, shard, grad_loss)
        full_logits = (hidden.double() @ weight.double().t()).transpose(0, 1)
        oracle = F.cross_entropy(full_logits.reshape(-1, VOCAB), labels.reshape(-1),
                                 reduction="none").view(BATCH, SEQ)
        tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else BF16_TOLERANCE
        # (In bf16 the reference's logits are rounded to bf16, the oracle's are not.)
        torch.testing.assert_close(reference[0].double(), oracle, **tolerance)
        for name, make in (("chunked", _chunked), ("plain", _plain)):
            for chunk_tokens in CHUNKS:
                ours = _with_grads(make(labels, group, chunk_tokens), hidden, shard, grad_loss)
                assert ours[0].dtype == torch.float32 and ours[0].shape == (BATCH, SEQ)
                for what, got, want in zip(("loss", "grad hidden", "grad weight"), ours,
                                           reference):
                    assert got.dtype == want.dtype, (name, what)
                    torch.testing.assert_close(
                        got, want, **(dict(rtol=1e-5, atol=1e-6) if what == "loss" else
                                      tolerance),
                        msg=lambda m: f"{name} {dtype} chunk={chunk_tokens} {what}: {m}")


def test_one_process_without_a_group(distributed_world):
    """Ours without any group; megatron-core's reference needs its (size-one) world."""
    _compare_with_megatron(None, lambda weight: weight)


def _tp_worker(tp: int):
    import glm_megatron  # noqa: F401
    from glm_megatron.parallel.context import initialize_distributed, shutdown

    ctx = initialize_distributed(tp, 1, "cpu")
    try:
        _compare_with_megatron(ctx.tp_group, lambda weight: weight.chunk(tp)[ctx.tp_rank])
    finally:
        shutdown()


def test_tensor_parallel_2():
    run_distributed(_tp_worker, 2, 2)


def test_chunk_size_must_be_positive():
    from glm_megatron.parallel.cross_entropy import chunked_vocab_parallel_cross_entropy
    hidden, weight, labels, _ = _case(torch.float32)
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunked_vocab_parallel_cross_entropy(hidden, weight, labels, None, chunk_tokens=0)
