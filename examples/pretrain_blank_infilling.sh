#!/usr/bin/env bash
# GLM's autoregressive blank-infilling pretraining from raw text, in three steps:
#   1. train a SentencePiece tokenizer (GLM's special tokens appended after its pieces),
#   2. preprocess the text into Megatron's indexed dataset (.bin/.idx),
#   3. pretrain with --objective blank-infilling, then fill a blank with the trained model.
#
# As written it runs on one CPU machine on the built-in corpus (Python's own documentation,
# written to $WORK/corpus.jsonl), 2 processes = TP 1 x DP 2:
#     bash examples/pretrain_blank_infilling.sh
# Your own corpus and layout, e.g. GLM-Large on 8 GPUs at TP 2 x DP 4:
#     INPUT=/data/corpus.jsonl WORK=/scratch/glm VOCAB=50000 PRESET=glm-large NPROC=8 TP=2 \
#         SEQ_LENGTH=512 MICRO_BATCH=8 GLOBAL_BATCH=1024 TRAIN_ITERS=200000 \
#         bash examples/pretrain_blank_infilling.sh --bf16
# Extra arguments are passed to pretrain_glm.py.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/blank_infilling}
INPUT=${INPUT:-$WORK/corpus.jsonl}
mkdir -p "$WORK"
if [ ! -e "$INPUT" ]; then
    python -m glm_megatron.data.builtin_corpus "$INPUT"
fi

# 1. Tokenizer: $WORK/tokenizer.model
python tools/train_tokenizer.py --input "$INPUT" --json-keys text \
    --vocab-size "${VOCAB:-8000}" --model-prefix "$WORK/tokenizer" \
    --tensor-model-parallel-size "${TP:-1}"

# 2. Indexed dataset: $WORK/corpus_text_document.bin/.idx
python tools/preprocess_data.py --input "$INPUT" --json-keys text \
    --tokenizer-model "$WORK/tokenizer.model" --output-prefix "$WORK/corpus" \
    --workers "${WORKERS:-2}"

# 3. Pretraining with GLM's objective (its default mixture: token-level spans half of the
#    time, a document-level span otherwise; see README "Objectives" for the flags).
torchrun --standalone --nproc_per_node "${NPROC:-2}" pretrain_glm.py \
    --objective blank-infilling \
    --model-preset "${PRESET:-glm-tiny}" \
    --tensor-model-parallel-size "${TP:-1}" \
    --data-path "$WORK/corpus_text_document" --tokenizer-model "$WORK/tokenizer.model" \
    --seq-length "${SEQ_LENGTH:-128}" --micro-batch-size "${MICRO_BATCH:-4}" \
    --global-batch-size "${GLOBAL_BATCH:-16}" --train-iters "${TRAIN_ITERS:-100}" \
    --lr "${LR:-2e-3}" --log-interval 10 --eval-interval "${EVAL_INTERVAL:-50}" --eval-iters 4 \
    --save "$WORK/checkpoints" --tensorboard-dir "$WORK/tensorboard" \
    "$@"

python tools/generate.py --load "$WORK/checkpoints" \
    --text "If the file cannot be opened, an [MASK] is raised."
