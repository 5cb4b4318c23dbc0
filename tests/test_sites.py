"""The sites the seed has and pylin added: blocks.{i}.attn_pre_norm / mlp_pre_norm (the branches before the
Gemma 3 / OLMo 2 post-norms, the seed's `attn` / `mlp` keys) and blocks.{i}.resid_mid (its
`attn_plus_residual`), against torch autograd on the pure-PyTorch detached model (pylin.reference), on
every tiny family, with the reconstruction identity Σ_j J_j x*_j = y at each.
"""

from __future__ import annotations

import pytest
import torch
from conftest import engine_tolerance
from tiny_models import FAMILIES, make_tiny_hf

import pylin
from pylin import reference

PROMPT = [2, 17, 5, 33, 8, 21, 11]
KINDS = ("attn_pre_norm", "mlp_pre_norm", "resid_mid")


@pytest.fixture(scope="module", params=FAMILIES)
def model(request, tmp_path_factory):
    path, _ = make_tiny_hf(request.param, tmp_path_factory.mktemp(request.param))
    return pylin.load(path)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("normed", [False, True])
def test_new_sites_match_autograd(model, kind: str, normed: bool) -> None:
    last = model.n_layers - 1
    for output, wrt in (
        (f"blocks.{last}.{kind}", "embed"),
        (f"blocks.{last}.{kind}", f"blocks.{last}.resid_pre"),
    ):
        lin = model.linearize(PROMPT, output=output, wrt=wrt, normed=normed)
        ref = reference.jacobian(model, PROMPT, output=output, wrt=wrt, normed=normed, detach=True)
        assert rel(lin.jacobian(), ref) <= engine_tolerance(model.dtype, "jacobian"), (output, wrt)
        assert lin.reconstruction().rel_error <= engine_tolerance(model.dtype), (output, wrt)
        value = reference.site_function(model, output, wrt, normed=normed)(
            reference.site_input(model, PROMPT, wrt)
        )
        assert rel(lin.output, value) <= engine_tolerance(model.dtype), (output, wrt)


def test_pre_norm_sites_differ_only_with_post_norms(model) -> None:
    lin = model.linearize(PROMPT)
    record = lin.records[0]
    has_post = model.weights.layers[0].post_attn_norm is not None
    assert torch.equal(record.resid_mid, record.resid_pre + record.attn_out)
    if has_post:  # Gemma 3, OLMo 2: attn_out = post_norm(attn_pre_norm)
        assert not torch.allclose(record.attn_pre_norm, record.attn_out)
        assert not torch.allclose(record.mlp_pre_norm, record.mlp_out)
    else:
        assert torch.equal(record.attn_pre_norm, record.attn_out)
        assert torch.equal(record.mlp_pre_norm, record.mlp_out)


def test_bad_site_names_list_the_new_ones(model) -> None:
    with pytest.raises(ValueError, match="attn_pre_norm"):
        model.linearize(PROMPT, output="blocks.0.attn_prenorm")
