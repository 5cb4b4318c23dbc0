"""pylin.indices (one reading of integer arguments everywhere), svd.signs_toward (one sign convention)
and pylin.generation's greedy loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pylin.generation import eos_token_ids, greedy
from pylin.indices import index, indices, integer
from pylin.svd import signs_toward


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), torch.tensor(3), torch.tensor([3])])
def test_integer_accepts_integer_scalars(value):
    assert integer(value, "k") == 3 and type(integer(value, "k")) is int


@pytest.mark.parametrize("value", [2.9, 3.0, True, np.float32(3), torch.tensor(3.0), "3", None, [3]])
def test_integer_refuses_the_rest_naming_the_argument(value):
    with pytest.raises(ValueError, match="k must be an integer"):
        integer(value, "k")


def test_integer_bounds():
    assert integer(0, "n", low=0, high=4) == 0
    with pytest.raises(ValueError, match=r"n must be in 1\.\.4, got 5"):
        integer(5, "n", low=1, high=4)
    with pytest.raises(ValueError, match="at least 1"):
        integer(0, "n", low=1)


def test_index_counts_from_the_end_and_checks_the_range():
    assert index(-1, 8, "token") == 7 and index(0, 8, "token") == 0
    for bad in (8, -9):
        with pytest.raises(ValueError, match=f"token index {bad} is out of range for 8 tokens"):
            index(bad, 8, "token")
    with pytest.raises(ValueError, match="token index must be an integer"):
        index(1.7, 8, "token")


def test_indices_forms():
    assert indices("0, 3,-1", 8, "token") == [0, 3, 7]
    assert indices(np.array([1, 2]), 8, "token") == [1, 2]
    assert indices(torch.tensor([-2]), 8, "token") == [6]
    assert indices(np.int64(2), 8, "token") == [2]
    assert indices([1, 1], 8, "layer", unique=False) == [1, 1]
    refused = [
        ([], "the token list is empty"),
        ([1, 1], "repeat"),
        ("a,b", "cannot read"),
        ([2.9, 651.7], "must be an integer"),
        (torch.tensor([1.0]), "must be an integer"),
    ]
    for bad, message in refused:
        with pytest.raises(ValueError, match=message):
            indices(bad, 8, "token")


def test_signs_toward_y_and_the_zero_projection():
    U = torch.tensor([[1.0, 0.0, -3.0], [-2.0, 1.0, 0.0]])  # columns u0, u1, u2
    y = torch.tensor([0.0, -1.0])
    # u0 · y = 2 > 0 keeps +; u1 · y = -1 flips; u2 · y = 0 exactly: its largest entry (-3) decides: flip
    assert signs_toward(U, y).tolist() == [1.0, -1.0, -1.0]
    assert signs_toward(U, None).tolist() == [-1.0, 1.0, -1.0]  # largest-magnitude entry made positive
    assert signs_toward(torch.zeros(2, 1), y).tolist() == [1.0]  # an all-zero vector keeps +1
    stacked = torch.stack([U, -U])  # (2, d, k): one sign per column of each
    assert signs_toward(stacked, y).tolist() == [[1.0, -1.0, -1.0], [-1.0, 1.0, 1.0]]


def test_greedy_stops_at_eos_and_budget():
    table = {3: 5, 5: 7, 7: 9, 9: 1}  # next token after the last one

    def next_logits(ids):
        return torch.nn.functional.one_hot(torch.tensor(table[ids[-1]]), 10).float()

    assert greedy(next_logits, [3], 2) == [5, 7]
    assert greedy(next_logits, [3], 10, eos={9}) == [5, 7]
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy(next_logits, [3], 0)


def test_eos_token_ids_forms():
    class C:
        eos_token_id = None

    assert eos_token_ids(C()) == set()
    C.eos_token_id = 2
    assert eos_token_ids(C()) == {2}
    C.eos_token_id = [1, 106]
    assert eos_token_ids(C()) == {1, 106}


def test_model_token_ids_refuse_what_is_not_a_prompt(tmp_path):
    from tiny_models import make_tiny_hf

    import pylin

    path, _ = make_tiny_hf("llama", tmp_path)
    model = pylin.load(path)
    assert model.token_ids([2, np.int64(7), torch.tensor(9)]) == [2, 7, 9]
    assert model.token_ids(torch.tensor([4, 5])) == [4, 5]
    refused = [([2.9, 651.7], "token id must be an integer"), ([True], "token id must be"), (b"ab", "bytes"),
               ("   ", "empty"), ([], "no tokens"), ([10**9], "outside")]  # fmt: skip
    for bad, message in refused:
        with pytest.raises(ValueError, match=message):
            model.token_ids(bad)
    for call in (model.logits, model.generate, model.linearize):  # one check for every entry point
        with pytest.raises(ValueError, match="empty"):
            call("   ")
