"""Named places in the network where a linearization starts (wrt) and ends (output).

Names follow TransformerLens hooks:
    output: "final" | "logit:<token id>"
            | "blocks.{i}.resid_post" | "blocks.{i}.attn_out" | "blocks.{i}.mlp_out"
            | "blocks.{i}.resid_mid"        (between attention and MLP: resid_pre + attn_out)
            | "blocks.{i}.attn_pre_norm" | "blocks.{i}.mlp_pre_norm"
    wrt:    "embed" | "blocks.{i}.resid_pre"
attn_out / mlp_out are the branches as added to the residual stream; *_pre_norm are the same branches
before their post-norms (Gemma 3's post_attention_layernorm / post_feedforward_layernorm, OLMo 2's
post-norms — the seed's `attn` / `mlp` keys; identical to attn_out / mlp_out in families without them);
resid_mid is the seed's `attn_plus_residual`.  Every output is taken at the last token.
Tests: tests/test_linearization.py (bad names, ranges), tests/test_sites.py (new sites vs autograd).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .indices import index

# Output kinds inside a block, besides resid_post (pylin.frozen_layers stops there).
BLOCK_STOPS = ("attn_out", "mlp_out", "attn_pre_norm", "mlp_pre_norm", "resid_mid")
_BLOCK_SITE = re.compile(
    r"^blocks\.(-?\d+)\.(resid_post|attn_out|mlp_out|attn_pre_norm|mlp_pre_norm|resid_mid|resid_pre)$"
)


@dataclass(frozen=True)
class OutputSite:
    kind: str  # "final", "logit", "resid_post" or one of BLOCK_STOPS
    layer: int  # the layer whose output it is (n_layers - 1 for final / logit)
    token_id: int | None = None  # for kind == "logit"

    @property
    def name(self) -> str:
        if self.kind == "final":
            return "final"
        if self.kind == "logit":
            return f"logit:{self.token_id}"
        return f"blocks.{self.layer}.{self.kind}"


@dataclass(frozen=True)
class InputSite:
    layer: int  # the first layer the linear map runs through (0 for "embed")

    @property
    def name(self) -> str:
        return "embed" if self.layer == 0 else f"blocks.{self.layer}.resid_pre"


def _layer_index(text: str, n_layers: int, site: str) -> int:
    try:
        return index(int(text), n_layers, "layer")
    except ValueError as e:
        raise ValueError(f"site {site!r}: {e}") from None


def parse_output(site: str, n_layers: int, vocab_size: int) -> OutputSite:
    """Parse an output site name; raise ValueError naming the problem."""
    if not isinstance(site, str):
        raise ValueError(f"output site must be a string, got {type(site).__name__}")
    if site == "final":
        return OutputSite("final", n_layers - 1)
    if site.startswith("logit:"):
        text = site.split(":", 1)[1]
        if not text.lstrip("-").isdigit():
            raise ValueError(f"output site {site!r}: expected 'logit:<token id>'")
        token = int(text)
        if not 0 <= token < vocab_size:
            raise ValueError(
                f"output site {site!r}: token id {token} outside the vocabulary (0..{vocab_size - 1})"
            )
        return OutputSite("logit", n_layers - 1, token)
    match = _BLOCK_SITE.match(site)
    if match is None or match.group(2) == "resid_pre":
        raise ValueError(
            f"unknown output site {site!r}; expected 'final', 'logit:<id>', 'blocks.<i>.resid_post', "
            "'blocks.<i>.resid_mid', 'blocks.<i>.attn_out', 'blocks.<i>.mlp_out', 'blocks.<i>.attn_pre_norm' "
            "or 'blocks.<i>.mlp_pre_norm'"
        )
    return OutputSite(match.group(2), _layer_index(match.group(1), n_layers, site))


def parse_input(site: str, n_layers: int) -> InputSite:
    """Parse a wrt (input) site name; raise ValueError naming the problem."""
    if site == "embed":
        return InputSite(0)
    match = _BLOCK_SITE.match(site) if isinstance(site, str) else None
    if match is None or match.group(2) != "resid_pre":
        raise ValueError(f"unknown input site {site!r}; expected 'embed' or 'blocks.<i>.resid_pre'")
    return InputSite(_layer_index(match.group(1), n_layers, site))
