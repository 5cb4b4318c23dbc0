"""pylin.QTensor: a zero-copy view of GGUF bytes with a format and a (rows, K) shape.

Covers pylin/qtensor.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from reference import QTYPES, block_layout, random_blocks

import pylin
from pylin.qtensor import qtype_name, row_nbytes


@pytest.mark.parametrize("qtype", QTYPES)
def test_wraps_bytes_without_copy(qtype: str, rng: np.random.Generator) -> None:
    k = block_layout(qtype)[0] * 2
    data = random_blocks(qtype, 3, k, rng)
    q = pylin.QTensor(data, qtype, (3, k))
    assert np.shares_memory(q.data, data)
    assert q.nbytes == data.nbytes and q.n_rows == 3 and q.k == k
    assert q.bits_per_weight == 8 * block_layout(qtype)[1] / block_layout(qtype)[0]


def test_qtype_spellings() -> None:
    assert qtype_name("q4_k") == "Q4_K"
    assert qtype_name(12) == "Q4_K"
    assert qtype_name(GGMLQuantizationType.Q6_K) == "Q6_K"
    with pytest.raises(ValueError, match="unknown GGML"):
        qtype_name(1234)
    with pytest.raises(ValueError):
        qtype_name(3.5)  # type: ignore[arg-type]
    assert row_nbytes("Q8_0", 64) == 68


def test_rows_and_reshape_are_views(rng: np.random.Generator) -> None:
    data = random_blocks("Q8_0", 6, 64, rng)
    q = pylin.QTensor(data, "Q8_0", (6, 64))
    part = q.rows(2, 5)
    assert part.shape == (3, 64) and np.shares_memory(part.data, data)
    np.testing.assert_array_equal(part.dequantize(), q.dequantize()[2:5])
    assert q.reshape(2, 3, 64).shape == (2, 3, 64)
    with pytest.raises(ValueError):
        q.rows(5, 2)
    with pytest.raises(ValueError):
        q.reshape(3, 128)


def test_from_torch_is_zero_copy() -> None:
    t = torch.randn(4, 8, dtype=torch.bfloat16)
    q = pylin.QTensor.from_torch(t)
    assert q.qtype == "BF16" and q.shape == (4, 8)
    np.testing.assert_array_equal(q.dequantize(), t.float().numpy())
    with pytest.raises(ValueError, match="cannot wrap"):
        pylin.QTensor.from_torch(torch.zeros(2, 2, dtype=torch.int32))


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="needs"):
        pylin.QTensor(np.zeros(35, dtype=np.uint8), "Q8_0", (1, 32))
    with pytest.raises(ValueError, match="positive"):
        pylin.QTensor(np.zeros(34, dtype=np.uint8), "Q8_0", (1, 0))
    with pytest.raises(ValueError, match="contiguous"):
        pylin.QTensor(np.zeros((34, 2), dtype=np.uint8)[:, 0], "Q8_0", (1, 32))
