#!/usr/bin/env bash
# GLM's SuperGLUE recipe with the cloze head (THUDM/GLM config_tasks/task_*.sh: GLM's patterns
# and verbalizers, lr 1e-5 with linear decay and 10% warm-up, weight decay 0.1, batch 16,
# sequence 256; COPA adds mirrored training examples), on SuperGLUE's own JSON-lines files.
# Environment: TASK [copa] (boolq, rte, cb, wic, copa); DATA_DIR, a SuperGLUE task folder with
# train.jsonl and val.jsonl; without it the script runs as written on the few hand-written
# examples of tests/fixtures/superglue (batch 2: a smoke test, not a result). EPOCHS [GLM's:
# 50 for rte, cb, copa; 20 for boolq; 30 for wic], NPROC [1], PRETRAINED
# [runs/builtin/checkpoints, made by the built-in pretraining if absent], RUN_DIR
# [runs/superglue/$TASK]. Extra flags are passed through (e.g. --pattern-id 1).
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${TASK:-copa}
case "$TASK" in
    boolq) EPOCHS=${EPOCHS:-20} ;;
    wic) EPOCHS=${EPOCHS:-30} ;;
    *) EPOCHS=${EPOCHS:-50} ;;
esac
if [ -n "${DATA_DIR:-}" ]; then
    TRAIN="$DATA_DIR/train.jsonl" VALID="$DATA_DIR/val.jsonl" BATCH=16 MICRO=4
else
    TRAIN="tests/fixtures/superglue/$TASK.jsonl" VALID="$TRAIN" BATCH=2 MICRO=1
    echo "no DATA_DIR: finetuning on the hand-written sample $TRAIN (a smoke test)"
fi
PRETRAINED=${PRETRAINED:-runs/builtin/checkpoints}
RUN_DIR=${RUN_DIR:-runs/superglue/$TASK}
if [ ! -f "$PRETRAINED/latest_checkpointed_iteration.txt" ]; then
    python pretrain_glm.py --save "$PRETRAINED" --tensorboard-dir "$PRETRAINED/../tensorboard"
fi
torchrun --standalone --nproc_per_node "${NPROC:-1}" finetune_glm.py \
    --task "$TASK" --head cloze \
    --pretrained-checkpoint "$PRETRAINED" --train-data "$TRAIN" --valid-data "$VALID" \
    --seq-length 256 --micro-batch-size "$MICRO" --global-batch-size "$BATCH" \
    --epochs "$EPOCHS" --lr 1e-5 --lr-decay-style linear --lr-warmup-fraction 0.1 \
    --weight-decay 0.1 --log-interval 10 \
    --save "$RUN_DIR/checkpoints" --tensorboard-dir "$RUN_DIR/tensorboard" \
    --predictions "$RUN_DIR/predictions.jsonl" \
    "$@"
