from __future__ import annotations

import pytest
import torch

from tools.batch import TaskBatch
from tools.errors import BatchError


def _batch(**kw):
    base = dict(clean_ids=torch.zeros(3, 5, dtype=torch.long), corrupt_ids=torch.ones(3, 5, dtype=torch.long),
                answer_ids=torch.tensor([1, 2, 3]), wrong_ids=torch.tensor([3, 2, 1]),
                positions={"END": torch.tensor([4, 4, 4])})
    base.update(kw)
    return TaskBatch(**base)


def test_mismatched_clean_corrupt_lengths() -> None:
    with pytest.raises(BatchError, match="differ in shape"):
        _batch(corrupt_ids=torch.ones(3, 6, dtype=torch.long))


def test_position_out_of_range_and_unknown_role() -> None:
    with pytest.raises(BatchError, match="outside the prompt"):
        _batch(positions={"IO": torch.tensor([0, 5, 1])})
    with pytest.raises(BatchError, match="no position named 'S2'"):
        _batch().position("S2")


def test_slicing_and_swap() -> None:
    b = _batch()
    assert b[1:].size == 2 and b[1:].answer_ids.tolist() == [2, 3]
    s = b.swapped()
    assert torch.equal(s.clean_ids, b.corrupt_ids) and s.answer_ids.tolist() == [3, 2, 1]
    assert b.position(-1).tolist() == [4, 4, 4] and b.end.tolist() == [4, 4, 4]
