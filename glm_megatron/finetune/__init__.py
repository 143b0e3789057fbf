"""Finetuning data: task readers, GLM's cloze patterns, encoding, batches and metrics.

One module per concern:
- jsonl: reading JSON-lines files (Record keeps each line's file and number)
- labels: the label set read from training data (problem type, stable order, serialisable)
- examples: ClozeExample / SequenceExample, what readers hand to the encoders
- text_classification, multiple_choice, superglue (+ superglue_patterns): the `--task` formats
- tasks: build_task / check_head, the task registry
- text_pieces, truncation, encoding: token ids per file, the length check and --truncate
- collate: static-shape batches for the cloze (multi- and single-token) and seq-cls heads
- metrics: accuracy, macro-F1, MSE / Pearson, multi-label exact match / micro-F1
- errors: FinetuneDataError (one line naming the file or flag and the fix; exit 2)

The run (finetune_glm.py) on top of them:
- arguments: the flags (the task's, the heads', and pretraining's shared groups)
- pretrained: --pretrained-checkpoint's architecture, tokenizer and [CLS] convention, and its
  weights loaded at the run's layout
- data: the files encoded for the chosen head, model batches, the epochs' order
- heads: models and loss functions of the cloze and seq-cls heads
- evaluation: a whole split scored, gathered on rank 0, metrics, the predictions file
- settings: what a finetuning checkpoint records (task, head, label set, best result)
- runner: setup, the training loop, validation, best checkpoint, zero-shot evaluation

Use: `task = build_task(...)`; `check_head(task, head)`; per file
`examples = task.cloze_examples(path, split)` (or `sequence_examples`), then
`ClozeEncoder(...).encode(examples, path)` (or SequenceEncoder) once, and a collator per
micro-batch of encoded examples.
"""

from .collate import (MultiTokenClozeCollator, SequenceClassificationCollator,
                      SingleTokenClozeCollator)
from .encoding import ClozeEncoder, EncodedCloze, EncodedSequence, EncodedSplit, SequenceEncoder
from .errors import FinetuneDataError
from .examples import ClozeExample, SequenceExample
from .labels import MULTI_LABEL, PROBLEM_TYPES, REGRESSION, SINGLE_LABEL, LabelSet
from .metrics import LOWER_IS_BETTER, METRICS, compute_metrics, task_metric_names
from .tasks import (HEADS, SPLITS, TASKS, ChoiceTask, LabelTask, build_task, check_head,
                    max_num_choices)

__all__ = ["HEADS", "LOWER_IS_BETTER", "METRICS", "MULTI_LABEL", "PROBLEM_TYPES", "REGRESSION",
           "SINGLE_LABEL", "SPLITS", "TASKS", "ChoiceTask", "ClozeEncoder", "ClozeExample",
           "EncodedCloze", "EncodedSequence", "EncodedSplit", "FinetuneDataError", "LabelSet",
           "LabelTask", "MultiTokenClozeCollator", "SequenceClassificationCollator",
           "SequenceEncoder", "SequenceExample", "SingleTokenClozeCollator", "build_task",
           "check_head", "compute_metrics", "max_num_choices", "task_metric_names"]
