"""Llama 3 (HF `llama`, GGUF `llama`): the baseline every other family differs from.

llama3 rope scaling comes from config.json's rope parameters, or in GGUF from the `rope_freqs` tensor;
llama.cpp's converter permutes Q/K rows, hence NORM-style RoPE on GGUF weights.
Tests: tests/test_models.py::test_hf_logits[llama], test_gguf_logits[llama-*].
"""

from .base import Family

FAMILY = Family(
    name="llama",
    hf_model_types=("llama",),
    gguf_archs=("llama",),
    hf_norms={"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"},
    gguf_norms={"attn_norm": "attn_norm", "mlp_norm": "ffn_norm"},
    gguf_rope_style="norm",
)
