"""Configuration of ChatGLM-6B (2D RoPE, DeepNorm), in the published chatglm-6b config.json
vocabulary, for `trust_remote_code=True` loading of glm_megatron exports."""

from transformers import PretrainedConfig


class ChatGLMConfig(PretrainedConfig):
    model_type = "chatglm"
    # transformers' caches and generation read the layer count under its usual name.
    attribute_map = {"num_hidden_layers": "num_layers"}

    def __init__(self, vocab_size=150528, hidden_size=4096, num_layers=28,
                 num_attention_heads=32, layernorm_epsilon=1e-5, inner_hidden_size=16384,
                 max_sequence_length=2048, position_encoding_2d=True, mask_token_id=None,
                 smask_token_id=None, gmask_token_id=None, eod_token_id=None,
                 initializer_range=0.02, use_cache=True, rotary_fp16_frequencies=True,
                 **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        self.layernorm_epsilon = layernorm_epsilon
        self.inner_hidden_size = inner_hidden_size
        self.max_sequence_length = max_sequence_length
        self.position_encoding_2d = position_encoding_2d
        self.mask_token_id = mask_token_id
        self.smask_token_id = smask_token_id
        self.gmask_token_id = gmask_token_id
        self.eod_token_id = eod_token_id
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        # The published code computes the rotary angles in fp16 (a config without this key is
        # the published one); our exports say which their model used.
        self.rotary_fp16_frequencies = rotary_fp16_frequencies
        # Published ChatGLM-6B leaves tie_word_embeddings to transformers' default: tied.
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(**kwargs)
