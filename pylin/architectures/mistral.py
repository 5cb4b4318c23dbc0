"""Mistral / Ministral (HF `mistral`, `ministral`; GGUF arch `llama`): Llama plus a sliding window.

The window applies to every layer (`sliding_window`), or per layer where config.json has `layer_types`
(Ministral); a GGUF file of this family is read by the llama family, with the window taken from
`llama.attention.sliding_window` when the file has it.
Tests: tests/test_models.py::test_hf_logits[mistral] (window shorter than the prompt).
"""

from .base import Family

FAMILY = Family(
    name="mistral",
    hf_model_types=("mistral", "ministral"),
    gguf_archs=(),
    hf_norms={"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"},
    gguf_norms={"attn_norm": "attn_norm", "mlp_norm": "ffn_norm"},
    gguf_rope_style="norm",
)
