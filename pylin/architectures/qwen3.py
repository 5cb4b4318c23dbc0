"""Qwen 3 (HF `qwen3`, GGUF `qwen3`): per-head RMSNorm on q and k before RoPE, no biases.

DeepSeek-R1-0528-Qwen3-8B is a `qwen3` checkpoint (YaRN rope scaling), so it loads here.
Tests: tests/test_models.py::test_hf_logits[qwen3], test_gguf_logits[qwen3-*].
"""

from .base import Family

FAMILY = Family(
    name="qwen3",
    hf_model_types=("qwen3",),
    gguf_archs=("qwen3",),
    hf_norms={"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"},
    gguf_norms={"attn_norm": "attn_norm", "mlp_norm": "ffn_norm"},
    qk_norm="head",
)
