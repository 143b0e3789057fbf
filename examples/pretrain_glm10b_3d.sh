#!/usr/bin/env bash
# A GLM-10B-shaped 3D layout: TP x PP x DP with the distributed optimizer, sequence
# parallelism and full activation recomputation, in bf16.
#
# On a cluster (8 GPUs per node, run once per node; set MASTER_ADDR and NODE_RANK):
#   NNODES=4 DATA_PATH=/data/corpus_text_document TOKENIZER=/data/tokenizer.model \
#       examples/pretrain_glm10b_3d.sh
#   -> 32 GPUs = TP 4 x PP 4 x DP 2.
#
# On one CPU machine with a tiny preset (8 processes = TP 2 x PP 2 x DP 2, built-in corpus):
#   PRESET=glm-tiny TP=2 PP=2 NPROC=8 SEQ_LENGTH=128 TRAIN_ITERS=4 examples/pretrain_glm10b_3d.sh
#
# Environment (defaults in brackets): PRESET [glm-10b], TP [4], PP [4], NPROC processes per
# node [8], NNODES [1] (more than 1 also needs NODE_RANK and MASTER_ADDR; MASTER_PORT [6000]),
# SEQ_LENGTH [1024], GLOBAL_BATCH [64] (micro-batch size 1, so GLOBAL_BATCH / DP micro-batches
# per iteration, at least PP of them; the pipeline idles (PP - 1) / (micro-batches + PP - 1) of
# the time: 9% with the defaults at DP 2), TRAIN_ITERS [100] (the learning rate warms up over
# the first tenth, then decays to a tenth along a cosine), PRECISION [--bf16],
# RUN_DIR for checkpoints and TensorBoard logs [runs/glm10b_3d], DATA_PATH (a preprocessed
# corpus prefix; the built-in corpus without it) and TOKENIZER (the SentencePiece model the
# corpus was tokenized with; the built-in one without it). The glm-10b preset brings GLM-10B's
# published pretraining recipe (blank infilling with task masks, [CLS] first; see the README's
# preset table; tiny presets train causally). Extra flags are passed through and override it,
# e.g. --objective causal.
set -euo pipefail
cd "$(dirname "$0")/.."

PRESET=${PRESET:-glm-10b}
TP=${TP:-4}
PP=${PP:-4}
NPROC=${NPROC:-8}
NNODES=${NNODES:-1}
PRECISION=${PRECISION:---bf16}
RUN_DIR=${RUN_DIR:-runs/glm10b_3d}

DATA_ARGS=()
if [[ -n "${DATA_PATH:-}" ]]; then
    DATA_ARGS+=(--data-path "$DATA_PATH")
fi
if [[ -n "${TOKENIZER:-}" ]]; then
    DATA_ARGS+=(--tokenizer-model "$TOKENIZER")
fi
if [[ "$NNODES" -gt 1 ]]; then
    LAUNCH=(--nnodes "$NNODES" --node_rank "${NODE_RANK:?set NODE_RANK (0 .. NNODES-1)}"
            --master_addr "${MASTER_ADDR:?set MASTER_ADDR (the address of node 0)}"
            --master_port "${MASTER_PORT:-6000}")
else
    LAUNCH=(--standalone)
fi

# ${DATA_ARGS[@]+...}: an empty array is an unbound variable under set -u in bash < 4.4.
torchrun "${LAUNCH[@]}" --nproc_per_node "$NPROC" pretrain_glm.py \
    --model-preset "$PRESET" \
    --tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP" \
    --sequence-parallel --use-distributed-optimizer \
    --recompute-granularity full --recompute-method uniform --recompute-num-layers 1 \
    "$PRECISION" \
    --seq-length "${SEQ_LENGTH:-1024}" --micro-batch-size 1 \
    --global-batch-size "${GLOBAL_BATCH:-64}" \
    --train-iters "${TRAIN_ITERS:-100}" --lr 1e-4 --min-lr 1e-5 --lr-decay-style cosine \
    --adam-beta1 0.9 --adam-beta2 0.95 --weight-decay 0.1 --clip-grad 1.0 \
    --log-interval 1 --eval-interval 1000 --eval-iters 1 \
    --save "$RUN_DIR/checkpoints" --tensorboard-dir "$RUN_DIR/tensorboard" \
    ${DATA_ARGS[@]+"${DATA_ARGS[@]}"} "$@"
