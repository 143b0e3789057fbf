"""Vocab-parallel cross entropy that never holds an fp32 copy of the whole logits.

Each tensor-parallel rank holds the logits of a contiguous vocabulary slice (the output layer's
weight shard [vocab / tp, h]). Per token, the loss is logsumexp(all logits) - logit[label]. Both
functions here work on row chunks of the tokens: a chunk's logits are upcast to fp32 only for
that chunk, each rank reduces them to two fp32 numbers per token (its slice's logsumexp and the
label's logit if the label is in its slice), and two collectives over the whole token range
combine the slices: a MAX and a SUM, whatever the chunk count.

- `vocab_parallel_cross_entropy(logits, labels, group)`: for callers that have the logits.
- `chunked_vocab_parallel_cross_entropy(hidden, weight, labels, group)`: the output layer's
  matmul fused in; the [s, b, vocab / tp] logits exist one chunk at a time, in forward and
  backward (which recomputes them), so the loss costs O(chunk x vocab / tp) memory. The last
  chunk's exp(logits - max), alive when the forward ends, is kept for the backward instead of
  recomputed: when all tokens fit one chunk (the usual case below ~2k tokens x 32k vocabulary
  per rank), the backward runs no logits matmul at all, at the same peak memory.

`group` is the tensor-parallel process group, or None for one process without
torch.distributed (no collective at all).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.distributed as dist

# Logit elements per chunk: the chunk's fp32 temporary is 256 MiB, large enough that the
# chunk's matmul runs at full rate on a GPU (e.g. ~450 tokens x 150k vocabulary).
DEFAULT_CHUNK_ELEMENTS = 2 ** 26


def _vocab_start(partition_size: int, group) -> int:
    return 0 if group is None else dist.get_rank(group) * partition_size


def _tokens_per_chunk(partition_size: int, chunk_tokens: Optional[int]) -> int:
    if chunk_tokens is not None:
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
        return chunk_tokens
    return max(1, DEFAULT_CHUNK_ELEMENTS // partition_size)


def _fp32_scratch(logits: torch.Tensor, private: bool) -> torch.Tensor:
    """An fp32 tensor of a chunk's logits that may be overwritten: the chunk itself when it is
    fp32 and `private` (made here, nobody else reads it), else a copy."""
    if logits.dtype == torch.float32 and private:
        return logits
    return logits.to(torch.float32, copy=True)


def _local_labels(labels: torch.Tensor, vocab_start: int, partition_size: int):
    """(column of each label in this slice [n, 1], clamped into it; whether it is there [n])."""
    local = labels - vocab_start
    here = (local >= 0) & (local < partition_size)
    return local.clamp(0, partition_size - 1)[:, None], here


class _ChunkStatistics(NamedTuple):
    logsumexp: torch.Tensor    # of this rank's vocabulary slice, fp32 [n]
    target: torch.Tensor       # the label's logit where it falls in the slice, else 0, fp32 [n]
    shifted_exp: torch.Tensor  # exp(logits - peak), fp32 [n, v]: the reduction's scratch
    peak: torch.Tensor         # the slice's max logit, fp32 [n]


def _local_statistics(logits: torch.Tensor, labels: torch.Tensor, vocab_start: int,
                      private: bool) -> _ChunkStatistics:
    """Of one chunk [n, v] (any float dtype) and its global label ids [n]. One fp32
    temporary of the chunk at most; `private` chunks are overwritten."""
    column, here = _local_labels(labels, vocab_start, logits.shape[-1])
    target = logits.gather(-1, column)[:, 0].float().masked_fill_(~here, 0.0)
    x = _fp32_scratch(logits, private)
    peak = x.amax(dim=-1)
    logsumexp = x.sub_(peak[:, None]).exp_().sum(dim=-1).log_().add_(peak)
    return _ChunkStatistics(logsumexp, target, x, peak)


def _combine(logsumexp: torch.Tensor, target: torch.Tensor, group):
    """Per token over all ranks: (global logsumexp, loss). Two collectives for all tokens."""
    if group is None:
        return logsumexp, logsumexp - target
    peak = logsumexp.clone()
    dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
    sums = torch.stack([(logsumexp - peak).exp_(), target])
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
    total = sums[0].log_().add_(peak)
    return total, total - sums[1]


def _softmax_grad(softmax: torch.Tensor, labels: torch.Tensor, grad_loss: torch.Tensor,
                  vocab_start: int) -> torch.Tensor:
    """(softmax - onehot(label)) x grad_loss, in place on the fp32 softmax [n, v]."""
    column, here = _local_labels(labels, vocab_start, softmax.shape[-1])
    # -1 at the label where it is in this slice; a scatter, not a nonzero (no host sync on GPU).
    softmax.scatter_add_(-1, column, here.to(softmax.dtype).neg_()[:, None])
    return softmax.mul_(grad_loss[:, None])


def _logits_grad(logits: torch.Tensor, labels: torch.Tensor, logsumexp: torch.Tensor,
                 grad_loss: torch.Tensor, vocab_start: int, private: bool) -> torch.Tensor:
    """d loss / d logits of one chunk, in the logits' dtype (computed in fp32; `private`
    chunks are overwritten)."""
    softmax = _fp32_scratch(logits, private).sub_(logsumexp[:, None]).exp_()
    grad = _softmax_grad(softmax, labels, grad_loss, vocab_start)
    if grad is logits:
        return grad
    # A private chunk's own buffer takes the result: no second chunk-sized tensor.
    return logits.copy_(grad) if private else grad.to(logits.dtype)


def _chunks(count: int, size: int):
    return [(start, min(start + size, count)) for start in range(0, count, size)]


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, group, chunk_tokens):
        shape = labels.shape
        logits2d, labels1d = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        start = _vocab_start(logits.shape[-1], group)
        spans = _chunks(labels1d.numel(), _tokens_per_chunk(logits.shape[-1], chunk_tokens))
        stats = [_local_statistics(logits2d[a:b], labels1d[a:b], start, private=False)
                 for a, b in spans]
        logsumexp, loss = _combine(torch.cat([s.logsumexp for s in stats]),
                                   torch.cat([s.target for s in stats]), group)
        ctx.save_for_backward(logits, labels1d, logsumexp)
        ctx.vocab_start, ctx.spans = start, spans
        return loss.view(shape)

    @staticmethod
    def backward(ctx, grad_loss):
        logits, labels, logsumexp = ctx.saved_tensors
        logits2d = logits.reshape(-1, logits.shape[-1])
        grad_loss = grad_loss.reshape(-1).float()
        grad = torch.empty_like(logits2d)
        for a, b in ctx.spans:
            grad[a:b] = _logits_grad(logits2d[a:b], labels[a:b], logsumexp[a:b], grad_loss[a:b],
                                     ctx.vocab_start, private=False)
        return grad.view_as(logits), None, None, None


def vocab_parallel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, group,
                                 chunk_tokens: Optional[int] = None) -> torch.Tensor:
    """Per-token cross entropy (fp32, shape of `labels`) of vocab-parallel `logits`
    [..., vocab / tp] in any float dtype, with global label ids `labels` [...]. Same loss and
    gradient as megatron-core's `tensor_parallel.vocab_parallel_cross_entropy(logits.float(),
    labels)`, without the fp32 copy of `logits` it makes and keeps for backward."""
    return _VocabParallelCrossEntropy.apply(logits, labels, group, chunk_tokens)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, group, chunk_tokens):
        s, b, h = hidden.shape
        x = hidden.reshape(s * b, h)
        targets = labels.transpose(0, 1).reshape(s * b)  # [b, s] -> hidden's token order
        start = _vocab_start(weight.shape[0], group)
        spans = _chunks(s * b, _tokens_per_chunk(weight.shape[0], chunk_tokens))
        stats = []
        for i, j in spans:
            if stats:  # only the last chunk's scratch outlives its statistics
                stats[-1] = stats[-1]._replace(shifted_exp=None)
            stats.append(_local_statistics(x[i:j] @ weight.t(), targets[i:j], start,
                                           private=True))
        logsumexp, loss = _combine(torch.cat([t.logsumexp for t in stats]),
                                   torch.cat([t.target for t in stats]), group)
        ctx.save_for_backward(hidden, weight, targets, logsumexp)
        ctx.vocab_start, ctx.spans = start, spans
        ctx.last_shifted_exp, ctx.last_peak = stats[-1].shifted_exp, stats[-1].peak
        return loss.view(s, b).transpose(0, 1).contiguous()

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, targets, logsumexp = ctx.saved_tensors
        s, b, h = hidden.shape
        x = hidden.reshape(s * b, h)
        grad_loss = grad_loss.transpose(0, 1).reshape(s * b).float()
        grad_hidden = torch.empty_like(x)
        # Accumulated in the weight's dtype, in the returned gradient itself: an fp32
        # accumulator would be as large as the fp32 logits of h tokens (weight-sized).
        grad_weight = torch.zeros_like(weight)
        for i, j in ctx.spans[:-1]:
            grad_logits = _logits_grad(x[i:j] @ weight.t(), targets[i:j], logsumexp[i:j],
                                       grad_loss[i:j], ctx.vocab_start, private=True)
            torch.mm(grad_logits, weight, out=grad_hidden[i:j])
            grad_weight.addmm_(grad_logits.t(), x[i:j])
        # The last chunk from the forward's exp(logits - peak): softmax = that x
        # exp(peak - logsumexp), with the logsumexp over all ranks.
        i, j = ctx.spans[-1]
        softmax = ctx.last_shifted_exp.mul_((ctx.last_peak - logsumexp[i:j]).exp_()[:, None])
        ctx.last_shifted_exp = ctx.last_peak = None
        grad_logits = _softmax_grad(softmax, targets[i:j], grad_loss[i:j],
                                    ctx.vocab_start).to(weight.dtype)
        torch.mm(grad_logits, weight, out=grad_hidden[i:j])
        grad_weight.addmm_(grad_logits.t(), x[i:j])
        return grad_hidden.view(s, b, h), grad_weight, None, None, None


def chunked_vocab_parallel_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor,
                                         labels: torch.Tensor, group,
                                         chunk_tokens: Optional[int] = None) -> torch.Tensor:
    """Per-token cross entropy [b, s] (fp32) of the logits hidden @ weight.T, computed chunk by
    chunk of `chunk_tokens` tokens (default: ~2**26 logits per chunk).

    hidden: final hidden states [s, b, h] in the compute dtype, the whole sequence (all-gathered
    first under sequence parallelism); weight: this rank's output-layer shard [vocab / tp, h];
    labels: global label ids [b, s]; group: the tensor-parallel group or None.

    The gradient returned for `hidden` is this rank's part only (its vocabulary slice), as a
    column-parallel layer's is: like the input of megatron-core's ColumnParallelLinear, `hidden`
    must come through a function whose backward sums over TP, i.e.
    `copy_to_tensor_model_parallel_region(hidden, group)` or, under sequence parallelism, the
    sequence all-gather (whose backward reduce-scatters).
    """
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, labels, group, chunk_tokens)
