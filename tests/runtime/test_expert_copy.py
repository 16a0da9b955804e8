"""The slot cache's device-side mechanism: the copy kernel (codegen/kernels/expert_copy.py,
in the Triton interpreter on CPU tensors: addresses made from integers, as on a GPU) against
the gather it replaces, bit for bit; the slot assignment (runtime/slot_cache.py) by hand:
hits keep their slots, misses fill empty slots before evicting, nothing needed is evicted;
the store's slot table and counters over steps; on a GPU, the copy from pinned host memory
inside a captured CUDA graph."""

from __future__ import annotations

import pytest
import torch

from v4c.ir.semantics.quant import QuantWeight
from v4c.ir.weights import WeightFormat
from v4c.runtime.offload import ExpertStore
from v4c.runtime.slot_cache import assign

E, D, I = 8, 64, 32  # experts, model dim, expert inner dim (FP4 planes: 1 KiB data, 64 B scales)


def _weights(seed: int = 0) -> dict[str, QuantWeight]:
    gen = torch.Generator().manual_seed(seed)
    shapes = {"w1": (I, D), "w2": (D, I), "w3": (I, D)}
    return {w: QuantWeight.quantize(torch.randn(E, *s, generator=gen), WeightFormat.fp4(32))
            for w, s in shapes.items()}  # fmt: skip


def _need(*experts: int) -> torch.Tensor:
    need = torch.zeros(E, dtype=torch.bool)
    need[list(experts)] = True
    return need


def test_assign_hits_keep_their_slots_and_misses_fill_empty_slots_first():
    cached = torch.tensor([5, -1, 2, -1, -1])  # 4 slots and the spare entry
    got = assign(cached, _need(2, 4, 7))  # 2 is cached in slot 2; 4 and 7 are not
    assert got.slot.tolist() == [-1, -1, 2, -1, 1, -1, -1, 3]
    assert got.source.tolist() == [-1, 4, -1, 7] and got.copied.tolist() == _need(4, 7).tolist()
    assert cached[:4].tolist() == [5, 4, 2, 7]
    got = assign(cached, _need(1, 2, 4, 6))  # no slot is empty: 5 and 7 are evicted, in order
    assert got.slot[[1, 2, 4, 6]].tolist() == [0, 2, 1, 3]
    assert got.source.tolist() == [1, -1, -1, 6] and cached[:4].tolist() == [1, 4, 2, 6]


def _gather(store: ExpertStore, source: list[int]) -> dict[str, list[torch.Tensor]]:
    """What the slot cache holds after copying host experts `source` (-1: slot unchanged),
    by the torch gather, on a copy of the bank."""
    out = {}
    for name, host in store.host.items():
        planes = [store.bank[name].data, store.bank[name].scale]
        out[name] = [p[store.held :].clone() for p in planes]
        for s, h in enumerate(source):
            if h >= 0:
                for slots, plane in zip(out[name], host):
                    slots[s] = plane[h]
    return out


@pytest.mark.parametrize("chunk, block", [(1 << 16, 1 << 12), (256, 64)])
def test_copy_kernel_equals_the_gather(chunk, block, monkeypatch):
    """FP4 planes (1 KiB data, 64 B scales an expert): one chunk a plane, or several."""
    import v4c.runtime.offload as offload

    monkeypatch.setattr(offload, "CHUNK", chunk)
    monkeypatch.setattr(offload, "BLOCK", block)
    store = ExpertStore(_weights(), [0, 3], cache=4, device=torch.device("cpu"), kernel=True)
    for name in store.bank:  # slots filled before: the ones not copied keep their bits
        store.bank[name].data[store.held :].fill_(0x5A)
    source = [4, -1, 0, 5]  # host experts (the offloaded 1, 2, 4, 5, 6, 7 numbered 0..5)
    want = _gather(store, source)
    store._copy(torch.tensor(source))
    for name, planes in want.items():
        got = [store.bank[name].data[store.held :], store.bank[name].scale[store.held :]]
        assert all(torch.equal(g, w) for g, w in zip(got, planes))


@pytest.mark.parametrize("kernel", [True, False])
def test_store_fetch_over_steps(kernel):
    """Three decode-like steps: the slot table points every needed expert at its own bits,
    an expert cached in an earlier step is not copied again, and the counters add up."""
    weights = _weights(1)
    store = ExpertStore(weights, [0, 3], cache=4, device=torch.device("cpu"), kernel=kernel)
    copied = 0
    for step, picks in enumerate(([1, 3, 3], [1, 6], [3, 5, 6, 7])):
        counts = torch.bincount(torch.tensor(picks), minlength=E)
        offsets = torch.cat((torch.zeros(1, dtype=torch.long), counts.cumsum(0)))
        slots = store.fetch(offsets, 0)
        for e in set(picks):
            for name, w in weights.items():
                bank = store.bank[name]
                assert torch.equal(bank.data[slots[e]], w.data[e])
                assert torch.equal(bank.scale[slots[e]], w.scale[e])
        copied += [1, 1, 2][step]  # 1; 6 (1 cached); 5 and 7 (6 cached, 3 resident)
        assert store.counts[2] == copied
    hits, misses, fetched = store.counts.tolist()
    assert (hits, misses, fetched) == (9 - 4, 4, 4)


def test_prefetched_experts_are_found_by_the_fetch():
    """A prefetch of experts 1, 3 (resident), 5 and 6 with 2 slots copies the first two
    offloaded ones (1, 5); the fetch of 1, 5 and 7 then copies only 7."""
    weights = _weights(3)
    store = ExpertStore(weights, [0, 3], cache=2, device=torch.device("cpu"))
    store.ahead[[1, 3, 5, 6]] = 1
    store.prefetch()
    assert sorted(store.cached[:2].tolist()) == [1, 5] and store.counts.tolist() == [0, 0, 2]
    offsets = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 2])  # picks 1, 5 (7 in a second step)
    slots = store.fetch(offsets, 0)
    assert store.counts.tolist() == [2, 0, 2]  # both served from the slot cache
    for e in (1, 5):
        assert torch.equal(store.bank["w2"].data[slots[e]], weights["w2"].data[e])
    offsets = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 2])  # picks 1 and 7
    slots = store.fetch(offsets, 0)
    assert store.counts.tolist() == [3, 1, 3]  # 1 still cached, 7 copied over 5
    assert torch.equal(store.bank["w1"].data[slots[7]], weights["w1"].data[7])


@pytest.mark.gpu
def test_copy_from_pinned_host_memory_in_a_cuda_graph():
    """On a GPU: the host store is pinned, the kernel reads it in place inside a captured
    graph, and a replay with other picks copies those (no host sync in between)."""
    weights = _weights(2)
    store = ExpertStore(weights, [0], cache=4, device=torch.device("cuda"))
    assert store.kernel and all(p.is_pinned() for ps in store.host.values() for p in ps)
    offsets = torch.zeros(E + 1, dtype=torch.long, device="cuda")
    counts = torch.bincount(torch.tensor([2, 5]), minlength=E).cuda()
    offsets[1:] = counts.cumsum(0)
    store.fetch(offsets, 0)  # warm up (Triton compiles outside the capture)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        slots = store.fetch(offsets, 0)
    for picks in ([1, 7], [4, 4, 6]):
        offsets[1:] = torch.bincount(torch.tensor(picks), minlength=E).cuda().cumsum(0)
        graph.replay()
        for e in set(picks):
            for name, w in weights.items():
                assert torch.equal(store.bank[name].data[slots[e]].cpu(), w.data[e])
                assert torch.equal(store.bank[name].scale[slots[e]].cpu(), w.scale[e])
