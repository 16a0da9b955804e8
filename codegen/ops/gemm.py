"""Parameters of the dense GEMM family (`templates/gemm.py.j2`, `kernels/gemm.py`): every
dense projection of the plan — `linear` (wq_a, wq_b, wkv, wo_b, e_proj, h_proj, lm_head,
the compressors' and the MoE gate's projections), `grouped_linear` (wo_a) and
`merged_linear` (the linears of one input, `templates/merged_linear.py.j2`: each part tiled
and reduced by the rule below as its own launch would be, so each part's output is bitwise
its own launch's; the launch takes the most warps any part asks for: warps share out a
tile's rows and columns, never its K loop, so they do not change a part's sums).

The tile rule, fixed per launch from its shapes at the entry's limits (no autotuning):
- the reduction is fixed by the weight alone, never by the number of rows (batch
  invariance): BK is the weight's scale block along K for FP8 (128: one scale per K block),
  else 64; the K blocks are summed in SPLIT runs, SPLIT the least power of two that gives
  every SM a (group, 64-row weight tile, run) of its own — tiles x SPLIT >= SMS — capped at
  one K block a run;
- decode bucket (rows <= 16 at the limits): BM 16 tokens, BN 64 weight rows (one
  warpgroup MMA), the runs (if SPLIT > 1) on separate programs (SPLIT_CTAS) writing fp32
  partial sums to the plan's kernel scratch, the last run of an output tile to arrive (a
  counter in the plan's counter region) adding them in run order: one launch;
- prefill buckets: rows <= 128: BM 64, BN 128; more: BM 128, BN 128, 8 warps; a narrow
  weight whose tiles would leave SMs idle (tiles < SMS at the limits) takes BM 64 (4 warps),
  then BN 64, then BM 32 and 16, until they fill them (wkv, wq_a, the compressors, the
  indexer's weights and the MoE gate at 1k tokens); the runs one
  after another inside each program (the same sums, no workspace), GROUP_M 8 m tiles swept
  together so the weight tiles they share stay in L2.
"""

from __future__ import annotations

from math import prod
from typing import Any, Literal

from v4c.codegen.jit import CodegenError
from v4c.codegen.params import Dots, Operands, Precision, dot_precision, template, weight_format

Mode = Literal["dense", "w8a16", "w8a8"]
SMS = 132  # streaming multiprocessors of an H100 / H200 SXM: the decode grid's target
DECODE_ROWS = 16
SPLIT_TILE = 64  # the weight rows of the tile the split rule counts (the decode BN)


def split_runs(groups: int, n_g: int, k_blocks: int) -> int:
    """The number of runs the K blocks are summed in, from the weight's shape alone."""
    tiles, split = groups * -(-n_g // SPLIT_TILE), 1
    while tiles * split < SMS and split * 2 <= k_blocks:
        split *= 2
    return split


def prefill_tiles(rows: int, groups: int, n_g: int) -> tuple[int, int]:
    """(BM, BN) of a prefill bucket: 128 x 128 (64 rows at most: 64 x 128), smaller while
    the grid leaves SMs idle (see the module docstring)."""
    block_m, block_n = (64 if rows <= 128 else 128), 128
    while groups * -(-rows // block_m) * -(-n_g // block_n) < SMS and block_m > 16:
        if block_m > 64 or block_n == 64:
            block_m //= 2
        else:
            block_n //= 2
    return block_m, block_n


class Gemm(Dots):
    TEMPLATE = "gemm"
    groups: int  # G
    n_g: int  # outputs per group
    k_g: int  # inputs per group
    x_dims: int  # trailing dims of x holding the G * K_G inputs
    mode: Mode
    scale_block: tuple[int, int]  # FP8: [out, in] elements per E8M0 scale; else (1, 1)
    precision: Precision
    out_fp32: bool
    split: int
    split_ctas: bool
    block_m: int
    block_n: int
    block_k: int
    group_m: int
    num_warps: int
    num_stages: int

    @classmethod
    def build(cls, attrs: dict[str, Any], x: Any, w: Any, groups: int, x_dims: int) -> Gemm:
        fmt = weight_format(w)
        if fmt.kind == "fp4":
            raise CodegenError("dense GEMM: FP4 weights are the experts' (codegen/ops/moe.py)")
        act_quant = bool(attrs.get("act_quant"))
        if act_quant and fmt.kind != "fp8":
            raise CodegenError(f"dense GEMM: act_quant rounds the input of FP8 weights, not {fmt}")
        if fmt.kind == "fp8" and fmt.block[1] % 16:
            raise CodegenError(f"dense GEMM: an FP8 scale block of {fmt.block[1]} inputs")
        n_total, k_g = w.shape
        block_k = fmt.block[1] if fmt.kind == "fp8" else 64
        rows = prod(x.shape[: len(x.shape) - x_dims])
        decode = rows <= DECODE_ROWS
        mode = "dense" if fmt.kind == "dense" else "w8a8" if act_quant else "w8a16"
        split = split_runs(groups, n_total // groups, -(-k_g // block_k))
        dtypes = [x.dtype, "bf16" if fmt.quantised else fmt.dtype]
        block_m, block_n = prefill_tiles(rows, groups, n_total // groups)
        return cls(
            groups=groups, n_g=n_total // groups, k_g=k_g, x_dims=x_dims, mode=mode,
            scale_block=fmt.block, precision=dot_precision(dtypes),
            out_fp32=attrs.get("out_dtype") == "fp32",
            split=split,
            split_ctas=decode and split > 1, block_m=16 if decode else block_m,
            block_n=64 if decode else block_n, block_k=block_k, group_m=8,
            num_warps=8 if block_m == 128 else 4, num_stages=4 if decode else 3,
        )  # fmt: skip


@template("linear")
class Linear(Gemm):
    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> Gemm:
        return cls.build(attrs, ops["x"], ops["weight"], groups=1, x_dims=1)


@template("grouped_linear")
class GroupedLinear(Gemm):
    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> Gemm:
        return cls.build(attrs, ops["o"], ops["weight"], groups=attrs["groups"], x_dims=2)


@template("merged_linear")
class MergedLinear(Dots):
    """The parts (each a plain linear's parameters) of one launch over all their tiles."""

    parts: tuple[Gemm, ...]
    num_warps: int
    num_stages: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> MergedLinear:
        parts = tuple(
            Gemm.build({"out_dtype": d, "act_quant": q}, ops["x"], ops[f"weight{i}"], 1, 1)
            for i, (d, q) in enumerate(zip(attrs["out_dtypes"], attrs["act_quant"], strict=True))
        )
        return cls(
            parts=parts,
            num_warps=max(p.num_warps for p in parts),
            num_stages=max(p.num_stages for p in parts),
        )
