"""Our own transformers remote code for the GLM generations that transformers has no class for.

The files here are copied next to the weights by `tools/checkpoint/convert.py` and loaded with
`trust_remote_code=True`; they import only torch and transformers, never glm_megatron.

- configuration_glm.py / modeling_glm.py: GLM (glm-large, glm-10b), learned 2D positions,
  published glm-10b key layout, `GLMForConditionalGeneration` (AutoModelForSeq2SeqLM, as
  published, and AutoModelForCausalLM).
- configuration_chatglm.py / modeling_chatglm.py: ChatGLM-6B, 2D RoPE and DeepNorm, published
  chatglm-6b key layout, `ChatGLMForConditionalGeneration`.
- blank_infilling.py: 2D position ids and GLM's attention mask derived from the input ids, so
  `generate` can fill a [MASK] (Part B at the last [MASK], as GLM's cloze inputs, else the
  first [sMASK]/[gMASK]).
- blank_infilling_lm.py: the transformers plumbing both models share: initialisation, the LM
  output and loss, and `generate` with a key/value cache (transformers' Cache API; the cache is
  `cache` in transformers 5, `past_key_values` in 4.x).
- tokenization_glm.py: GLMTokenizer's exact ids through SentencePiece itself, shipped with every
  export that has a tokenizer (AutoTokenizer with trust_remote_code=True; without it, the
  export's tokenizer.json loads instead).
"""
