"""Configuration of GLM (glm-large, glm-10b: learned 2D positions), in the published glm-10b
config.json vocabulary, for `trust_remote_code=True` loading of glm_megatron exports."""

from transformers import PretrainedConfig


class GLMConfig(PretrainedConfig):
    model_type = "glm"
    # transformers' caches and generation read the layer count under its usual name.
    attribute_map = {"num_hidden_layers": "num_layers"}

    def __init__(self, num_layers=24, vocab_size=30592, hidden_size=1024, num_attention_heads=16,
                 intermediate_size=None, embedding_dropout_prob=0.1, attention_dropout_prob=0.1,
                 output_dropout_prob=0.1, max_sequence_length=512, block_position_encoding=True,
                 layernorm_epsilon=1e-5, initializer_range=0.02, attention_scale=1.0,
                 relative_encoding=False, mask_token_id=None, smask_token_id=None,
                 gmask_token_id=None, eod_token_id=None, use_cache=True, **kwargs):
        self.num_layers = num_layers
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.embedding_dropout_prob = embedding_dropout_prob
        self.attention_dropout_prob = attention_dropout_prob
        self.output_dropout_prob = output_dropout_prob
        self.max_sequence_length = max_sequence_length
        self.block_position_encoding = block_position_encoding
        self.layernorm_epsilon = layernorm_epsilon
        self.initializer_range = initializer_range
        self.attention_scale = attention_scale
        self.relative_encoding = relative_encoding
        self.mask_token_id = mask_token_id
        self.smask_token_id = smask_token_id
        self.gmask_token_id = gmask_token_id
        self.eod_token_id = eod_token_id
        self.use_cache = use_cache
        super().__init__(**kwargs)
