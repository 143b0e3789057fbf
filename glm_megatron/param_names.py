"""Names in our model's state dict that other parts (tied heads, converters) refer to.

Kept free of imports so that tools reading checkpoints need neither torch models nor
megatron-core to know them.
"""

WORD_EMBEDDINGS = "embedding.word_embeddings.weight"
OUTPUT_LAYER = "output_layer.weight"
SCORE = "score.weight"
FINAL_NORM = "decoder.final_layernorm"
# Layers are keyed by their global number on every pipeline stage.
LAYER_PREFIX = "decoder.layers.{i}."
