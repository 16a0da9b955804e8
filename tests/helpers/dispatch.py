"""Count, inside a block of torch code, the host-device syncs and the new storages.

Why a dispatch mode: a step that a CUDA graph can hold must neither wait for the device
nor allocate outside its buffers, and on a CPU-only machine neither shows up in timings.
Every aten op passes through a `TorchDispatchMode`, so the block is checked op by op:

- syncs: an op that hands a device value to the host (`_local_scalar_dense`, which
  `.item()`, `bool(t)` and `int(t)` reach; `equal`, `is_nonzero`), an op whose output
  shape depends on values (`nonzero`, `masked_select`, `unique`, boolean indexing), and
  any op with a tensor input off the CPU and a tensor output on it (a device-to-host
  copy). On CPU tensors `.tolist()`, `.numpy()` and `.cpu()` dispatch nothing, so a
  `TorchFunctionMode` records those calls too (on CUDA they would be a copy to the host).
- allocations: an op with an output whose storage no earlier op in the block has seen
  (as input or output), and `torch.tensor(data)` (its new tensor reaches dispatch as the
  input of `lift_fresh`). Views, in-place ops and `out=` write into seen storages.

    with DispatchCounter() as counter:
        step()
    assert counter.sync_count == 0 and counter.allocation_count == 0, counter.report()
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

aten = torch.ops.aten

# ops that give the host a value of the device, or an output shaped by values
_SYNC_OPS = frozenset(
    {
        aten._local_scalar_dense,
        aten.item,
        aten.is_nonzero,
        aten.equal,
        aten.nonzero,
        aten.masked_select,
        aten._unique,
        aten._unique2,
        aten.unique_dim,
        aten.unique_consecutive,
    }
)
# indexing ops that turn a boolean index into positions (a nonzero inside the kernel)
_INDEX_OPS = frozenset({aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_})
# ops that receive a tensor just made from Python data (`torch.tensor`, `as_tensor`)
_FRESH = frozenset({aten.lift_fresh, aten.lift_fresh_copy})
# Tensor methods that read a tensor on the host without an aten op on a CPU tensor
_HOST_READS = frozenset({"tolist", "numpy", "cpu"})


class DispatchCounter:
    """Records every aten op run inside `with DispatchCounter() as c:`; `c.syncs` and
    `c.allocations` name the ops that synced or made a new storage, in order; `c.new_tensors`
    has (op, shape, dtype) of each tensor on a new storage (to tell what was allocated)."""

    def __init__(self):
        self.ops: Counter[str] = Counter()
        self.syncs: list[str] = []
        self.allocations: list[str] = []
        self.new_tensors: list[tuple[str, tuple[int, ...], torch.dtype]] = []
        self._seen: set[StorageWeakRef] = set()  # a weak ref keeps a storage's id unique
        self._made: list[tuple[str, StorageWeakRef]] = []  # storages the block allocated
        self._host_read_depth = 0
        self._modes = (_HostReads(self), _Ops(self))

    @property
    def sync_count(self) -> int:
        return len(self.syncs)

    @property
    def allocation_count(self) -> int:
        return len(self.allocations)

    @property
    def retained(self) -> list[str]:
        """The ops whose new storages are still alive: memory the block kept beyond its
        own buffers (a step's temporaries die with it; a retained one is an allocation
        outside the arena)."""
        import gc

        gc.collect()
        return [name for name, ref in self._made if not ref.expired()]

    def report(self) -> str:
        return f"syncs: {self.syncs}; allocations: {self.allocations}"

    def __enter__(self) -> DispatchCounter:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    def _record(self, func, args, kwargs, result) -> None:
        name = str(func)
        self.ops[name] += 1
        inputs = _tensors((args, kwargs))
        outputs = _tensors(result)
        # `torch.tensor(data)` makes its tensor before dispatch and hands it to lift_fresh
        fresh = func.overloadpacket in _FRESH
        for tensor in inputs:
            fresh = self._is_new(tensor) and fresh
        if self._host_read_depth == 0 and _syncs(func, args, inputs, outputs):
            self.syncs.append(name)
        new = [tensor for tensor in outputs if self._is_new(tensor)]
        if new or fresh:
            self.allocations.append(name)
        self.new_tensors += [(name, tuple(t.shape), t.dtype) for t in new]
        self._made += [(name, StorageWeakRef(t.untyped_storage())) for t in new]

    def _is_new(self, tensor: torch.Tensor) -> bool:
        """Whether the tensor's storage is one not seen before (and remember it)."""
        try:
            ref = StorageWeakRef(tensor.untyped_storage())
        except (NotImplementedError, RuntimeError):  # a tensor without a storage
            return False
        if ref in self._seen:
            return False
        self._seen.add(ref)
        return True


class _Ops(TorchDispatchMode):
    def __init__(self, counter: DispatchCounter):
        super().__init__()
        self._counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        self._counter._record(func, args, kwargs, result)
        return result


class _HostReads(TorchFunctionMode):
    """Records `.tolist()` / `.numpy()` / `.cpu()` as syncs; the copy to the host that they
    dispatch on a device tensor is then not counted a second time."""

    def __init__(self, counter: DispatchCounter):
        super().__init__()
        self._counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name not in _HOST_READS:
            return func(*args, **(kwargs or {}))
        self._counter.syncs.append(f"Tensor.{name}")
        self._counter._host_read_depth += 1
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self._counter._host_read_depth -= 1


def _tensors(tree) -> list[torch.Tensor]:
    return [leaf for leaf in tree_leaves(tree) if isinstance(leaf, torch.Tensor)]


def _syncs(func, args, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> bool:
    packet = func.overloadpacket
    if packet in _SYNC_OPS:
        return True
    if packet in _INDEX_OPS and len(args) > 1:
        indices = [i for i in args[1] if isinstance(i, torch.Tensor)]
        if any(i.dtype in (torch.bool, torch.uint8) for i in indices):
            return True
    off_cpu = any(t.device.type != "cpu" for t in inputs)
    return off_cpu and any(t.device.type == "cpu" for t in outputs)
