#!/usr/bin/env bash
#SBATCH --job-name=glm-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --time=01:00:00
#SBATCH --output=slurm-%j.out
# Multi-node pretraining under SLURM, Megatron-LM's usual form: one srun task per node, each
# running torchrun for that node's processes. Submit from the repository root:
#   sbatch examples/pretrain_slurm.sh                       # 2 nodes x 8 GPUs, built-in corpus
#   sbatch --nodes 4 examples/pretrain_slurm.sh --objective blank-infilling
#
# The job's nodes come from SLURM (SLURM_NNODES, SLURM_JOB_NODELIST; node 0 hosts the
# rendezvous on MASTER_PORT). Checkpoints, TensorBoard logs and the data's index cache must
# be on a file system every node sees (as in Megatron-LM): global rank 0 builds the sample
# index and writes checkpoint metadata, every rank reads and writes its own files there.
#
# Environment (defaults in brackets): PRESET [glm4-small], TP [2], PP [1], GPUS_PER_NODE [8]
# (processes per node), SEQ_LENGTH [256], MICRO_BATCH [2], GLOBAL_BATCH [64], TRAIN_ITERS [200],
# MASTER_PORT [6000], RUN_DIR [runs/slurm-$SLURM_JOB_ID], DATA_PATH and TOKENIZER (a
# preprocessed corpus prefix and its SentencePiece model; the built-in corpus without them).
# Extra arguments are passed to pretrain_glm.py. A requeued job (same SLURM_JOB_ID, so the same
# RUN_DIR) continues from the checkpoint its --save holds: no --load needed.
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"

export NNODES=${SLURM_NNODES:?run with sbatch (or set SLURM_NNODES and SLURM_JOB_NODELIST)}
export GPUS_PER_NODE=${GPUS_PER_NODE:-8}
export MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
export MASTER_PORT=${MASTER_PORT:-6000}
RUN_DIR=${RUN_DIR:-runs/slurm-${SLURM_JOB_ID:-local}}

ARGS=(--model-preset "${PRESET:-glm4-small}"
      --tensor-model-parallel-size "${TP:-2}" --pipeline-model-parallel-size "${PP:-1}"
      --seq-length "${SEQ_LENGTH:-256}" --micro-batch-size "${MICRO_BATCH:-2}"
      --global-batch-size "${GLOBAL_BATCH:-64}" --train-iters "${TRAIN_ITERS:-200}"
      --log-interval 10 --eval-interval 100 --eval-iters 5
      --save "$RUN_DIR/checkpoints"
      --tensorboard-dir "$RUN_DIR/tensorboard")
if [[ -n "${DATA_PATH:-}" ]]; then ARGS+=(--data-path "$DATA_PATH"); fi
if [[ -n "${TOKENIZER:-}" ]]; then ARGS+=(--tokenizer-model "$TOKENIZER"); fi
ARGS+=("$@")

# One task per node; each expands SLURM_NODEID itself (single quotes), so every node passes
# its own --node-rank to torchrun.
srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c \
    'exec torchrun --nnodes "$NNODES" --node-rank "$SLURM_NODEID" \
        --nproc-per-node "$GPUS_PER_NODE" --master-addr "$MASTER_ADDR" \
        --master-port "$MASTER_PORT" pretrain_glm.py "$@"' torchrun "${ARGS[@]}"
