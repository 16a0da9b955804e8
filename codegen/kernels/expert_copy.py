"""The copy of offloaded experts from pinned host memory into a layer's device slot cache
(`runtime/offload.py`), run inside the captured decode step: the device decides what to copy
(`source`, written on the device from the router's picks) and reads the host store in place
through its device-mapped address, so no host sync and no host-side copy is needed.

Addresses are int64 values in `table`, one row per plane of an expert (w1's data, its scale,
w2's, ...): [host store base, slot 0 of the slot cache, bytes of one expert]. A pointer made
from an integer is how a kernel reaches memory that is not a device tensor: pinned host memory
under its device-mapped address on a GPU, any CPU tensor in the interpreter (the same kernel,
tested there bitwise). Every base and size is a multiple of 16 bytes (the caller checks), so
the copy moves 16 bytes a thread per load and store.

Legend: S slots of the cache, P planes, CHUNK bytes a program copies, BLOCK bytes a step.
"""

import triton
import triton.language as tl

ALIGN_BYTES = 16  # every base address and per-expert plane size is a multiple of this
ALIGN = tl.constexpr(ALIGN_BYTES)


@triton.jit
def fill_slots(source_ptr, table_ptr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """Program (s, p, c): bytes [c * CHUNK, (c + 1) * CHUNK) of plane p of host expert
    source[s] into cache slot s; nothing when source[s] < 0 (the slot keeps what it holds) or
    the chunk lies past the plane's end. Grid: (S, P, chunks of the largest plane)."""
    s = tl.program_id(0)
    p = tl.program_id(1)
    start = tl.program_id(2).to(tl.int64) * CHUNK
    e = tl.load(source_ptr + s).to(tl.int64)
    size = tl.multiple_of(tl.load(table_ptr + 3 * p + 2), ALIGN)
    if (e >= 0) & (start < size):
        host = tl.multiple_of(tl.load(table_ptr + 3 * p) + e * size + start, ALIGN)
        slot = tl.multiple_of(tl.load(table_ptr + 3 * p + 1) + s * size + start, ALIGN)
        # from the source pointer by a distance: an address made from an integer carries no
        # alignment the compiler can see; a 16-byte aligned argument plus a multiple of 16 does
        anchor = source_ptr.to(tl.pointer_type(tl.uint8))
        at = source_ptr.to(tl.int64)
        src = anchor + tl.multiple_of(host - at, ALIGN)
        dst = anchor + tl.multiple_of(slot - at, ALIGN)
        offs = tl.arange(0, BLOCK)
        for i in tl.range(0, CHUNK, BLOCK):
            on = start + i + offs < size
            tl.store(dst + i + offs, tl.load(src + i + offs, mask=on), mask=on)
