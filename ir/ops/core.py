"""Sources and sinks, the cache convention, and the ops with no family of their own:
embed (and its vocab-sharded piece), split_heads, take_last, add, quant_sim.

Shape legend: B batch rows, T tokens per row in the step, D hidden, H heads, d head dim,
V vocabulary (a rank's rows of it: V/P). Semantics modules are imported inside `run` so that
building and compiling a graph does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from v4c.ir.op import Op, register
from v4c.ir.types import TensorType


# -- sources and sinks --------------------------------------------------------------------


@dataclass(frozen=True)
class _Source(Op):
    shape: tuple = ()
    dtype: str = "fp32"

    def infer(self, ins: Sequence[TensorType]) -> tuple[TensorType, ...]:
        return (TensorType(tuple(self.shape), self.dtype),)


@register
@dataclass(frozen=True)
class Input(_Source):
    """A per-step input: token ids, positions."""

    kind = "input"
    source = "input"
    key: str = ""


@register
@dataclass(frozen=True)
class Param(_Source):
    """A checkpoint tensor (official name); `stack` > 0: one per expert, stacked on dim 0.
    `split`: the piece of it one rank holds, `(dim, parts, axis)` each (`v4c.spec.parallel`;
    `shape` is the piece's); empty: the whole tensor."""

    kind = "param"
    source = "param"
    tensor: str = ""
    stack: int = 0
    split: tuple = ()


@register
@dataclass(frozen=True)
class State(_Source):
    """A cache buffer that lives across steps; `fill` is its value before the first step."""

    kind = "state"
    source = "state"
    key: str = ""
    fill: str = "zeros"  # or "-inf"


@register
@dataclass(frozen=True)
class Output(Op):
    kind = "output"
    operands = ("value",)
    results = ()
    side_effects = True
    key: str = ""

    def infer(self, ins):
        return ()

    def run(self, ins):
        return ()


# -- caches ---------------------------------------------------------------------------------
# Caches are operands: a `state` node feeds the op that writes it, and an op that writes a
# cache others read (the compressor) returns it, so readers are ordered after the writer.
# Caches have a leading dim of N cache rows; every op that reads or writes one takes the
# step's `slots` [B] (i64: the cache row of each step row) and touches only those rows, in
# place. A cache is read only by its writer (the window) or through the writer's result (the
# compressed entries), so a writer whose result is unused is dead like any other op.


def _check_slots(op: Op, pos: TensorType, slots: TensorType, *caches: TensorType) -> None:
    """slots is one i64 cache row per step row; the caches share their number of rows."""
    op.expect(slots.shape == pos.shape[:1] and slots.dtype == "i64", f"slots {slots} for {pos}")
    rows = {c.shape[0] for c in caches}
    op.expect(len(rows) == 1, f"caches {', '.join(map(str, caches))} differ in their rows")


# -- dense ----------------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class Embed(Op):
    kind = "embed"
    operands = ("ids", "weight")

    def infer(self, ins):
        ids, w = ins
        self.expect(ids.dtype == "i64" and len(w.shape) == 2, f"bad operands {ids}, {w}")
        return (TensorType((*ids.shape, w.shape[1]), w.dtype),)

    def run(self, ins):
        ids, w = ins
        return (w[ids],)


@register
@dataclass(frozen=True)
class MaskedEmbed(Op):
    """Rows `first` .. `first` + V/P - 1 of the embedding (`weight` holds them): an id in
    them is looked up, any other id gives a row of zeros."""

    kind = "masked_embed"
    operands = ("ids", "weight", "first")

    def infer(self, ins):
        ids, w, first = ins
        self.expect(ids.dtype == "i64" and len(w.shape) == 2, f"bad operands {ids}, {w}")
        self.expect(first.shape == (1,) and first.dtype == "i64", f"first {first}")
        return (TensorType((*ids.shape, w.shape[1]), w.dtype),)

    def run(self, ins):
        ids, w, first = ins
        local = ids - first  # [B,T]
        mine = (local >= 0) & (local < w.shape[0])
        rows = w[local.clamp(0, w.shape[0] - 1)]  # [B,T,D]
        return (rows * mine.unsqueeze(-1).to(rows.dtype),)


@register
@dataclass(frozen=True)
class SplitHeads(Op):
    """[B,T,H*d] -> [B,T,H,d]."""

    kind = "split_heads"
    operands = ("x",)
    aliases = {0: 0}
    heads: int = 1

    def infer(self, ins):
        (x,) = ins
        self.expect(isinstance(x.shape[-1], int) and x.shape[-1] % self.heads == 0, f"{x}")
        return (x.with_shape(*x.shape[:-1], self.heads, x.shape[-1] // self.heads),)

    def run(self, ins):
        (x,) = ins
        return (x.unflatten(-1, (self.heads, -1)),)


@register
@dataclass(frozen=True)
class TakeLast(Op):
    """[B,T,...] -> [B,1,...]: the last token of each row (logits only where sampled)."""

    kind = "take_last"
    operands = ("x",)
    aliases = {0: 0}  # a strided view of x

    def infer(self, ins):
        (x,) = ins
        return (x.with_shape(x.shape[0], 1, *x.shape[2:]),)

    def run(self, ins):
        (x,) = ins
        return (x[:, -1:],)


@register
@dataclass(frozen=True)
class Add(Op):
    kind = "add"
    operands = ("a", "b")

    def infer(self, ins):
        a, b = ins
        self.expect(a.shape == b.shape, f"{a} + {b}")
        return (a,)

    def run(self, ins):
        a, b = ins
        return ((a.float() + b.float()).to(a.dtype),)


@register
@dataclass(frozen=True)
class QuantSim(Op):
    """The official code's rounding of an activation (numerics: official, §12): FP8 with
    power-of-two scales per `block` values of the last dim, on its first `dims` channels
    (0: all) — the input of an FP8 GEMM (block 128) or the non-RoPE KV dims (block 64)."""

    kind = "quant_sim"
    operands = ("x",)
    block: int = 128
    dims: int = 0

    def roundings(self):
        return frozenset({("quant_sim", (self.block, self.dims))})

    def infer(self, ins):
        return (ins[0],)

    def run(self, ins):
        import torch

        from v4c.ir.semantics.quant import act_quant_fp8

        (x,) = ins
        if not self.dims:
            return (act_quant_fp8(x.float(), self.block).to(x.dtype),)
        head = act_quant_fp8(x[..., : self.dims].float(), self.block).to(x.dtype)
        return (torch.cat((head, x[..., self.dims :]), dim=-1),)
