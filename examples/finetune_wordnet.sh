#!/usr/bin/env bash
# Finetune the built-in run's model on the shipped WordNet data (data/finetune/wordnet): noun
# glosses classified into six supersenses (animal, artifact, food, location, person, plant),
# with GLM's cloze head (each label's name scored as the answer to "... Answer: [MASK].") or
# the sequence-classification head. Runs as written on one CPU machine; without a pretrained
# checkpoint it first runs the built-in pretraining (`python pretrain_glm.py`, a few minutes).
# Environment: HEAD [cloze] or seq-cls, EPOCHS [2], NPROC [1] (data-parallel processes),
# PRETRAINED [runs/builtin/checkpoints], RUN_DIR [runs/finetune_wordnet/$HEAD] for checkpoints
# (best/ holds the best validation accuracy), TensorBoard logs and predictions.jsonl. Extra flags
# are passed through, e.g. --tensor-model-parallel-size 2 with NPROC=2.
set -euo pipefail
cd "$(dirname "$0")/.."
HEAD=${HEAD:-cloze}
PRETRAINED=${PRETRAINED:-runs/builtin/checkpoints}
RUN_DIR=${RUN_DIR:-runs/finetune_wordnet/$HEAD}
if [ ! -f "$PRETRAINED/latest_checkpointed_iteration.txt" ]; then
    python pretrain_glm.py --save "$PRETRAINED" --tensorboard-dir "$PRETRAINED/../tensorboard"
fi
torchrun --standalone --nproc_per_node "${NPROC:-1}" finetune_glm.py \
    --task text-classification --head "$HEAD" \
    --pretrained-checkpoint "$PRETRAINED" \
    --train-data data/finetune/wordnet/supersense_train.jsonl \
    --valid-data data/finetune/wordnet/supersense_valid.jsonl \
    --seq-length 128 --micro-batch-size 4 --global-batch-size 16 \
    --epochs "${EPOCHS:-2}" --lr 1e-3 --lr-warmup-fraction 0.1 --log-interval 25 \
    --save "$RUN_DIR/checkpoints" --tensorboard-dir "$RUN_DIR/tensorboard" \
    --predictions "$RUN_DIR/predictions.jsonl" \
    "$@"
