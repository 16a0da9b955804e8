"""The dispatch counter sees each kind of sync and allocation it claims to, and nothing in
code that only writes into tensors made before the block."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.dispatch import DispatchCounter


def _count(fn, *tensors):
    with DispatchCounter() as counter:
        fn(*tensors)
    return counter


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.sum().item(),
        lambda x: bool(x[0] > 0),
        lambda x: int(x.argmax()),
        lambda x: x.tolist(),
        lambda x: x.numpy(),
        lambda x: x.cpu(),
        lambda x: torch.nonzero(x > 0),
        lambda x: x.masked_select(x > 0),
        lambda x: x[x > 0],
        lambda x: x.index_put_((x > 0,), torch.tensor(0.0)),
        lambda x: torch.unique(x),
        lambda x: torch.equal(x, x),
    ],
)
def test_each_kind_of_sync_is_counted(fn):
    counter = _count(fn, torch.randn(16))
    assert counter.sync_count >= 1, counter.report()


def test_in_place_and_out_work_on_seen_storages_is_neither():
    x, y, ids = torch.randn(4, 8), torch.empty(4, 8), torch.empty(4, dtype=torch.int64)

    def step(x, y, ids):
        torch.mul(x, 2.0, out=y)
        y.add_(x).exp_()
        y[:, 3:].fill_(0.0)  # a view, then in place
        torch.argmax(y, dim=-1, out=ids)

    counter = _count(step, x, y, ids)
    assert (counter.sync_count, counter.allocation_count) == (0, 0), counter.report()
    assert counter.ops["aten.argmax.out"] == 1


def test_new_storages_are_counted_once_each():
    def step(x):
        y = x * 2  # new
        z = y.view(-1)  # a view of y: not new
        z.add_(1.0)
        return torch.empty(3), x + z.view(4, 8), torch.tensor([1.0, 2.0])  # three new

    counter = _count(step, torch.randn(4, 8))
    assert counter.allocation_count == 4, counter.report()
    assert counter.sync_count == 0


@pytest.mark.gpu
def test_a_copy_to_the_host_is_one_sync():
    x = torch.randn(16, device="cuda")
    for read in (lambda x: x.cpu(), lambda x: x.to("cpu"), lambda x: x.tolist()):
        assert _count(read, x).sync_count == 1
    assert _count(lambda x: x.mul_(2.0), x).sync_count == 0
