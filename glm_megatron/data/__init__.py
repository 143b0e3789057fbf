"""Data for pretraining, Megatron-style.

- builtin_corpus: English text shipped with Python (the default corpus, no download)
- tokenizer: GLMTokenizer (SentencePiece + GLM's special tokens), training, vocabulary padding
- indexed: writing Megatron's .bin/.idx indexed datasets
- builtin: the built-in corpus tokenized and cached, ready to train on
- datasets: train/valid/test datasets from --data-path/--split via megatron-core
- sampler: Megatron's pretraining sample order and the per-rank data loader
"""
