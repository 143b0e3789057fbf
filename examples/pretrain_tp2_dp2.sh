#!/usr/bin/env bash
# Tensor x data parallel pretraining of the small GLM-4-architecture preset on the built-in
# corpus: 4 processes = TP 2 x DP 2. Runs as written on one CPU machine (gloo); on a GPU
# machine the same command uses NCCL. Environment: NPROC [4], TRAIN_ITERS [40],
# RUN_DIR [runs/tp2_dp2] for checkpoints and TensorBoard logs. Extra flags are passed through,
# e.g. --objective blank-infilling.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-runs/tp2_dp2}
torchrun --standalone --nproc_per_node "${NPROC:-4}" pretrain_glm.py \
    --model-preset glm4-small \
    --tensor-model-parallel-size 2 \
    --seq-length 256 --micro-batch-size 2 --global-batch-size 16 \
    --train-iters "${TRAIN_ITERS:-40}" --lr 1e-3 --min-lr 1e-4 \
    --log-interval 5 --eval-interval 20 --eval-iters 2 \
    --save "$RUN_DIR/checkpoints" --tensorboard-dir "$RUN_DIR/tensorboard" \
    "$@"
