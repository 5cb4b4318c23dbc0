"""OLMo 2 (HF `olmo2`, GGUF `olmo2`): no pre-norms; RMSNorm after attention and after the MLP inside
each residual branch; q_norm / k_norm over the whole projection width (all heads at once).
Tests: tests/test_models.py::test_hf_logits[olmo2], test_gguf_logits[olmo2-*].
"""

from .base import Family

FAMILY = Family(
    name="olmo2",
    hf_model_types=("olmo2",),
    gguf_archs=("olmo2",),
    hf_norms={"post_attn_norm": "post_attention_layernorm", "post_mlp_norm": "post_feedforward_layernorm"},
    gguf_norms={"post_attn_norm": "post_attention_norm", "post_mlp_norm": "post_ffw_norm"},
    qk_norm="full",
)
